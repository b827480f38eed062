//! Storage: every SQL statement of the server, on SQLite (WAL, full sync)
//! or PostgreSQL, through sqlx's `Any` driver: one set of queries.
//!
//! Queries use `$n` placeholders and SQL both dialects read the same way
//! (`RETURNING`, `ON CONFLICT`, `CASE` rather than scalar `MAX`, bound
//! values rather than literals such as `x''`). Each dialect has its own
//! migrations (`migrations/sqlite`, `migrations/postgres`) creating the same
//! tables; integers are 64-bit on both, booleans are 0/1 integers.

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, ConnectOptions as _, Executor as _, FromRow};

use crate::crypto::Sealed;
use crate::error::Error;

mod attempts;
mod keys;
mod outbox;
mod redact;
mod sessions;
mod status;
mod usage;
mod users;
pub use attempts::CountedAttempt;
pub use keys::NewKeyRow;
pub use outbox::{OutboxRow, SealColumns};
pub use sessions::SessionRow;
pub use status::{KeyStatus, Role, UnknownStatus, UserStatus};
pub use usage::UsageRow;
pub use users::{AuditFilter, LockoutRow, SecurityInfoRow, SecurityRow, CODE_MAX_ATTEMPTS};

/// The database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite upgraded past migration 0005 by this open: pages freed by it
    /// may still hold text it wiped, until a VACUUM.
    vacuum_due: bool,
}

/// Which database a [`Store`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, FromRow)]
pub struct UserRow {
    pub id: i64,
    pub account_id: i64,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub password_hash: Option<String>,
    #[sqlx(try_from = "String")]
    pub status: UserStatus,
    pub created_at: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct AccountRow {
    pub id: i64,
    pub name: String,
    pub status: String,
    pub parent_id: Option<i64>,
}

#[derive(Debug, Clone, FromRow)]
pub struct KeyRow {
    pub id: String,
    pub user_id: i64,
    pub account_id: i64,
    pub name: String,
    pub created_at: i64,
    pub last_used: Option<i64>,
    #[sqlx(try_from = "String")]
    pub status: KeyStatus,
    #[sqlx(flatten)]
    pub rules: KeyRules,
}

/// A key's restrictions as stored (migration 0006): `None` for each one
/// the key does not have. Lists are JSON arrays of strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, FromRow)]
pub struct KeyRules {
    pub expires_at: Option<i64>,
    pub permissions: Option<String>,
    pub allowed_routes: Option<String>,
    pub allowed_ips: Option<String>,
    pub rate_limit: Option<i64>,
    pub rate_window: Option<i64>,
    pub rolled_from: Option<String>,
    pub rolled_until: Option<i64>,
}

/// The columns of [`KeyRules`], for `SELECT` lists.
pub const KEY_RULE_COLUMNS: &str =
    "expires_at, permissions, allowed_routes, allowed_ips, rate_limit, rate_window, rolled_from, rolled_until";

#[derive(Debug, Clone, FromRow)]
pub struct SealedKeyRow {
    pub id: String,
    pub user_id: i64,
    pub account_id: i64,
    pub mk_version: i64,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    #[sqlx(flatten)]
    pub rules: KeyRules,
}

impl SealedKeyRow {
    pub fn sealed(&self) -> Sealed {
        Sealed {
            version: u32::try_from(self.mk_version).unwrap_or(u32::MAX),
            nonce: self.nonce.clone(),
            ciphertext: self.ciphertext.clone(),
        }
    }
}

#[derive(Debug, Clone, FromRow)]
pub struct TokenRow {
    pub user_id: i64,
    pub last_seen: i64,
    pub expires_at: i64,
    pub revoked: i64,
}

/// A user to create.
#[derive(Debug, Clone, Copy)]
pub struct NewUser<'a> {
    pub account_id: i64,
    pub email: &'a str,
    pub first: &'a str,
    pub last: &'a str,
    pub password_hash: Option<&'a str>,
    /// Active or invited.
    pub status: UserStatus,
    pub role: &'a Role,
}

/// One row for the audit log.
#[derive(Debug, Clone, Default)]
pub struct AuditEvent {
    pub account_id: Option<i64>,
    pub actor_id: Option<i64>,
    /// `password`, `key:<id>` or `none`.
    pub credential: String,
    pub event: &'static str,
    pub target: Option<String>,
    pub address: Option<String>,
    pub detail: Option<String>,
}

