//! The management portal, black-box: the vendor's eight walkthrough steps in headless
//! Chromium (screenshots in `target/portal-artifacts/`), the key read off
//! the page used for real, the permission explanation, and CSRF refusals.

mod keys;
mod session;
mod usage;
mod webdriver;

use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use serde_json::{json, Value};

use crate::api::{spawn_app, Key, TestApp, ADMIN_EMAIL, ADMIN_PASSWORD};
use webdriver::Browser;

async fn sign_in(b: &Browser, app: &TestApp, email: &str, password: &str) {
    b.goto(&format!("{}/", app.url)).await;
    b.wait_path("/portal/login").await;
    b.type_into("#email", email).await;
    b.type_into("#password", password).await;
    b.click("#sign-in").await;
    b.wait_path("/portal/account").await;
}

#[tokio::test]
async fn the_vendors_walkthrough_in_a_real_browser() {
    let app = spawn_app().await;
    let b = Browser::start().await;

    // Sign in.
    b.goto(&format!("{}/", app.url)).await;
    b.wait_path("/portal/login").await;
    b.screenshot("00-sign-in").await;
    b.type_into("#email", ADMIN_EMAIL).await;
    b.type_into("#password", "not the password").await;
    b.click("#sign-in").await;
    let err = b.text("#login-error").await;
    assert_eq!(err, "The user name or password is incorrect.");
    b.screenshot("00-sign-in-wrong-password").await;
    b.type_into("#password", ADMIN_PASSWORD).await;
    b.click("#sign-in").await;
    b.wait_path("/portal/account").await;
    let cookies = b.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c["name"] == "armor_session")
        .expect("session cookie");
    assert_eq!(session["httpOnly"], true, "{session}");
    assert_eq!(session["sameSite"], "Strict", "{session}");
    assert_eq!(session["secure"], false, "plain HTTP: {session}");
    assert_eq!(session["path"], "/portal", "{session}");

    // 1. In the left-side navigation, click Account.
    b.click("#nav-account").await;
    b.wait_path("/portal/account").await;
    assert!(b.text("#account-name").await.contains("Default account"));
    b.screenshot("01-account").await;

    // 2. Click Users.
    b.click("#nav-users").await;
    b.wait_path("/portal/users").await;
    assert!(b.text("#users-table").await.contains(ADMIN_EMAIL));
    b.screenshot("02-users").await;

    // 3. Click API Keys.
    b.click("#tab-keys").await;
    b.wait_path("/portal/keys").await;
    b.find("#no-keys").await;
    b.screenshot("03-api-keys").await;

    // 4. Click the plus icon.
    b.click("#add-key").await;
    b.wait_path("/portal/keys/new").await;
    b.screenshot("04-plus-icon").await;

    // 5. Enter a descriptive name, then click Create Key.
    let name = "Nightly backup <script> & co";
    b.type_into("#key-name", name).await;
    b.screenshot("05-name").await;
    b.click("#create-key").await;
    b.find("#key-created").await;

    // 6. Copy the Key ID and Secret Key: read off the page.
    let key_id = b.text("#new-key-id").await;
    let secret = b.text("#new-key-secret").await;
    assert_eq!(key_id.len(), 36, "{key_id}");
    assert!(secret.len() >= 40, "{secret}");
    let warning = b.text("#secret-warning").await;
    assert!(warning.contains("never be shown again"), "{warning}");
    assert!(
        warning.contains("delete this API key and create a new one"),
        "{warning}"
    );
    // The copy buttons run (the script loads under the CSP).
    b.click("button[data-copy=new-key-secret]").await;
    b.wait_text("button[data-copy=new-key-secret]", |t| {
        t == "Copied" || t == "Select and copy"
    })
    .await;
    b.screenshot("06-key-id-and-secret").await;
    b.resize(390, 844).await;
    b.screenshot("06-key-id-and-secret-phone").await;
    b.resize(1280, 900).await;

    // 7. Click Close.
    b.click("#close").await;
    b.wait_path("/portal/keys").await;
    b.find("#keys-table").await;
    b.screenshot("07-close").await;

    // 8. The API Keys table displays a new entry.
    let row = format!("tr[data-key-id='{key_id}']");
    let text = b.text(&row).await;
    assert!(text.contains(name), "{text}");
    assert!(text.contains(&key_id), "{text}");
    b.screenshot("08-new-entry").await;
    b.resize(390, 844).await;
    b.screenshot("08-new-entry-phone").await;
    b.resize(1280, 900).await;

    // The Key ID and secret read off the page sign a call that succeeds.
    let key = Key {
        id: key_id.clone(),
        secret,
    };
    let (s, me) = app.psk(&key, "GET", "/me", b"").await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["authentication"], "ARMOR-PSK");

    // Delete in the page, with confirmation; the same call is refused.
    b.click(&format!("{row} a[data-action=delete]")).await;
    b.wait_path(&format!("/portal/keys/{key_id}/delete")).await;
    b.screenshot("09-delete-confirm").await;
    b.click("#confirm-delete").await;
    b.wait_path("/portal/keys").await;
    b.find("#notice").await;
    assert_eq!(b.count(&row).await, 0, "the row is gone");
    b.screenshot("10-deleted").await;
    let (s, body) = app.psk(&key, "GET", "/me", b"").await;
    assert_eq!(s, 401, "{body}");

    // The audit log shows what happened, filtered by event.
    b.click("#nav-audit").await;
    b.wait_path("/portal/audit").await;
    b.find("#filter-event").await;
    b.goto(&format!("{}/portal/audit?event=key_deleted", app.url))
        .await;
    let table = b.text("#audit-table").await;
    assert!(
        table.contains("key_deleted") && table.contains(&key_id),
        "{table}"
    );
    assert!(!table.contains("key_created"), "{table}");
    b.screenshot("11-audit-log").await;

    // Sign out: the session's token is revoked.
    b.click("#sign-out").await;
    b.wait_path("/portal/login").await;
    b.goto(&format!("{}/portal/keys", app.url)).await;
    b.wait_path("/portal/login").await;

    // A user without the key permissions sees why, with their names.
    app.add_user("reader@example.com", "Read Only", 1);
    sign_in(&b, &app, "reader@example.com", ADMIN_PASSWORD).await;
    b.click("#nav-users").await;
    b.wait_path("/portal/users").await;
    let help = b.text("#permission-help").await;
    assert!(help.contains("Users Read"), "{help}");
    b.click("#tab-keys").await;
    b.wait_path("/portal/keys").await;
    let help = b.text("#permission-help").await;
    for perm in [
        "API Keys All Read",
        "API Keys All Delete",
        "API Keys Self Manage",
    ] {
        assert!(help.contains(perm), "{perm} missing from: {help}");
    }
    assert_eq!(b.count("#add-key").await, 0);
    b.screenshot("12-no-permission").await;
    b.resize(390, 844).await;
    b.screenshot("12-no-permission-phone").await;

    // Nothing on any page broke the Content-Security-Policy.
    let v = b.script("return document.styleSheets.length").await;
    assert_eq!(v, Value::from(1), "the stylesheet loads under the CSP");
}

