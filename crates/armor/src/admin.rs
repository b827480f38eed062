//! `armor admin`: operator commands on a data directory.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use armor_server::clock::{Clock as _, SystemClock};
use armor_server::core::usage::Retention;
use armor_server::core::{outbox, Core, CoreConfig};
use armor_server::crypto;
use armor_server::crypto::MasterKeys;
use armor_server::store::{AuditFilter, NewUser, Role, Store};

use crate::progress::Progress;

#[derive(clap::Args, Debug)]
pub struct AdminArgs {
    #[command(subcommand)]
    command: AdminCommand,
    /// The server's data directory.
    #[arg(
        long,
        global = true,
        env = "ARMOR_DATA_DIR",
        default_value = "./armor-data"
    )]
    data_dir: PathBuf,
    /// Database URL (default: armor.db in the data dir).
    #[arg(long, global = true, env = "ARMOR_DATABASE_URL")]
    database_url: Option<String>,
    /// Master key file (default: master.key in the data dir).
    #[arg(long, global = true, env = "ARMOR_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
enum AdminCommand {
    /// Add a master-key version and re-seal every API-key and TOTP secret
    /// with it.
    /// Safe to interrupt: every row stays readable, run it again to finish.
    RotateMasterKey,
    /// Create an account (printed: its id).
    AddAccount {
        #[arg(long)]
        name: String,
        #[arg(long)]
        parent: Option<i64>,
    },
    /// Create an active user with a role in an account. The password comes
    /// from ARMOR_NEW_USER_PASSWORD, or is generated and printed once.
    AddUser {
        #[arg(long, default_value_t = 1)]
        account: i64,
        #[arg(long)]
        email: String,
        /// Account Owner, User or Read Only.
        #[arg(long, default_value = "User")]
        role: String,
        #[arg(long, default_value = "")]
        first_name: String,
        #[arg(long, default_value = "")]
        last_name: String,
    },
    /// Give a user a role in an account (adds the membership if needed).
    SetRole {
        #[arg(long)]
        user: i64,
        #[arg(long)]
        account: i64,
        #[arg(long)]
        role: String,
    },
    /// Create COUNT API keys for a user (benchmarks: a large key store).
    /// Writes "key-id secret" lines to OUT (mode 0600); the server loads
    /// them on its next start.
    SeedKeys {
        #[arg(long)]
        user: i64,
        #[arg(long, default_value_t = 1)]
        account: i64,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// Delete per-key usage counts older than kept (the server also does
    /// this hourly). Prints the rows deleted.
    CleanUpUsage {
        /// Minute buckets kept, in hours (0: every minute bucket already
        /// started).
        #[arg(long, env = "ARMOR_USAGE_MINUTE_RETENTION_HOURS", value_name = "HOURS",
            default_value_t = Retention::default().minutes / 3600,
            value_parser = clap::value_parser!(u64).range(0..=24 * 3660))]
        usage_minute_retention_hours: u64,
        /// Hour buckets kept, in days (0: every hour bucket already
        /// started).
        #[arg(long, env = "ARMOR_USAGE_HOUR_RETENTION_DAYS", value_name = "DAYS",
            default_value_t = Retention::default().hours / 86_400,
            value_parser = clap::value_parser!(u64).range(0..=36_600))]
        usage_hour_retention_days: u64,
    },
    /// Print the newest audit-log rows of an account (JSON lines).
    Audit {
        #[arg(long, default_value_t = 1)]
        account: i64,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Rows this user acted in or was the target of.
        #[arg(long)]
        user: Option<i64>,
        /// One event name (login, login_failed, lockout, key_created, ...).
        #[arg(long)]
        event: Option<String>,
        /// Unix seconds, inclusive.
        #[arg(long)]
        since: Option<i64>,
        #[arg(long)]
        until: Option<i64>,
    },
    /// Print messages waiting in the outbox (invitations, reset and phone
    /// codes) as JSON lines, for an operator without mail.
    Outbox {
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Mark the printed messages as delivered (not those whose body
        /// could not be opened: they stay pending).
        #[arg(long)]
        mark_sent: bool,
    },
}

/// A new file only the owner can read, behind a buffer.
fn private_file(path: &std::path::Path) -> anyhow::Result<std::io::BufWriter<std::fs::File>> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(0o600);
    }
    Ok(std::io::BufWriter::new(o.open(path)?))
}