/// Longest a request waits for a PostgreSQL connection: a busy pool of 8
/// hands one over in milliseconds, so this is in effect how long a request
/// waits before its 503 while the database is down.
const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// Keys per last-used statement: two parameters each.
const LAST_USED_CHUNK: usize = 500;

impl Store {
    /// `rows` groups of `width` placeholders, `(…),(…)`, for a multi-row
    /// statement: numbered (`$1`) on PostgreSQL, anonymous (`?`) on
    /// SQLite. SQLite finds a numbered parameter's name by a linear scan of
    /// the statement's names, so binding N of them costs N²: at 2,500 it
    /// was most of the server's CPU while 100,000 fresh keys were used.
    /// Anonymous ones have no name to look for.
    fn value_rows(&self, rows: usize, width: usize) -> String {
        use std::fmt::Write as _;
        let mut sql = String::with_capacity(rows * width * 6);
        for r in 0..rows {
            sql.push_str(if r == 0 { "(" } else { ",(" });
            for c in 0..width {
                if c > 0 {
                    sql.push_str(", ");
                }
                match self.backend {
                    Backend::Sqlite => sql.push('?'),
                    Backend::Postgres => {
                        let _ = write!(sql, "${}", r * width + c + 1);
                    }
                }
            }
            sql.push(')');
        }
        sql
    }
}

