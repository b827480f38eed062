//! The outbox sent by SMTP (`--smtp-url`): a tiny SMTP sink in the test
//! receives the invitation, whose code then activates the user; the row
//! is marked sent; phone codes stay pending; a permanent refusal leaves the
//! message for `armor admin outbox`. Codes never reach the logs.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;

use super::*;

/// A message as the sink received it.
#[derive(Debug, Clone)]
struct Received {
    from: String,
    to: Vec<String>,
    data: String,
}

/// An SMTP server speaking just enough of the protocol; `reject_rcpt`
/// answers every RCPT with 550.
struct Sink {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
}

async fn sink(reject_rcpt: bool) -> Sink {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let store = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                w.write_all(b"220 sink ESMTP\r\n").await.unwrap();
                let mut cur = Received {
                    from: String::new(),
                    to: Vec::new(),
                    data: String::new(),
                };
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        b"250 sink\r\n"
                    } else if upper.starts_with("MAIL FROM:") {
                        cur.from = line[10..].trim().to_owned();
                        b"250 OK\r\n"
                    } else if upper.starts_with("RCPT TO:") {
                        if reject_rcpt {
                            b"550 no such user\r\n"
                        } else {
                            cur.to.push(line[8..].trim().to_owned());
                            b"250 OK\r\n"
                        }
                    } else if upper == "DATA" {
                        w.write_all(b"354 go ahead\r\n").await.unwrap();
                        let mut data = String::new();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            data.push_str(l.strip_prefix('.').unwrap_or(&l));
                            data.push('\n');
                        }
                        cur.data = data;
                        store.lock().unwrap().push(cur.clone());
                        b"250 queued\r\n"
                    } else if upper == "QUIT" {
                        w.write_all(b"221 bye\r\n").await.unwrap();
                        return;
                    } else {
                        // RSET, NOOP, ...
                        b"250 OK\r\n"
                    };
                    if w.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Sink { port, got }
}

impl Sink {
    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The first message to `addr`, waiting up to 10 s.
    async fn wait_for(&self, addr: &str) -> Received {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .got
                .lock()
                .unwrap()
                .iter()
                .find(|m| m.to.iter().any(|t| t.contains(addr)))
                .cloned();
            if let Some(m) = found {
                return m;
            }
            assert!(Instant::now() < deadline, "no mail to {addr} within 10 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Polls `armor admin outbox` until `done` holds for the pending rows.
async fn wait_outbox(app: &TestApp, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = app.outbox();
        if done(&rows) {
            return rows;
        }
        assert!(Instant::now() < deadline, "outbox still {rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn invite(app: &TestApp, token: &str, email: &str) {
    let (s, b) = app
        .post_json(
            "/users/",
            json!({"email": email, "firstName": "Mia", "lastName": "Lo", "roles": ["User"]}),
            Some(&format!("FH-AUTH {token}")),
        )
        .await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn invitations_go_out_by_smtp_and_the_code_works() {
    let sink = sink(false).await;
    let app = spawn_app_with(&["--smtp-url", &sink.url()]).await;
    let owner = app.login().await;
    invite(&app, &owner, "mia@example.com").await;

    let mail = sink.wait_for("mia@example.com").await;
    assert_eq!(mail.from, "<armor@localhost>");
    assert_eq!(mail.to, ["<mia@example.com>"]);
    assert!(
        mail.data.contains("Subject: Your armor invitation"),
        "{}",
        mail.data
    );
    assert!(mail.data.contains("To: mia@example.com"), "{}", mail.data);
    let at = mail.data.find("activation code is ").expect("a code") + 19;
    let code = mail.data[at..].split(';').next().unwrap().to_owned();
    assert_eq!(code.len(), 24, "{code}");

    // The row is marked sent: no longer pending, and the code is nowhere
    // in the database (sealed while pending, wiped once sent).
    wait_outbox(&app, |rows| rows.is_empty()).await;
    super::codes::assert_nowhere_in_the_database(&app, std::slice::from_ref(&code), "sent by SMTP");

    let (s, b) = app
        .post_json(
            "/users/setpassword",
            json!({"code": code, "password": "mia's own passphrase"}),
            None,
        )
        .await;
    assert_eq!((s, &b), (200, &json!(true)));
    app.login_as("mia@example.com", "mia's own passphrase")
        .await;

    // A phone code has no transport: it stays pending for the operator.
    let (s, b) = app
        .post_json(
            "/usersecurity/validatemfaphone",
            json!({"phoneNumber": "+15551234567"}),
            Some(&format!("FH-AUTH {owner}")),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rows = app.outbox();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["channel"], "sms");
    assert_eq!(rows[0]["attempts"], 0);
    assert_eq!(sink.got.lock().unwrap().len(), 1);

    // Logs: the message id and domain, never the code or the address.
    let logs = app.logs_text();
    assert!(!logs.contains(&code), "the code is in the logs");
    assert!(logs.contains("outbox: message sent"), "{logs}");
    assert!(!logs.contains("mia@example.com"), "{logs}");
}

#[tokio::test]
async fn a_refused_recipient_is_left_for_the_operator() {
    let sink = sink(true).await;
    let app = spawn_app_with(&[
        "--smtp-url",
        &sink.url(),
        "--smtp-from",
        "Armor <noreply@example.org>",
    ])
    .await;
    let owner = app.login().await;
    invite(&app, &owner, "gone@example.com").await;
    // 550 is permanent: no retry, the message stays pending with the error.
    let rows = wait_outbox(&app, |rows| {
        rows.first()
            .is_some_and(|r| r["lastError"].as_str().is_some())
    })
    .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["recipient"], "gone@example.com");
    assert_eq!(rows[0]["lastError"], "permanent 550");
    assert_eq!(rows[0]["attempts"], 10);
    assert!(sink.got.lock().unwrap().is_empty());
    let logs = app.logs_text();
    assert!(logs.contains("left for `armor admin outbox`"), "{logs}");
    // The operator can still read it out and mark it delivered.
    app.admin(&["outbox", "--mark-sent"], &[]);
    assert!(app.outbox().is_empty());
}
