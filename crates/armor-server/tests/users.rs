//! User administration and account security through the services of `Core`, with a
//! `ManualClock`: the lockout clock, TOTP at chosen times, code lifetimes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use armor_server::clock::ManualClock;
use armor_server::core::{totp, Core, CoreConfig, Principal, UserEdit, Via, RESET_TTL};
use armor_server::crypto;
use armor_server::store::{AuditFilter, NewUser, Role, Store, UserStatus};
use armor_server::Error;

const T0: u64 = 1_700_000_000;
const ADMIN: &str = "owner@example.com";
const PASSWORD: &str = "correct horse battery staple";

struct Env {
    _dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    core: Arc<Core>,
    /// The store under the core, to look at what it wrote.
    store: Store,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("armor.db").to_str().unwrap())
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    store
        .bootstrap(ADMIN, &crypto::hash_password(PASSWORD).unwrap(), T0)
        .await
        .unwrap();
    let core = Core::new(
        store.clone(),
        &dir.path().join("master.key"),
        clock.clone(),
        Arc::new(armor_psk::MemoryReplayGuard::new(1024)),
        CoreConfig {
            max_body: 1 << 20,
            require_signed_query: false,
        },
    )
    .await
    .unwrap();
    Env {
        _dir: dir,
        clock,
        core: Arc::new(core),
        store,
    }
}

impl Env {
    /// A new key of `user_id` (made by that user): its id and its secret's
    /// signing state.
    async fn key_of(&self, user_id: i64) -> (String, armor_psk::SigningKey) {
        let p = self.principal(user_id).await;
        let key = self
            .core
            .keys
            .create_key(&p, user_id, "k", &Default::default(), None)
            .await
            .unwrap();
        let signing = armor_psk::SigningKey::from_bytes(key.secret.as_bytes());
        (key.row.id.clone(), signing)
    }

    /// Disables or enables `user_id`, as user 1 (an administrator).
    async fn set_enabled(&self, user_id: i64, enabled: bool) {
        let admin = self.principal(1).await;
        self.core
            .users
            .set_user_enabled(&admin, user_id, enabled, None)
            .await
            .unwrap();
    }

    async fn principal(&self, user_id: i64) -> Principal {
        self.core
            .access
            .principal(
                user_id,
                1,
                None,
                Via::Password {
                    token_hash: [0; 32],
                },
            )
            .await
            .unwrap()
    }

    /// An active user with the test password.
    async fn user(&self, email: &str, role: &str) -> i64 {
        let hash = crypto::hash_password(PASSWORD).unwrap();
        self.store
            .create_user(
                &NewUser {
                    account_id: 1,
                    email,
                    first: "",
                    last: "",
                    password_hash: Some(&hash),
                    status: UserStatus::Active,
                    role: &Role::from(role),
                },
                self.clock.now_for_tests(),
            )
            .await
            .unwrap()
    }

    async fn login(&self, email: &str, password: &str, mfa: Option<&str>) -> Result<(), Error> {
        self.core
            .sessions
            .authorize(email, password, mfa, Some("192.0.2.1".into()))
            .await
            .map(|_| ())
    }

