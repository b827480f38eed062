//! Heap allocations per request on the server's side: `/ping`,
//! ARMOR-PSK `/auth/whoami` and `/me`, FH-AUTH `/me`.
//!
//! The whole server (`Application`, as `armor serve` runs it, SQLite and
//! the memory replay guard) runs on one current-thread runtime on its own
//! thread, and only that thread's allocations are counted (the client
//! runs on another): hyper, the front layer, authentication and the
//! handlers. Threads the server hands work to (SQLite's, the
//! password-hashing pool) are not counted; none of the measured requests
//! uses them once warm.
//!
//!     cargo bench -p armor-server --bench allocs
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;

use armor_psk::{SignableRequest, SigningKey};
use armor_server::clock::{Clock as _, SystemClock};
use armor_server::core::Via;
use armor_server::{Application, Settings};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

#[global_allocator]
static ALLOC: alloc_count::Counting = alloc_count::Counting;

const EMAIL: &str = "bench@example.com";
const PASSWORD: &str = "bench-password-1";
const WARMUP: usize = 500;
const REQUESTS: usize = 5000;

struct Served {
    addr: SocketAddr,
    key_id: String,
    secret: String,
    token: String,
}

fn serve(dir: std::path::PathBuf) -> Served {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        alloc_count::count_this_thread();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let settings = Settings {
                listen: "127.0.0.1:0".into(),
                data_dir: dir,
                admin_email: Some(EMAIL.into()),
                admin_password: Some(PASSWORD.to_owned().into()),
                ..Default::default()
            };
            let app = Application::build(settings, Arc::new(SystemClock))
                .await
                .unwrap();
            let core = app.core();
            let owner = core
                .access
                .principal(
                    1,
                    1,
                    None,
                    Via::Password {
                        token_hash: [0; 32],
                    },
                )
                .await
                .unwrap();
            let key = core
                .keys
                .create_key(&owner, 1, "allocs", &Default::default(), None)
                .await
                .unwrap();
            let code = core
                .sessions
                .authorize(EMAIL, PASSWORD, None, None)
                .await
                .unwrap();
            let token = core.sessions.exchange_code(&code, None).await.unwrap();
            tx.send(Served {
                addr: app.local_addr().unwrap(),
                key_id: key.row.id.clone(),
                secret: key.secret.to_string(),
                token: token.to_string(),
            })
            .unwrap();
            app.run_until(std::future::pending()).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

#[derive(Clone, Copy)]
enum Auth {
    None,
    Psk,
    Token,
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path().to_owned());
    let key = SigningKey::from_bytes(served.secret.as_bytes());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(served.addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        let mut counter = 0u64;
        println!("heap allocations per request, server side ({REQUESTS} requests each, one keep-alive connection):");
        for (name, path, auth) in [
            ("GET /ping", "/ping", Auth::None),
            ("ARMOR-PSK GET /auth/whoami", "/auth/whoami", Auth::Psk),
            ("ARMOR-PSK GET /me", "/me", Auth::Psk),
            ("FH-AUTH GET /me", "/me", Auth::Token),
        ] {
            let mut before = 0;
            for i in 0..WARMUP + REQUESTS {
                if i == WARMUP {
                    before = alloc_count::allocations();
                }
                let mut req = hyper::Request::builder()
                    .uri(path)
                    .header(hyper::header::HOST, "bench");
                match auth {
                    Auth::None => {}
                    Auth::Token => {
                        req = req.header(
                            hyper::header::AUTHORIZATION,
                            format!("FH-AUTH {}", served.token),
                        );
                    }
                    Auth::Psk => {
                        counter += 1;
                        let nonce = format!("{counter:032x}");
                        let value = SignableRequest {
                            key_id: &served.key_id,
                            method: "GET",
                            request_path: path,
                            nonce: &nonce,
                            timestamp: SystemClock.now(),
                            body: b"",
                        }
                        .authorization(&key);
                        req = req.header(hyper::header::AUTHORIZATION, value);
                    }
                }
                let req = req.body(Full::new(Bytes::new())).unwrap();
                sender.ready().await.unwrap();
                let resp = sender.send_request(req).await.unwrap();
                let status = resp.status();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                assert!(status.is_success(), "{name}: {status} {body:?}");
            }
            let per = (alloc_count::allocations() - before) as f64 / REQUESTS as f64;
            println!("{name}: {per:.1}");
        }
    });
}