pub fn run(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let db = args.database_url.clone().unwrap_or_else(|| {
        args.data_dir
            .join("armor.db")
            .to_string_lossy()
            .into_owned()
    });
    let master = args
        .master_key_file
        .clone()
        .unwrap_or_else(|| args.data_dir.join("master.key"));
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let store = Store::open(&db).await?;
        match args.command {
            AdminCommand::RotateMasterKey => {
                let keys = MasterKeys::add_version(&master)?;
                let core = Core::new(
                    store,
                    &master,
                    Arc::new(SystemClock),
                    Arc::new(armor_psk::MemoryReplayGuard::new(2)),
                    CoreConfig {
                        max_body: 0,
                        require_signed_query: false,
                    },
                )
                .await?;
                let mut progress = Progress::new("re-sealed", None);
                let n = core
                    .rotation
                    .reseal_all_with(|d| progress.set((d.keys + d.totp + d.outbox) as u64))
                    .await?;
                progress.finish((n.keys + n.totp + n.outbox) as u64);
                println!(
                    "master key version {} added; {} API-key secrets re-sealed, {} TOTP secrets re-sealed, {} outbox messages re-sealed",
                    keys.current_version(),
                    n.keys,
                    n.totp,
                    n.outbox
                );
            }
            AdminCommand::AddAccount { name, parent } => {
                let id = store
                    .create_account(&name, parent, SystemClock.now())
                    .await?;
                println!("{id}");
            }
            AdminCommand::AddUser {
                account,
                email,
                role,
                first_name,
                last_name,
            } => {
                let given = std::env::var("ARMOR_NEW_USER_PASSWORD")
                    .ok()
                    .filter(|p| !p.is_empty());
                let password = match &given {
                    Some(p) => zeroize::Zeroizing::new(p.clone()),
                    None => crypto::new_password(),
                };
                let hash = crypto::hash_password(&password)?;
                let user = NewUser {
                    account_id: account,
                    email: &email,
                    first: &first_name,
                    last: &last_name,
                    password_hash: Some(&hash),
                    status: armor_server::store::UserStatus::Active,
                    role: &Role::from(role.as_str()),
                };
                let id = store.create_user(&user, SystemClock.now()).await?;
                match given {
                    Some(_) => println!("{id}"),
                    None => println!("{id} {}", password.as_str()),
                }
            }
            AdminCommand::SetRole {
                user,
                account,
                role,
            } => {
                if !store.set_role(user, account, &Role::from(role.as_str())).await? {
                    anyhow::bail!("unknown role {role}");
                }
                println!("ok");
            }
            AdminCommand::SeedKeys {
                user,
                account,
                count,
                out,
            } => {
                let keys = MasterKeys::load_or_create(&master)?;
                let mut file = private_file(&out)?;
                let now = SystemClock.now();
                let mut progress = Progress::new("keys created", Some(count as u64));
                for i in 0..count {
                    progress.set(i as u64);
                    let id = uuid::Uuid::new_v4().to_string();
                    let secret = crypto::new_secret();
                    let sealed = keys.seal(&id, secret.as_bytes())?;
                    store
                        .insert_key(&armor_server::store::NewKeyRow {
                            id: &id,
                            user_id: user,
                            account_id: account,
                            name: &format!("seed-{i}"),
                            created_at: now,
                            sealed: &sealed,
                            rules: &Default::default(),
                        })
                        .await?;
                    writeln!(file, "{id} {}", secret.as_str())?;
                }
                file.flush()?;
                progress.finish(count as u64);
                println!("{count}");
            }
            AdminCommand::CleanUpUsage {
                usage_minute_retention_hours,
                usage_hour_retention_days,
            } => {
                let retention = Retention {
                    minutes: usage_minute_retention_hours * 3600,
                    hours: usage_hour_retention_days * 86_400,
                };
                let now = SystemClock.now();
                let due = retention.due(&store, now).await?;
                let mut progress = Progress::new("usage rows deleted", Some(due));
                let n = retention
                    .clean_up(&store, now, |done| progress.set(done))
                    .await?;
                progress.finish(n);
                println!("{n}");
            }
            AdminCommand::Audit {
                account,
                limit,
                user,
                event,
                since,
                until,
            } => {
                let filter = AuditFilter {
                    account_id: account,
                    user_id: user,
                    event,
                    since,
                    until,
                    before: None,
                    limit,
                };
                for row in store.audit_query(&filter).await? {
                    println!("{}", serde_json::to_string(&row)?);
                }
            }
            AdminCommand::Outbox { limit, mark_sent } => {
                // Bodies are sealed: opened with the master key to be shown.
                let keys = MasterKeys::load(&master)?;
                for row in store.pending_outbox(limit).await? {
                    let mut shown = serde_json::to_value(&row)?;
                    let opened = outbox::open_body(&keys, &row);
                    shown["body"] = match &opened {
                        Ok(body) => serde_json::Value::String(body.to_string()),
                        Err(e) => {
                            eprintln!("message {} left pending: {e}", row.id);
                            serde_json::Value::Null
                        }
                    };
                    println!("{shown}");
                    // A body that did not open stays pending (and sealed):
                    // marking it sent would wipe it unread.
                    if mark_sent && opened.is_ok() {
                        store.mark_sent(row.id, SystemClock.now()).await?;
                    }
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