fn secs(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `url`:
    /// `postgres://…` (or `postgresql://…`), else SQLite (`sqlite://path`
    /// or a plain file path).
    pub async fn open(url: &str) -> Result<Self, Error> {
        sqlx::any::install_default_drivers();
        let bad = |e: sqlx::Error| Error::Config(format!("bad database url: {e}"));
        let cannot = |e: sqlx::Error| {
            let url = redact::redacted(url);
            Error::Config(format!("cannot open database {url}: {e}"))
        };
        let migrated = |e: sqlx::migrate::MigrateError| {
            Error::Config(format!("database migration failed: {e}"))
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            if redact::has_ssl_password(url) {
                return Err(Error::Config(
                    "the database URL's sslpassword is not supported: give an unencrypted \
                     sslkey file, readable by armor's user alone"
                        .into(),
                ));
            }
            let opts = AnyConnectOptions::from_str(url).map_err(bad)?;
            // While PostgreSQL is unreachable a request waits this long for
            // a connection, then answers 503 `store_unavailable`.
            let pool = AnyPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(PG_ACQUIRE_TIMEOUT)
                .connect_with(opts)
                .await
                .map_err(cannot)?;
            sqlx::migrate!("./migrations/postgres")
                .run(&pool)
                .await
                .map_err(migrated)?;
            return Ok(Store {
                pool,
                backend: Backend::Postgres,
                vacuum_due: false,
            });
        }
        let sqlite = if url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url).map_err(bad)?
        } else {
            let path = std::path::absolute(url)
                .map_err(|e| Error::Config(format!("bad database path {url}: {e}")))?;
            SqliteConnectOptions::new().filename(path)
        }
        .create_if_missing(true);
        let opts = AnyConnectOptions::from_url(&sqlite.to_url_lossy()).map_err(bad)?;
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // Foreign keys and a 5 s busy timeout are sqlx's defaults.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    // Deleted and overwritten rows (a clear outbox body
                    // sealed, a used code's hash) are zeroed in their page.
                    conn.execute("PRAGMA secure_delete = FAST").await?;
                    Ok(())
                })
            })
            .connect_with(opts)
            .await
            .map_err(cannot)?;
        // An existing database without 0005 is being upgraded (a new one
        // has no migrations table yet).
        let vacuum_due =
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM _sqlx_migrations WHERE version = 5")
                .fetch_one(&pool)
                .await
                .is_ok_and(|n| n == 0);
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(migrated)?;
        Ok(Store {
            pool,
            backend: Backend::Sqlite,
            vacuum_due,
        })
    }

    /// On SQLite, copies the WAL into the database and empties it (so
    /// overwritten pages no longer linger in the WAL file); nothing on
    /// PostgreSQL.
    pub async fn checkpoint(&self) -> Result<(), Error> {
        if self.backend == Backend::Sqlite {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// At start-up on SQLite: once after the upgrade to migration 0005, a
    /// VACUUM (freed pages may keep text the migration wiped); every time,
    /// a checkpoint that empties the WAL (old frames may keep it too).
    pub async fn scrub_at_start(&self) -> Result<(), Error> {
        if self.backend == Backend::Sqlite && self.vacuum_due {
            sqlx::query("VACUUM").execute(&self.pool).await?;
        }
        self.checkpoint().await
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// On an empty store, creates account 1 and its owner (user 1). Returns
    /// whether it did.
    pub async fn bootstrap(
        &self,
        email: &str,
        password_hash: &str,
        now: u64,
    ) -> Result<bool, Error> {
        let mut tx = self.pool.begin().await?;
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM accounts")
            .fetch_one(&mut *tx)
            .await?;
        if n > 0 {
            return Ok(false);
        }
        sqlx::query("INSERT INTO accounts (id, name, status, created_at) VALUES (1, 'Default account', 'Active', $1)")
            .bind(secs(now))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO users (id, account_id, email, first_name, last_name, password_hash, status, created_at)
             VALUES (1, 1, $1, 'Account', 'Owner', $2, 'active', $3)",
        )
        .bind(email)
        .bind(password_hash)
        .bind(secs(now))
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO memberships (user_id, account_id, role_id) VALUES (1, 1, 1)")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>, Error> {
        Ok(sqlx::query_as("SELECT * FROM users WHERE email = $1")
            .bind(email)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn user_by_id(&self, id: i64) -> Result<Option<UserRow>, Error> {
        Ok(sqlx::query_as("SELECT * FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Users who are members of `account_id`, with their role name there.
    pub async fn users_in_account(&self, account_id: i64) -> Result<Vec<(UserRow, Role)>, Error> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT m.user_id, r.name FROM memberships m JOIN roles r ON r.id = m.role_id
             WHERE m.account_id = $1 ORDER BY m.user_id",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (uid, role) in rows {
            if let Some(u) = self.user_by_id(uid).await? {
                out.push((u, Role::from(role)));
            }
        }
        Ok(out)
    }

    /// The role name of `user_id` in `account_id`, if a member.
    pub async fn role_in(&self, user_id: i64, account_id: i64) -> Result<Option<Role>, Error> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT r.name FROM memberships m JOIN roles r ON r.id = m.role_id
             WHERE m.user_id = $1 AND m.account_id = $2",
        )
        .bind(user_id)
        .bind(account_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| Role::from(r.0)))
    }

    /// The permissions of `user_id` in `account_id`; `None` if not a member.
    pub async fn permissions(
        &self,
        user_id: i64,
        account_id: i64,
    ) -> Result<Option<Vec<String>>, Error> {
        let rows: Vec<(Option<String>,)> = sqlx::query_as(
            "SELECT rp.permission FROM memberships m
             LEFT JOIN role_permissions rp ON rp.role_id = m.role_id
             WHERE m.user_id = $1 AND m.account_id = $2 ORDER BY rp.permission",
        )
        .bind(user_id)
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(rows.into_iter().filter_map(|r| r.0).collect()))
    }

    /// Accounts `user_id` belongs to, with the permissions in each.
    pub async fn accounts_of(&self, user_id: i64) -> Result<Vec<AccountRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT a.id, a.name, a.status, a.parent_id FROM accounts a
             JOIN memberships m ON m.account_id = a.id WHERE m.user_id = $1 ORDER BY a.id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn set_role(
        &self,
        user_id: i64,
        account_id: i64,
        role: &Role,
    ) -> Result<bool, Error> {
        let r = sqlx::query(
            "INSERT INTO memberships (user_id, account_id, role_id)
             SELECT $1, $2, id FROM roles WHERE name = $3
             ON CONFLICT (user_id, account_id) DO UPDATE SET role_id = excluded.role_id",
        )
        .bind(user_id)
        .bind(account_id)
        .bind(role.as_str())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Creates a user who is a member of their account with their role.
    pub async fn create_user(&self, u: &NewUser<'_>, now: u64) -> Result<i64, Error> {
        let NewUser {
            account_id,
            email,
            first,
            last,
            password_hash,
            status,
            role,
        } = *u;
        let mut tx = self.pool.begin().await?;
        let res: Result<(i64,), _> = sqlx::query_as(
            "INSERT INTO users (account_id, email, first_name, last_name, password_hash, status, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(account_id)
        .bind(email)
        .bind(first)
        .bind(last)
        .bind(password_hash)
        .bind(status.as_str())
        .bind(secs(now))
        .fetch_one(&mut *tx)
        .await;
        let id = match res {
            Ok((id,)) => id,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(Error::Conflict(format!(
                    "a user with the email {email} exists"
                )))
            }
            Err(e) => return Err(e.into()),
        };
        let r = sqlx::query(
            "INSERT INTO memberships (user_id, account_id, role_id) SELECT $1, $2, id FROM roles WHERE name = $3",
        )
        .bind(id)
        .bind(account_id)
        .bind(role.as_str())
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Err(Error::BadRequest(format!("unknown role {role}")));
        }
        tx.commit().await?;
        Ok(id)
    }

    /// Moves a user from status `from` to `to`; false if the user's status
    /// was no longer `from` (changed meanwhile), and nothing was written.
    pub async fn set_user_status(
        &self,
        user_id: i64,
        from: UserStatus,
        to: UserStatus,
    ) -> Result<bool, Error> {
        let done = sqlx::query("UPDATE users SET status = $1 WHERE id = $2 AND status = $3")
            .bind(to.as_str())
            .bind(user_id)
            .bind(from.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- password login ----

    pub async fn insert_code(
        &self,
        hash: &[u8],
        user_id: i64,
        expires_at: u64,
    ) -> Result<(), Error> {
        sqlx::query("INSERT INTO auth_codes (code_hash, user_id, expires_at) VALUES ($1, $2, $3)")
            .bind(hash)
            .bind(user_id)
            .bind(secs(expires_at))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Consumes a code: it works once, and only before it expires.
    pub async fn take_code(&self, hash: &[u8], now: u64) -> Result<Option<i64>, Error> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "DELETE FROM auth_codes WHERE code_hash = $1 RETURNING user_id, expires_at",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        sqlx::query("DELETE FROM auth_codes WHERE expires_at < $1")
            .bind(secs(now))
            .execute(&self.pool)
            .await?;
        Ok(row.and_then(|(uid, exp)| (exp >= secs(now)).then_some(uid)))
    }

    pub async fn insert_token(
        &self,
        hash: &[u8],
        user_id: i64,
        now: u64,
        expires_at: u64,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO tokens (token_hash, user_id, created_at, last_seen, expires_at) VALUES ($1, $2, $3, $3, $4)",
        )
        .bind(hash)
        .bind(user_id)
        .bind(secs(now))
        .bind(secs(expires_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn token(&self, hash: &[u8]) -> Result<Option<TokenRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT user_id, last_seen, expires_at, revoked FROM tokens WHERE token_hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn touch_token(&self, hash: &[u8], now: u64) -> Result<(), Error> {
        sqlx::query("UPDATE tokens SET last_seen = $1 WHERE token_hash = $2")
            .bind(secs(now))
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn revoke_token(&self, hash: &[u8]) -> Result<bool, Error> {
        let r = sqlx::query("UPDATE tokens SET revoked = 1 WHERE token_hash = $1 AND revoked = 0")
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Revokes every FH-AUTH token of a user and ends their portal
    /// sessions.
    pub async fn revoke_user_tokens(&self, user_id: i64) -> Result<(), Error> {
        sqlx::query("UPDATE tokens SET revoked = 1 WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        self.end_user_sessions(user_id).await
    }

    // ---- accounts ----

    pub async fn create_account(
        &self,
        name: &str,
        parent: Option<i64>,
        now: u64,
    ) -> Result<i64, Error> {
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO accounts (name, status, parent_id, created_at) VALUES ($1, 'Active', $2, $3)
             RETURNING id",
        )
        .bind(name)
        .bind(parent)
        .bind(secs(now))
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    pub async fn account(&self, id: i64) -> Result<Option<AccountRow>, Error> {
        Ok(
            sqlx::query_as("SELECT id, name, status, parent_id FROM accounts WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    // ---- audit ----

    pub async fn audit(&self, now: u64, e: &AuditEvent) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO audit_log (at, account_id, actor_id, credential, event, target, address, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(secs(now))
        .bind(e.account_id)
        .bind(e.actor_id)
        .bind(&e.credential)
        .bind(e.event)
        .bind(&e.target)
        .bind(&e.address)
        .bind(&e.detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[derive(Debug, Clone, FromRow, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub account_id: Option<i64>,
    pub actor_id: Option<i64>,
    pub credential: String,
    pub event: String,
    pub target: Option<String>,
    pub address: Option<String>,
    pub detail: Option<String>,
}