    async fn events(&self, event: &str) -> Vec<armor_server::store::AuditRow> {
        self.store
            .audit_query(&AuditFilter {
                account_id: 1,
                event: Some(event.into()),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
    }

    /// The newest pending outbox message to `recipient`, and the code in it.
    async fn code_sent_to(&self, recipient: &str) -> String {
        let rows = self.store.pending_outbox(1000).await.unwrap();
        let row = rows
            .iter()
            .rev()
            .find(|r| r.recipient == recipient)
            .expect("a message");
        // Bodies are sealed at rest: opened with the master key.
        let body = self.core.outbox.body(row).unwrap();
        let marker = body
            .find(" is ")
            .map(|i| i + 4)
            .expect("a code in the message");
        body[marker..]
            .split(|c: char| c == ';' || c.is_whitespace())
            .next()
            .unwrap()
            .to_owned()
    }
}

trait NowForTests {
    fn now_for_tests(&self) -> u64;
}
impl NowForTests for ManualClock {
    fn now_for_tests(&self) -> u64 {
        armor_server::clock::Clock::now(self)
    }
}

fn is_invalid_credentials(r: Result<(), Error>) -> bool {
    matches!(r, Err(Error::InvalidCredentials))
}

#[tokio::test]
async fn five_failures_lock_for_a_minute_then_longer_each_time() {
    let e = env().await;
    let uid = e.user("jane@example.com", "User").await;
    let admin = e.principal(1).await;
    // Four failures: not locked, the right password still works.
    for _ in 0..4 {
        assert!(is_invalid_credentials(
            e.login("jane@example.com", "wrong", None).await
        ));
    }
    let s = e
        .core
        .users
        .lock_state(&admin, 1, "jane@example.com")
        .await
        .unwrap();
    assert_eq!((s.locked_until, s.failures), (None, 4));
    e.login("jane@example.com", PASSWORD, None).await.unwrap();
    // A success clears the count; five failures in the window lock.
    for _ in 0..5 {
        e.clock.advance(10);
        assert!(is_invalid_credentials(
            e.login("jane@example.com", "wrong", None).await
        ));
    }
    let locked_at = T0 + 50;
    let s = e
        .core
        .users
        .lock_state(&admin, 1, "JANE@example.com")
        .await
        .unwrap();
    assert_eq!(s.locked_until, Some(locked_at + 60));
    // Locked: the right password gets the wrong-password answer.
    assert!(is_invalid_credentials(
        e.login("jane@example.com", PASSWORD, None).await
    ));
    e.clock.advance(59);
    assert!(is_invalid_credentials(
        e.login("jane@example.com", PASSWORD, None).await
    ));
    e.clock.advance(1);
    // At locked_until the lock is over; five more failures lock for 2 min.
    for _ in 0..5 {
        assert!(is_invalid_credentials(
            e.login("jane@example.com", "wrong", None).await
        ));
    }
    let now = T0 + 50 + 60;
    let s = e
        .core
        .users
        .lock_state(&admin, 1, "jane@example.com")
        .await
        .unwrap();
    assert_eq!(s.locked_until, Some(now + 120));
    e.clock.advance(120);
    for _ in 0..5 {
        let _ = e.login("jane@example.com", "wrong", None).await;
    }
    let s = e
        .core
        .users
        .lock_state(&admin, 1, "jane@example.com")
        .await
        .unwrap();
    assert_eq!(s.locked_until, Some(now + 120 + 240));
    // Unlock: the right password works at once.
    assert!(e
        .core
        .users
        .unlock(&admin, 1, "jane@example.com", None)
        .await
        .unwrap());
    e.login("jane@example.com", PASSWORD, None).await.unwrap();
    // Audit: three lockouts, one unlock, login failures with reasons.
    assert_eq!(e.events("lockout").await.len(), 3);
    let unlock = e.events("unlock").await;
    assert_eq!(unlock.len(), 1);
    assert_eq!(unlock[0].target.as_deref(), Some(uid.to_string().as_str()));
    assert_eq!(unlock[0].actor_id, Some(1));
    let failed = e.events("login_failed").await;
    assert!(failed
        .iter()
        .any(|r| r.detail.as_deref() == Some("reason=locked")));
    assert!(failed
        .iter()
        .all(|r| r.address.as_deref() == Some("192.0.2.1")));
}

#[tokio::test]
async fn failures_outside_the_window_do_not_add_up() {
    let e = env().await;
    e.user("win@example.com", "User").await;
    let admin = e.principal(1).await;
    for _ in 0..4 {
        let _ = e.login("win@example.com", "wrong", None).await;
    }
    e.clock.advance(15 * 60 + 1);
    for _ in 0..4 {
        let _ = e.login("win@example.com", "wrong", None).await;
    }
    let s = e
        .core
        .users
        .lock_state(&admin, 1, "win@example.com")
        .await
        .unwrap();
    assert_eq!((s.locked_until, s.failures), (None, 4));
    e.login("win@example.com", PASSWORD, None).await.unwrap();
}

#[tokio::test]
async fn lock_state_needs_users_read_in_that_account() {
    let e = env().await;
    let uid = e.user("plain@example.com", "User").await;
    let plain = e.principal(uid).await;
    assert!(matches!(
        e.core.users.lock_state(&plain, 1, ADMIN).await,
        Err(Error::PermissionDenied(_))
    ));
    let admin = e.principal(1).await;
    assert!(matches!(
        e.core.users.lock_state(&admin, 99, ADMIN).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        e.core.users.unlock(&plain, 1, ADMIN, None).await,
        Err(Error::PermissionDenied(_))
    ));
}

fn base32_decode(s: &str) -> Vec<u8> {
    let mut bits = 0u64;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => panic!("bad base32"),
        };
        bits = bits << 5 | u64::from(v);
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

#[tokio::test]
async fn totp_enrolment_login_and_replay() {
    let e = env().await;
    let uid = e.user("totp@example.com", "User").await;
    let p = e.principal(uid).await;
    let enrol = e
        .core
        .factors
        .totp_enrol(&p, "totp@example.com")
        .await
        .unwrap();
    assert!(enrol
        .otpauth_uri
        .starts_with("otpauth://totp/armor:totp%40example.com?secret="));
    assert!(enrol.otpauth_uri.contains(enrol.secret_base32.as_str()));
    let secret = base32_decode(&enrol.secret_base32);
    assert_eq!(secret.len(), 20);
    // Pending until a code is validated: login needs no second factor yet.
    e.login("totp@example.com", PASSWORD, None).await.unwrap();
    // A wrong pin is refused; the right one enables TOTP.
    let wrong = format!(
        "{:06}",
        (totp::code_at(&secret, T0, 6).parse::<u32>().unwrap() + 1) % 1_000_000
    );
    assert!(matches!(
        e.core.factors.totp_validate(&p, &wrong, None).await,
        Err(Error::InvalidMfaCode)
    ));
    let now_code = totp::code_at(&secret, T0, 6);
    assert!(e
        .core
        .factors
        .totp_validate(&p, &now_code, None)
        .await
        .unwrap());
    // The same code does not work twice.
    assert!(matches!(
        e.core.factors.totp_validate(&p, &now_code, None).await,
        Err(Error::InvalidMfaCode)
    ));
    // Enrolled: the password alone gets mfa_required; a wrong password
    // still gets invalid_credentials (nothing said to a guesser).
    assert!(matches!(
        e.login("totp@example.com", PASSWORD, None).await,
        Err(Error::MfaRequired)
    ));
    assert!(is_invalid_credentials(
        e.login("totp@example.com", "wrong", None).await
    ));
    // The used step is refused; the next step's code works, once.
    assert!(matches!(
        e.login("totp@example.com", PASSWORD, Some(&now_code)).await,
        Err(Error::InvalidMfaCode)
    ));
    e.clock.advance(30);
    let next = totp::code_at(&secret, T0 + 30, 6);
    e.login("totp@example.com", PASSWORD, Some(&next))
        .await
        .unwrap();
    assert!(matches!(
        e.login("totp@example.com", PASSWORD, Some(&next)).await,
        Err(Error::InvalidMfaCode)
    ));
    // A code one step old is accepted (drift), two steps old is not.
    e.clock.advance(60);
    let old = totp::code_at(&secret, T0 + 60, 6);
    e.login("totp@example.com", PASSWORD, Some(&old))
        .await
        .unwrap();
    e.clock.advance(60);
    let stale = totp::code_at(&secret, T0 + 90, 6);
    assert!(matches!(
        e.login("totp@example.com", PASSWORD, Some(&stale)).await,
        Err(Error::InvalidMfaCode)
    ));
    // Re-enrolling over an enabled app is refused; an administrator resets it.
    assert!(matches!(
        e.core.factors.totp_enrol(&p, "x").await,
        Err(Error::Conflict(_))
    ));
    let admin = e.principal(1).await;
    let s = e
        .core
        .users
        .user_security(&admin, 1, uid, true, None)
        .await
        .unwrap();
    assert!(!s.totp_enabled);
    e.login("totp@example.com", PASSWORD, None).await.unwrap();
    assert_eq!(e.events("mfa_enrolled").await.len(), 1);
    assert_eq!(e.events("mfa_reset").await.len(), 1);
}

#[tokio::test]
async fn the_totp_secret_is_sealed_at_rest() {
    let e = env().await;
    let uid = e.user("sealed@example.com", "User").await;
    let p = e.principal(uid).await;
    let enrol = e
        .core
        .factors
        .totp_enrol(&p, "sealed@example.com")
        .await
        .unwrap();
    let secret = base32_decode(&enrol.secret_base32);
    let row = e.store.security(uid).await.unwrap().unwrap();
    let ct = row.totp_ciphertext.unwrap();
    assert!(!ct.windows(secret.len()).any(|w| w == secret.as_slice()));
}

#[tokio::test]
async fn wrong_second_factor_codes_count_towards_the_lock() {
    let e = env().await;
    let uid = e.user("mfa-lock@example.com", "User").await;
    let p = e.principal(uid).await;
    let enrol = e.core.factors.totp_enrol(&p, "x").await.unwrap();
    let secret = base32_decode(&enrol.secret_base32);
    e.core
        .factors
        .totp_validate(&p, &totp::code_at(&secret, T0, 6), None)
        .await
        .unwrap();
    e.clock.advance(30);
    let good = totp::code_at(&secret, T0 + 30, 6);
    let bad = if good == "123456" { "654321" } else { "123456" };
    for _ in 0..5 {
        assert!(matches!(
            e.login("mfa-lock@example.com", PASSWORD, Some(bad)).await,
            Err(Error::InvalidMfaCode)
        ));
    }
    // Locked: even the right password and code get invalid_credentials.
    assert!(is_invalid_credentials(
        e.login("mfa-lock@example.com", PASSWORD, Some(&good)).await
    ));
}

#[tokio::test]
async fn reset_codes_work_once_and_expire() {
    let e = env().await;
    e.user("reset@example.com", "User").await;
    // Unknown addresses get the same Ok and no message.
    e.core
        .users
        .reset_password("nobody@example.com", None)
        .await
        .unwrap();
    assert!(e.store.pending_outbox(10).await.unwrap().is_empty());
    e.core
        .users
        .reset_password("reset@example.com", None)
        .await
        .unwrap();
    let code = e.code_sent_to("reset@example.com").await;
    // Too short a password leaves the code usable.
    assert!(matches!(
        e.core
            .users
            .set_password_with_code(&code, "short", None)
            .await,
        Err(Error::BadRequest(_))
    ));
    let new_password = "a brand new passphrase";
    e.core
        .users
        .set_password_with_code(&code.to_ascii_lowercase(), new_password, None)
        .await
        .unwrap();
    assert!(matches!(
        e.core
            .users
            .set_password_with_code(&code, "another new passphrase", None)
            .await,
        Err(Error::InvalidCode)
    ));
    e.login("reset@example.com", new_password, None)
        .await
        .unwrap();
    assert!(is_invalid_credentials(
        e.login("reset@example.com", PASSWORD, None).await
    ));
    // Expiry: one second past the lifetime the code is refused.
    e.core
        .users
        .reset_password("reset@example.com", None)
        .await
        .unwrap();
    let code = e.code_sent_to("reset@example.com").await;
    e.clock.advance(RESET_TTL + 1);
    assert!(matches!(
        e.core
            .users
            .set_password_with_code(&code, "too late passphrase", None)
            .await,
        Err(Error::InvalidCode)
    ));
    // A newer code voids the older one.
    e.core
        .users
        .reset_password("reset@example.com", None)
        .await
        .unwrap();
    let first = e.code_sent_to("reset@example.com").await;
    e.core
        .users
        .reset_password("reset@example.com", None)
        .await
        .unwrap();
    let second = e.code_sent_to("reset@example.com").await;
    assert_ne!(first, second);
    assert!(matches!(
        e.core
            .users
            .set_password_with_code(&first, "first code passphrase", None)
            .await,
        Err(Error::InvalidCode)
    ));
    e.core
        .users
        .set_password_with_code(&second, "second code passphrase", None)
        .await
        .unwrap();
    let changed = e.events("password_changed").await;
    assert_eq!(changed.len(), 2);
    assert_eq!(changed[0].detail.as_deref(), Some("via=reset"));
}

#[tokio::test]
async fn invitation_activation_and_phone_second_factor() {
    let e = env().await;
    let admin = e.principal(1).await;
    let (user, role) = e
        .core
        .users
        .create_user(
            &admin,
            &UserEdit {
                email: Some("new@example.com".into()),
                first_name: Some("New".into()),
                last_name: Some("User".into()),
                role: None,
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!((user.status.as_str(), role.as_str()), ("invited", "User"));
    // An invited user cannot sign in.
    assert!(is_invalid_credentials(
        e.login("new@example.com", "", None).await
    ));
    let code = e.code_sent_to("new@example.com").await;
    e.core
        .users
        .set_password_with_code(&code, "my first passphrase", None)
        .await
        .unwrap();
    e.login("new@example.com", "my first passphrase", None)
        .await
        .unwrap();
    // Phone: a code through the outbox, verified, then needed to sign in.
    let p = e.principal(user.id).await;
    e.core
        .factors
        .phone_start(&p, "+1 555 123 4567")
        .await
        .unwrap();
    let code = e.code_sent_to("+15551234567").await;
    assert!(matches!(
        e.core
            .factors
            .phone_verify(&p, "+15550000000", &code, None)
            .await,
        Err(Error::InvalidMfaCode)
    ));
    e.core
        .factors
        .phone_start(&p, "+15551234567")
        .await
        .unwrap();
    let code = e.code_sent_to("+15551234567").await;
    e.core
        .factors
        .phone_verify(&p, "+15551234567", &code, None)
        .await
        .unwrap();
    assert!(matches!(
        e.login("new@example.com", "my first passphrase", None)
            .await,
        Err(Error::MfaRequired)
    ));
    let login_code = e.code_sent_to("+15551234567").await;
    e.login("new@example.com", "my first passphrase", Some(&login_code))
        .await
        .unwrap();
    // Single use.
    assert!(matches!(
        e.login("new@example.com", "my first passphrase", Some(&login_code))
            .await,
        Err(Error::InvalidMfaCode)
    ));
}

#[tokio::test]
async fn disabling_drops_keys_from_the_verifier_and_enabling_restores_them() {
    let e = env().await;
    let uid = e.user("keys@example.com", "User").await;
    e.key_of(uid).await;
    assert_eq!(e.core.verifier.cached_keys(), 1);
    let admin = e.principal(1).await;
    e.set_enabled(uid, false).await;
    assert_eq!(e.core.verifier.cached_keys(), 0);
    e.set_enabled(uid, true).await;
    assert_eq!(e.core.verifier.cached_keys(), 1);
    // Oneself: refused.
    assert!(matches!(
        e.core.users.set_user_enabled(&admin, 1, false, None).await,
        Err(Error::Conflict(_))
    ));
    e.core.users.soft_delete(&admin, uid, None).await.unwrap();
    assert_eq!(e.core.verifier.cached_keys(), 0);
    assert_eq!(
        e.store.user_by_id(uid).await.unwrap().unwrap().status,
        "deleted"
    );
    let changes = e.events("status_changed").await;
    assert_eq!(changes.len(), 2);
    assert_eq!(e.events("user_deleted").await.len(), 1);
    assert_eq!(e.events("key_deleted").await.len(), 1);
}

/// A key id that is not cached is verified under a borrowed state, which
/// may be another key's. A request signed with that other key's secret
/// then verifies, and must still be refused, also when the id is cached
/// again between the look-up and the verdict (a user enabled meanwhile).
#[tokio::test]
async fn a_request_verified_under_a_borrowed_state_is_refused() {
    use armor_psk::{SignableRequest, SigningKey};
    let e = env().await;
    let admin = e.principal(1).await;
    // The admin's keys: states that ids not cached may borrow.
    let mut secrets = Vec::new();
    for i in 0..64 {
        let k = e
            .core
            .keys
            .create_key(&admin, 1, &format!("a{i}"), &Default::default(), None)
            .await
            .unwrap();
        secrets.push(SigningKey::from_bytes(k.secret.as_bytes()));
    }
    // A user with keys, disabled: its keys leave the cache.
    let victim = e.user("victim@example.com", "User").await;
    let vp = e.principal(victim).await;
    let mut victims = Vec::new();
    for i in 0..32 {
        let k = e
            .core
            .keys
            .create_key(&vp, victim, &format!("x{i}"), &Default::default(), None)
            .await
            .unwrap();
        victims.push((k.row.id, SigningKey::from_bytes(k.secret.as_bytes())));
    }
    e.core
        .users
        .set_user_enabled(&admin, victim, false, None)
        .await
        .unwrap();
    let now = e.clock.now_for_tests();
    let request = |key_id: &str, nonce: &str, signing: &SigningKey| {
        SignableRequest {
            key_id,
            method: "GET",
            request_path: "/me",
            nonce,
            timestamp: now,
            body: b"",
        }
        .authorization(signing)
    };
    let req = armor_psk::Request {
        method: "GET",
        path: "/me",
        query: None,
        body: b"",
    };
    // A victim key whose id now borrows an admin key's state (told apart
    // by the signatures the states make; about half of them do).
    let (x, x_signing, borrowed) = victims
        .iter()
        .find_map(|(x, own)| {
            let header = request(x, "probe", own);
            let begun = e.core.verifier.psk_begin(&header).unwrap();
            let found = begun.key();
            assert!(!found.is_own());
            let probe = SignableRequest {
                key_id: x,
                method: "GET",
                request_path: "/me",
                nonce: "probe",
                timestamp: now,
                body: b"",
            };
            let by_state = probe.sign(found.signing());
            secrets
                .iter()
                .find(|s| probe.sign(s).ct_eq(&by_state))
                .map(|s| (x.clone(), own.clone(), s.clone()))
        })
        .expect("some victim id borrows an admin key's state");
    // Signed with that admin key's secret for the id `x`: it verifies
    // under the borrowed state, and is refused.
    let forged = request(&x, "n1", &borrowed);
    let begun = e.core.verifier.psk_begin(&forged).unwrap();
    assert!(e
        .core
        .verifier
        .psk_finish(&begun, &req, &Default::default())
        .await
        .is_err());
    // The same, with `x` cached again before the verdict.
    let forged = request(&x, "n2", &borrowed);
    let begun = e.core.verifier.psk_begin(&forged).unwrap();
    e.core
        .users
        .set_user_enabled(&admin, victim, true, None)
        .await
        .unwrap();
    let refused = e
        .core
        .verifier
        .psk_finish(&begun, &req, &Default::default())
        .await;
    assert!(
        matches!(
            refused,
            Err(Error::Psk {
                err: armor_psk::Error::InvalidSignature,
                ..
            })
        ),
        "{refused:?}"
    );
    // `x`'s own secret works again.
    let own = request(&x, "n3", &x_signing);
    let begun = e.core.verifier.psk_begin(&own).unwrap();
    assert!(begun.key().is_own());
    let id = e
        .core
        .verifier
        .psk_finish(&begun, &req, &Default::default())
        .await
        .unwrap();
    assert_eq!(&*id.key_id, x.as_str());
}

/// The key cache against the store under concurrent writers: a full
/// reload, a disable, an enable and a key creation for the same user, run
/// together for 60 rounds. After each round the cache holds exactly the
/// store's active keys: a reload that read the store before the disable
/// puts nothing back, a creation racing either leaves no stale key, and an
/// enable written last is not undone by the disable's late removal.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_key_cache_follows_the_store_under_racing_writers() {
    let e = env().await;
    let admin = e.principal(1).await;
    let uid = e.user("racer@example.com", "User").await;
    let p = e.principal(uid).await;
    for i in 0..40 {
        e.core
            .keys
            .create_key(&p, uid, &format!("k{i}"), &Default::default(), None)
            .await
            .unwrap();
    }
    let active = |store: Store| async move { store.active_sealed_keys(None).await.unwrap().len() };
    let mut disabled_at_end = 0;
    for round in 0..60 {
        let core = &e.core;
        if e.store.user_by_id(uid).await.unwrap().unwrap().status != "active" {
            core.users
                .set_user_enabled(&admin, uid, true, None)
                .await
                .unwrap();
        }
        assert_eq!(
            core.verifier.cached_keys(),
            active(e.store.clone()).await,
            "round {round}"
        );
        let spawn =
            |f: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>| tokio::spawn(f);
        let tasks = [
            spawn(Box::pin({
                let core = core.clone();
                async move {
                    core.verifier.reload_keys_local(None).await.unwrap();
                }
            })),
            spawn(Box::pin({
                let (core, admin) = (core.clone(), admin.clone());
                async move {
                    // A conflict (the status moved meanwhile) is an answer.
                    let _ = core.users.set_user_enabled(&admin, uid, false, None).await;
                }
            })),
            spawn(Box::pin({
                let (core, admin) = (core.clone(), admin.clone());
                async move {
                    let _ = core.users.set_user_enabled(&admin, uid, true, None).await;
                }
            })),
            spawn(Box::pin({
                let (core, p) = (core.clone(), p.clone());
                async move {
                    core.keys
                        .create_key(&p, uid, &format!("r{round}"), &Default::default(), None)
                        .await
                        .unwrap();
                }
            })),
        ];
        for t in tasks {
            t.await.unwrap();
        }
        let status = e.store.user_by_id(uid).await.unwrap().unwrap().status;
        disabled_at_end += usize::from(status == "disabled");
        assert_eq!(
            core.verifier.cached_keys(),
            active(e.store.clone()).await,
            "round {round}, the user {status}"
        );
    }
    eprintln!("the user ended disabled in {disabled_at_end} rounds of 60");
}

/// A soft delete racing an enable: the enable cannot bring the deleted user
/// back, and none of the user's keys stays cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_enable_racing_a_delete_does_not_revive_the_user() {
    let e = env().await;
    let admin = e.principal(1).await;
    for round in 0..20 {
        let uid = e.user(&format!("gone{round}@example.com"), "User").await;
        let p = e.principal(uid).await;
        for i in 0..5 {
            e.core
                .keys
                .create_key(&p, uid, &format!("k{i}"), &Default::default(), None)
                .await
                .unwrap();
        }
        e.core
            .users
            .set_user_enabled(&admin, uid, false, None)
            .await
            .unwrap();
        let (delete, enable) = tokio::join!(
            {
                let (core, admin) = (e.core.clone(), admin.clone());
                tokio::spawn(async move { core.users.soft_delete(&admin, uid, None).await })
            },
            {
                let (core, admin) = (e.core.clone(), admin.clone());
                tokio::spawn(
                    async move { core.users.set_user_enabled(&admin, uid, true, None).await },
                )
            },
        );
        delete.unwrap().unwrap();
        let _ = enable.unwrap();
        let user = e.store.user_by_id(uid).await.unwrap().unwrap();
        assert_eq!(user.status, "deleted", "round {round}");
        assert_eq!(e.core.verifier.cached_keys(), 0, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_failures_all_count_and_lock_once() {
    let e = env().await;
    e.user("race@example.com", "User").await;
    let admin = e.principal(1).await;
    let burst = |n: usize| {
        let core = e.core.clone();
        async move {
            let tasks: Vec<_> = (0..n)
                .map(|_| {
                    let core = core.clone();
                    tokio::spawn(async move {
                        core.sessions
                            .authorize("race@example.com", "wrong", None, None)
                            .await
                            .map(|_| ())
                    })
                })
                .collect();
            for t in tasks {
                assert!(is_invalid_credentials(t.await.unwrap()));
            }
        }
    };
    // Four at once: all four counted, no lock.
    burst(4).await;
    let s = e
        .core
        .users
        .lock_state(&admin, 1, "race@example.com")
        .await
        .unwrap();
    assert_eq!((s.locked_until, s.failures), (None, 4));
    // Twenty more at once: the fifth failure locks, for the first lock's
    // minute; failures while locked add nothing (no second, longer lock).
    burst(20).await;
    let s = e
        .core
        .users
        .lock_state(&admin, 1, "race@example.com")
        .await
        .unwrap();
    assert_eq!(s.locked_until, Some(T0 + 60));
    assert_eq!(e.events("lockout").await.len(), 1);
    assert!(is_invalid_credentials(
        e.login("race@example.com", PASSWORD, None).await
    ));
    e.clock.advance(60);
    e.login("race@example.com", PASSWORD, None).await.unwrap();
}

#[tokio::test]
async fn rotating_the_master_key_reseals_totp_secrets() {
    let e = env().await;
    let uid = e.user("rot@example.com", "User").await;
    let p = e.principal(uid).await;
    let enrol = e
        .core
        .factors
        .totp_enrol(&p, "rot@example.com")
        .await
        .unwrap();
    let secret = base32_decode(&enrol.secret_base32);
    assert!(e
        .core
        .factors
        .totp_validate(&p, &totp::code_at(&secret, T0, 6), None)
        .await
        .unwrap());
    let before = e.store.security(uid).await.unwrap().unwrap();
    assert_eq!(before.totp_mk_version, Some(1));

    crypto::MasterKeys::add_version(&e._dir.path().join("master.key")).unwrap();
    let n = e.core.rotation.reseal_all().await.unwrap();
    assert_eq!((n.keys, n.totp), (0, 1));
    let after = e.store.security(uid).await.unwrap().unwrap();
    assert_eq!(after.totp_mk_version, Some(2));
    assert_ne!(after.totp_nonce, before.totp_nonce);
    assert_ne!(after.totp_ciphertext, before.totp_ciphertext);
    assert_eq!(after.totp_last_step, before.totp_last_step);
    // Nothing left to do on a second run.
    assert_eq!(e.core.rotation.reseal_all().await.unwrap().totp, 0);
    // A row that changed since it was read is left alone (crash safety:
    // only a row still holding the old seal is replaced).
    let stale = before.totp_sealed().unwrap();
    assert!(!e.store.reseal_totp(uid, &stale, &stale).await.unwrap());

    // The user still signs in with a valid code, on this core and on a
    // fresh one reading the rotated key file.
    e.clock.advance(30);
    e.login(
        "rot@example.com",
        PASSWORD,
        Some(&totp::code_at(&secret, T0 + 30, 6)),
    )
    .await
    .unwrap();
    let fresh = Core::new(
        e.store.clone(),
        &e._dir.path().join("master.key"),
        e.clock.clone(),
        Arc::new(armor_psk::MemoryReplayGuard::new(1024)),
        CoreConfig {
            max_body: 1 << 20,
            require_signed_query: false,
        },
    )
    .await
    .unwrap();
    e.clock.advance(30);
    fresh
        .sessions
        .authorize(
            "rot@example.com",
            PASSWORD,
            Some(&totp::code_at(&secret, T0 + 60, 6)),
            None,
        )
        .await
        .unwrap();
}

/// Signs a `GET /me` with `signing` for `key_id` (nonce `n{n}`, now) and
/// runs it through the verifier's two steps.
async fn verify_me(
    core: std::sync::Arc<armor_server::core::Core>,
    clock: &armor_server::clock::ManualClock,
    key_id: &str,
    n: u64,
    signing: &armor_psk::SigningKey,
) -> Result<(), armor_server::Error> {
    let header = armor_psk::SignableRequest {
        key_id,
        method: "GET",
        request_path: "/me",
        nonce: &format!("n{n}"),
        timestamp: armor_server::clock::Clock::now(clock),
        body: b"",
    }
    .authorization(signing);
    let begun = core.verifier.psk_begin(&header)?;
    let req = armor_psk::Request {
        method: "GET",
        path: "/me",
        query: None,
        body: b"",
    };
    core.verifier
        .psk_finish(&begun, &req, &Default::default())
        .await
        .map(|_| ())
}

/// Last-used times: exact in memory at once, written to the store at most
/// once per `LAST_USED_GRAIN` per key, exactly on shutdown, in batches that
/// span several statements, and never moved backwards.
#[tokio::test]
async fn last_used_is_exact_in_memory_and_coarse_in_the_store() {
    use armor_server::core::LAST_USED_GRAIN;
    let e = env().await;
    let (id, signing) = e.key_of(1).await;
    let mut n = 0;
    let mut call = || {
        n += 1;
        let (core, clock, id, signing) = (e.core.clone(), e.clock.clone(), id.clone(), &signing);
        async move { verify_me(core, &clock, &id, n, signing).await.unwrap() }
    };
    let stored =
        |store: Store, id: String| async move { store.key(&id).await.unwrap().unwrap().last_used };
    call().await;
    assert_eq!(e.core.verifier.pending_last_used(&id), Some(T0));
    e.core.verifier.flush_last_used().await.unwrap();
    assert_eq!(stored(e.store.clone(), id.clone()).await, Some(T0 as i64));
    // Within the grain: exact in memory, not written.
    e.clock.advance(LAST_USED_GRAIN - 1);
    call().await;
    assert_eq!(
        e.core.verifier.pending_last_used(&id),
        Some(T0 + LAST_USED_GRAIN - 1)
    );
    e.core.verifier.flush_last_used().await.unwrap();
    assert_eq!(stored(e.store.clone(), id.clone()).await, Some(T0 as i64));
    // Past it: written.
    e.clock.advance(2);
    call().await;
    e.core.verifier.flush_last_used().await.unwrap();
    let t = T0 + LAST_USED_GRAIN + 1;
    assert_eq!(stored(e.store.clone(), id.clone()).await, Some(t as i64));
    // Shutdown writes the exact time.
    e.clock.advance(5);
    call().await;
    e.core.verifier.queue_exact_last_used();
    e.core.verifier.flush_last_used().await.unwrap();
    assert_eq!(
        stored(e.store.clone(), id.clone()).await,
        Some(t as i64 + 5)
    );
    // A batch over several statements, the key in its second one, with an
    // older time: never backwards; with a later one: written.
    let batch = |at: u64| {
        (0..2500)
            .map(|i| {
                let k = if i == 1500 {
                    id.clone()
                } else {
                    format!("none-{i}")
                };
                (k, at)
            })
            .collect::<Vec<_>>()
    };
    e.store.record_last_used(&batch(T0)).await.unwrap();
    assert_eq!(
        stored(e.store.clone(), id.clone()).await,
        Some(t as i64 + 5)
    );
    e.store.record_last_used(&batch(T0 + 999)).await.unwrap();
    assert_eq!(
        stored(e.store.clone(), id.clone()).await,
        Some(T0 as i64 + 999)
    );
}

/// A refusal is queued the same way whether its key id is cached or not
/// (a timing difference would tell which ids exist); a key's queued
/// refusals are counted, in the minute they were made, when its usage is
/// read, and the rest by the periodic flush; an unknown id's are dropped.
#[tokio::test]
async fn refusals_are_queued_alike_and_counted_on_cached_keys_only() {
    let e = env().await;
    let (id, _) = e.key_of(1).await;
    let unknown = "00000000-0000-4000-8000-000000000000".to_owned();
    let wrong = armor_psk::SigningKey::from_bytes(b"not the secret of any key");
    let mut n = 0;
    let mut refuse = |key_id: &str| {
        n += 1;
        let (core, clock, key_id, wrong) =
            (e.core.clone(), e.clock.clone(), key_id.to_owned(), &wrong);
        async move { assert!(verify_me(core, &clock, &key_id, n, wrong).await.is_err()) }
    };
    let verifier = &e.core.verifier;
    let refused = |id: String| async move {
        verifier
            .usage_of(&id, 60, 0, u64::MAX)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|(start, c)| {
                let n = c.refused.get("invalid_signature").copied()?;
                Some((start, n))
            })
            .collect::<Vec<_>>()
    };
    refuse(&id).await;
    assert_eq!(verifier.queued_refusals(), 1);
    refuse(&unknown).await;
    assert_eq!(verifier.queued_refusals(), 2);
    // Read three minutes later: the key's refusal, in its own minute; the
    // unknown id's stays queued until the flush, which drops it.
    let minute = T0 / 60 * 60;
    e.clock.advance(180);
    assert_eq!(refused(id.clone()).await, vec![(minute, 1)]);
    assert_eq!(verifier.queued_refusals(), 1);
    verifier.flush_usage(false).await.unwrap();
    assert_eq!(verifier.queued_refusals(), 0);
    assert_eq!(refused(unknown.clone()).await, vec![]);
    // Past a batch's worth, interleaved with unknown ids: each of the
    // key's counted once.
    for _ in 0..1500 {
        refuse(&id).await;
        refuse(&unknown).await;
    }
    assert_eq!(verifier.queued_refusals(), 3000);
    let now = (T0 + 180) / 60 * 60;
    assert_eq!(refused(id.clone()).await, vec![(minute, 1), (now, 1500)]);
    assert_eq!(refused(unknown).await, vec![]);
    // Refused while its user was disabled (not cached), counted after the
    // user is enabled again: not the key's.
    let uid = e.user("queued@example.com", "User").await;
    let (other, _) = e.key_of(uid).await;
    e.set_enabled(uid, false).await;
    refuse(&other).await;
    e.set_enabled(uid, true).await;
    assert_eq!(refused(other.clone()).await, vec![]);
    refuse(&other).await;
    assert_eq!(refused(other).await, vec![(now, 1)]);
}

#[tokio::test]
async fn a_cancelled_attempt_at_the_threshold_still_locks() {
    let e = env().await;
    e.user("cut@example.com", "User").await;
    let admin = e.principal(1).await;
    for _ in 0..4 {
        assert!(is_invalid_credentials(
            e.login("cut@example.com", "wrong", None).await
        ));
    }
    // The fifth attempt is dropped (its client went away) once it has
    // been counted, while its hash runs: it never gets to set the lock.
    let fifth = e.login("cut@example.com", "wrong", None);
    let counted = async {
        loop {
            let s = e.core.users.lock_state(&admin, 1, "cut@example.com").await;
            if s.unwrap().failures >= 5 {
                break;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::select! {
        biased;
        () = counted => {}
        _ = fifth => {}
    }
    // The next attempt, with the right password, sets the missed lock.
    assert!(is_invalid_credentials(
        e.login("cut@example.com", PASSWORD, None).await
    ));
    let s = e
        .core
        .users
        .lock_state(&admin, 1, "cut@example.com")
        .await
        .unwrap();
    assert_eq!(s.locked_until, Some(T0 + 60));
    assert_eq!(e.events("lockout").await.len(), 1);
    // Once that lock is over, the right password works.
    e.clock.advance(60);
    e.login("cut@example.com", PASSWORD, None).await.unwrap();
}

#[tokio::test]
async fn a_reset_code_survives_a_hash_that_never_ran() {
    let e = env().await;
    e.user("busy@example.com", "User").await;
    e.core
        .users
        .reset_password("busy@example.com", None)
        .await
        .unwrap();
    let code = e.code_sent_to("busy@example.com").await;
    // Every hashing permit held: the request waits for one, and is dropped
    // (its client gave up) before it gets it.
    let hasher = e.core.hasher().clone();
    let mut held = Vec::new();
    while let Ok(p) =
        tokio::time::timeout(std::time::Duration::from_millis(200), hasher.permit()).await
    {
        held.push(p.unwrap());
    }
    let waited = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        e.core
            .users
            .set_password_with_code(&code, "a passphrase never set", None),
    )
    .await;
    assert!(waited.is_err(), "no permit was free");
    drop(held);
    // The code still works.
    e.core
        .users
        .set_password_with_code(&code, "the passphrase set at last", None)
        .await
        .unwrap();
    e.login("busy@example.com", "the passphrase set at last", None)
        .await
        .unwrap();
}

#[tokio::test]
async fn codes_are_stored_under_a_keyed_hash() {
    let e = env().await;
    let uid = e.user("keyed@example.com", "User").await;
    e.core
        .users
        .reset_password("keyed@example.com", None)
        .await
        .unwrap();
    let code = e.code_sent_to("keyed@example.com").await;
    let typed: String = code.chars().filter(|c| *c != '-').collect();
    let now = e.clock.now_for_tests();
    // Not under SHA-256 of the code: a copy of the database cannot test
    // codes against it.
    assert_eq!(
        e.store
            .find_password_code(&crypto::token_hash(&typed), now)
            .await
            .unwrap(),
        None
    );
    // A code stored under the old unkeyed hash (pending at an upgrade)
    // still works.
    let old = "ABCD-EFGH-JKLM-NPQR-STUV";
    e.store
        .put_user_code(
            uid,
            "reset",
            &crypto::token_hash("ABCDEFGHJKLMNPQRSTUV"),
            now + 60,
            None,
        )
        .await
        .unwrap();
    e.core
        .users
        .set_password_with_code(old, "an upgraded passphrase", None)
        .await
        .unwrap();
}

#[tokio::test]
async fn sms_sign_in_codes_stop_at_the_number_limit() {
    let e = env().await;
    let uid = e.user("sms@example.com", "User").await;
    let p = e.principal(uid).await;
    e.core
        .factors
        .phone_start(&p, "+15557654321")
        .await
        .unwrap();
    let code = e.code_sent_to("+15557654321").await;
    e.core
        .factors
        .phone_verify(&p, "+15557654321", &code, None)
        .await
        .unwrap();
    // A new window: three sign-in codes go out, the fourth is refused.
    e.clock.advance(3_601);
    for _ in 0..3 {
        assert!(matches!(
            e.login("sms@example.com", PASSWORD, None).await,
            Err(Error::MfaRequired)
        ));
    }
    assert!(matches!(
        e.login("sms@example.com", PASSWORD, None).await,
        Err(Error::RateLimited { retry_after }) if retry_after > 0 && retry_after <= 3_600
    ));
    let sent = e.store.pending_outbox(1000).await.unwrap();
    assert_eq!(
        sent.iter()
            .filter(|r| r.recipient == "+15557654321")
            .count(),
        4
    );
    // The last code sent still signs in.
    let last = e.code_sent_to("+15557654321").await;
    e.login("sms@example.com", PASSWORD, Some(&last))
        .await
        .unwrap();
}

/// A TOTP row whose sealed value is incomplete (a version without its
/// nonce) cannot be re-sealed: rotation passes over it and finishes,
/// re-sealing the others.
#[tokio::test]
async fn rotation_passes_over_a_totp_row_without_its_sealed_value() {
    use sqlx::Connection as _;

    let e = env().await;
    let mut ids = Vec::new();
    for email in ["broken@example.com", "intact@example.com"] {
        let uid = e.user(email, "User").await;
        let p = e.principal(uid).await;
        e.core.factors.totp_enrol(&p, email).await.unwrap();
        ids.push(uid);
    }
    let mut db = sqlx::sqlite::SqliteConnection::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new().filename(e._dir.path().join("armor.db")),
    )
    .await
    .unwrap();
    sqlx::query("UPDATE user_security SET totp_nonce = NULL WHERE user_id = $1")
        .bind(ids[0])
        .execute(&mut db)
        .await
        .unwrap();
    db.close().await.unwrap();

    crypto::MasterKeys::add_version(&e._dir.path().join("master.key")).unwrap();
    let n = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        e.core.rotation.reseal_all(),
    )
    .await
    .expect("the rotation finishes")
    .unwrap();
    assert_eq!(n.totp, 1);
    let broken = e.store.security(ids[0]).await.unwrap().unwrap();
    assert_eq!(broken.totp_mk_version, Some(1));
    let intact = e.store.security(ids[1]).await.unwrap().unwrap();
    assert_eq!(intact.totp_mk_version, Some(2));
}