/// A client that keeps cookies by hand and does not follow redirects.
struct Portal {
    url: String,
    http: reqwest::Client,
    cookies: Vec<(String, String)>,
}

fn set_cookies(h: &HeaderMap) -> Vec<String> {
    h.get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"_csrf\" value=\"").expect("a CSRF field") + 20;
    html[at..].split('"').next().unwrap().to_owned()
}

impl Portal {
    fn new(app: &TestApp) -> Portal {
        Portal {
            url: app.url.clone(),
            http: reqwest::Client::builder()
                .redirect(Policy::none())
                .no_proxy()
                .timeout(std::time::Duration::from_secs(20))
                .build()
                .unwrap(),
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, h: &HeaderMap) {
        for c in set_cookies(h) {
            let pair = c.split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != k);
            if !v.is_empty() {
                self.cookies.push((k.to_owned(), v.to_owned()));
            }
        }
    }

    async fn get(&mut self, path: &str) -> (u16, HeaderMap, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .header("Cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        let (s, h) = (r.status().as_u16(), r.headers().clone());
        self.keep(&h);
        (s, h, r.text().await.unwrap())
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> (u16, HeaderMap, String) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .header("Cookie", self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        let (s, h) = (r.status().as_u16(), r.headers().clone());
        self.keep(&h);
        (s, h, r.text().await.unwrap())
    }

    async fn login(&mut self, email: &str, password: &str) -> (u16, HeaderMap, String) {
        let (_, _, page) = self.get("/portal/login").await;
        let csrf = csrf_in(&page);
        self.post(
            "/portal/login",
            &[("_csrf", &csrf), ("email", email), ("password", password)],
        )
        .await
    }
}

#[tokio::test]
async fn form_posts_without_the_csrf_token_are_refused() {
    let app = spawn_app().await;
    let mut p = Portal::new(&app);

    // The sign-in form: its double-submit cookie and field must match.
    let (s, h, page) = p.get("/portal/login").await;
    assert_eq!(s, 200);
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert!(
        !page.contains("<script>") && !page.contains("style="),
        "nothing inline"
    );
    let login_cookie = set_cookies(&h).join("\n");
    assert!(
        login_cookie.contains("HttpOnly") && login_cookie.contains("SameSite=Strict"),
        "{login_cookie}"
    );
    let good = csrf_in(&page);
    for form in [
        vec![("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD)],
        vec![
            ("_csrf", "0000"),
            ("email", ADMIN_EMAIL),
            ("password", ADMIN_PASSWORD),
        ],
    ] {
        let (s, h, _) = p.post("/portal/login", &form).await;
        assert_eq!(s, 403);
        assert!(set_cookies(&h)
            .iter()
            .all(|c| !c.starts_with("armor_session=")));
    }
    // Without the cookie, the field alone is not enough.
    let mut stranger = Portal::new(&app);
    let (s, _, _) = stranger
        .post(
            "/portal/login",
            &[
                ("_csrf", &good),
                ("email", ADMIN_EMAIL),
                ("password", ADMIN_PASSWORD),
            ],
        )
        .await;
    assert_eq!(s, 403);

    // A wrong password gets the API's message.
    let (s, _, page) = p.login(ADMIN_EMAIL, "wrong").await;
    assert_eq!(s, 401);
    assert!(page.contains("The user name or password is incorrect."));

    // Signed in: the cookie's flags, Secure behind a TLS proxy.
    let (s, h, _) = p.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(s, 303);
    assert_eq!(h[LOCATION], "/portal/account");
    let session = set_cookies(&h)
        .into_iter()
        .find(|c| c.starts_with("armor_session="))
        .unwrap();
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict"));
    assert!(!session.contains("Secure"), "{session}");
    let (_, _, page) = p.get("/portal/keys").await;
    let csrf = csrf_in(&page);

    // Every form post needs the session's token.
    for (path, form) in [
        ("/portal/keys", vec![("name", "no token")]),
        ("/portal/keys", vec![("name", "bad token"), ("_csrf", "x")]),
        ("/portal/logout", vec![]),
        ("/portal/users/1/disable", vec![]),
        (
            "/portal/users",
            vec![
                ("email", "x@example.com"),
                ("first_name", "X"),
                ("last_name", "Y"),
            ],
        ),
    ] {
        let (s, _, page) = p.post(path, &form).await;
        assert_eq!(s, 403, "{path} {form:?}");
        assert!(page.contains("security token"), "{page}");
    }
    // Another session's token does not do either.
    let mut other = Portal::new(&app);
    other.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (_, _, other_page) = other.get("/portal/keys").await;
    let other_csrf = csrf_in(&other_page);
    assert_ne!(other_csrf, csrf);
    let (s, _, _) = p
        .post("/portal/keys", &[("name", "cross"), ("_csrf", &other_csrf)])
        .await;
    assert_eq!(s, 403);
    let token = app.login().await;
    let (s, keys) = app_keys(&app, &token).await;
    assert_eq!(s, 200);
    assert_eq!(keys, Value::Array(vec![]), "no key was created");

    // With the token the same post works, and the secret page is not cached.
    let (s, h, page) = p
        .post("/portal/keys", &[("name", "with token"), ("_csrf", &csrf)])
        .await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(h["cache-control"], "no-store");
    assert!(page.contains("never be shown again"));

    // Behind a TLS-terminating proxy the cookie is Secure.
    let r = p
        .http
        .get(format!("{}/portal/login", app.url))
        .header("X-Forwarded-Proto", "https")
        .send()
        .await
        .unwrap();
    assert!(set_cookies(r.headers())
        .iter()
        .all(|c| c.contains("; Secure")));

    // Signed out: the token is revoked, the pages send to sign-in even
    // with the old cookie.
    let before = p.cookies.clone();
    let (s, h, _) = p.post("/portal/logout", &[("_csrf", &csrf)]).await;
    assert_eq!((s, h[LOCATION].to_str().unwrap()), (303, "/portal/login"));
    p.cookies = before;
    let (s, h, _) = p.get("/portal/keys").await;
    assert_eq!((s, h[LOCATION].to_str().unwrap()), (303, "/portal/login"));
}

async fn app_keys(app: &TestApp, token: &str) -> (u16, Value) {
    let r = app
        .http
        .get(format!("{}/users/1/keys", app.url))
        .header("Authorization", format!("FH-AUTH {token}"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The section of the users table's row for `email`.
fn user_row<'a>(page: &'a str, email: &str) -> &'a str {
    let at = page
        .find(&format!("<td data-label=\"Email\">{email}</td>"))
        .unwrap();
    let start = page[..at].rfind("<tr").unwrap();
    let end = at + page[at..].find("</tr>").unwrap();
    &page[start..end]
}

#[tokio::test]
async fn administrators_invite_disable_enable_and_unlock_users() {
    let app = spawn_app().await;
    let uid = app.add_user("worker@example.com", "User", 1);
    let mut p = Portal::new(&app);
    p.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (s, _, page) = p.get("/portal/users").await;
    assert_eq!(s, 200);
    let csrf = csrf_in(&page);
    assert!(user_row(&page, "worker@example.com").contains("Not locked"));

    // Disable: the user can no longer sign in; enable again.
    let (s, h, _) = p
        .post(&format!("/portal/users/{uid}/disable"), &[("_csrf", &csrf)])
        .await;
    assert_eq!(
        (s, h[LOCATION].to_str().unwrap()),
        (303, "/portal/users?notice=disabled")
    );
    let (_, _, page) = p.get("/portal/users?notice=disabled").await;
    assert!(user_row(&page, "worker@example.com").contains(">disabled<"));
    let (s, _) = app
        .post_json(
            "/auth/authorize",
            serde_json::json!({"username": "worker@example.com", "password": ADMIN_PASSWORD}),
            None,
        )
        .await;
    assert_eq!(s, 401);
    p.post(&format!("/portal/users/{uid}/enable"), &[("_csrf", &csrf)])
        .await;
    let (_, _, page) = p.get("/portal/users").await;
    assert!(user_row(&page, "worker@example.com").contains(">active<"));

    // Wrong passwords lock the login; the page shows it and unlocks it.
    for _ in 0..5 {
        app.post_json(
            "/auth/authorize",
            serde_json::json!({"username": "worker@example.com", "password": "wrong"}),
            None,
        )
        .await;
    }
    let (_, _, page) = p.get("/portal/users").await;
    assert!(user_row(&page, "worker@example.com").contains("Locked"));
    let mut worker = Portal::new(&app);
    let (s, _, body) = worker.login("worker@example.com", ADMIN_PASSWORD).await;
    assert_eq!(s, 401, "locked: the API's one answer");
    assert!(body.contains("The user name or password is incorrect."));
    let (s, _, _) = p
        .post(&format!("/portal/users/{uid}/unlock"), &[("_csrf", &csrf)])
        .await;
    assert_eq!(s, 303);
    let (_, _, page) = p.get("/portal/users").await;
    assert!(user_row(&page, "worker@example.com").contains("Not locked"));
    let (s, _, _) = worker.login("worker@example.com", ADMIN_PASSWORD).await;
    assert_eq!(s, 303);

    // Invite a new user.
    let (s, h, _) = p
        .post(
            "/portal/users",
            &[
                ("_csrf", &csrf),
                ("email", "new@example.com"),
                ("first_name", "New"),
                ("last_name", "Person"),
                ("role", "User"),
            ],
        )
        .await;
    assert_eq!(
        (s, h[LOCATION].to_str().unwrap()),
        (303, "/portal/users?notice=invited")
    );
    let (_, _, page) = p.get("/portal/users").await;
    let row = user_row(&page, "new@example.com");
    assert!(
        row.contains(">invited<") && row.contains("Resend invitation"),
        "{row}"
    );

    // A user without Users Manage sees no actions and is refused them.
    let (_, _, page) = worker.get("/portal/users").await;
    assert!(page.contains("id=\"permission-help\"") && page.contains("Users Read"));
    let wcsrf = csrf_in(&page);
    let (s, _, _) = worker
        .post(
            &format!("/portal/users/{uid}/disable"),
            &[("_csrf", &wcsrf)],
        )
        .await;
    assert_eq!(s, 403);
}

fn base32_decode(text: &str) -> Vec<u8> {
    let (mut bits, mut n, mut out) = (0u32, 0, Vec::new());
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => panic!("not base32: {text}"),
        };
        bits = (bits << 5) | u32::from(v);
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

#[tokio::test]
async fn sign_in_asks_for_the_second_factor_when_enrolled() {
    use armor_server::core::totp;
    let app = spawn_app().await;
    app.add_user("mfa@example.com", "User", 1);
    let token = app.login_as("mfa@example.com", ADMIN_PASSWORD).await;
    let auth = format!("FH-AUTH {token}");
    let (s, b) = app
        .post_json(
            "/usersecurity/validatephoneapppin",
            serde_json::json!({}),
            Some(&auth),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let secret = base32_decode(b["secret"].as_str().unwrap());
    let t = crate::api::now();
    let (s, b) = app
        .post_json(
            "/usersecurity/validatephoneapppin",
            serde_json::json!({"pin": totp::code_at(&secret, t, 6)}),
            Some(&auth),
        )
        .await;
    assert_eq!(s, 200, "{b}");

    let mut p = Portal::new(&app);
    let (s, _, page) = p.login("mfa@example.com", ADMIN_PASSWORD).await;
    assert_eq!(s, 401);
    assert!(page.contains("id=\"mfa-code\""), "the code field is shown");
    assert!(!page.contains(ADMIN_PASSWORD), "the password is not echoed");
    let csrf = csrf_in(&page);
    let code = totp::code_at(&secret, t + 30, 6);
    let (s, h, page) = p
        .post(
            "/portal/login",
            &[
                ("_csrf", &csrf),
                ("email", "mfa@example.com"),
                ("password", ADMIN_PASSWORD),
                ("code", &code),
            ],
        )
        .await;
    assert_eq!(s, 303, "{page}");
    assert_eq!(h[LOCATION], "/portal/account");
    let (s, _, _) = p.get("/portal/keys").await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn the_users_page_lists_members_whose_home_is_another_account() {
    let app = spawn_app().await;
    let other: i64 = app
        .admin(&["add-account", "--name", "Other"], &[])
        .parse()
        .unwrap();
    // A user of account 1, given a role in the other account too.
    let guest = app.add_user("guest@example.com", "User", 1);
    app.add_user("owner2@example.com", "Account Owner", other);
    app.admin(
        &[
            "set-role",
            "--user",
            &guest.to_string(),
            "--account",
            &other.to_string(),
            "--role",
            "Read Only",
        ],
        &[],
    );
    // The API lists the guest among the other account's users.
    let token = app.login_as("owner2@example.com", ADMIN_PASSWORD).await;
    let r = app
        .http
        .get(format!("{}/users", app.url))
        .header("Authorization", format!("FH-AUTH {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let listed = r.text().await.unwrap();
    assert!(listed.contains("guest@example.com"), "{listed}");

    // So does the portal: both rows, the guest with the role held here,
    // and no actions on a user administered in their home account.
    let mut p = Portal::new(&app);
    p.login("owner2@example.com", ADMIN_PASSWORD).await;
    let (s, _, page) = p.get("/portal/users").await;
    assert_eq!(s, 200, "{page}");
    let row = user_row(&page, "guest@example.com");
    assert!(row.contains(">Read Only<"), "{row}");
    assert!(row.contains("Not locked"), "{row}");
    assert!(!row.contains("data-action"), "{row}");
    assert!(user_row(&page, "owner2@example.com").contains(">Account Owner<"));
}
