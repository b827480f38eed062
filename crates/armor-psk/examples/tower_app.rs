//! An axum app protected by the ARMOR-PSK tower layer, with keys in memory.
//!
//! ```text
//! cargo run -p armor-psk --features tower --example tower_app
//! ARMOR_SECRET_KEY=apsk_demo_secret armor call --key-id demo-key \
//!     --endpoint http://127.0.0.1:3000 /hello
//! ```
//!
//! `tests/tower_layer.rs` drives the same [`app`] in-process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;

use armor_psk::layer::{ArmorPskLayer, KeyLookup, VerifiedKey};
use armor_psk::replay::FingerprintKey;
use armor_psk::{MemoryReplayGuard, SecretKey, SigningKey};
use axum::body::Bytes;
use axum::routing::{get, post};
use axum::{Extension, Router};

/// Keys by id: the owner's name and the HMAC key.
pub struct Keys(pub HashMap<String, (String, SigningKey)>);

impl Keys {
    pub fn with(pairs: &[(&str, &str, &str)]) -> Self {
        Keys(
            pairs
                .iter()
                .map(|(id, owner, secret)| {
                    let key = SigningKey::new(&SecretKey::new((*secret).to_owned()));
                    ((*id).to_owned(), ((*owner).to_owned(), key))
                })
                .collect(),
        )
    }
}

impl KeyLookup for Keys {
    type Identity = String;
    fn lookup(&self, key_id: &str) -> Option<(String, SigningKey)> {
        self.0.get(key_id).cloned()
    }
}

type Verified = Extension<VerifiedKey<String>>;

async fn hello(Extension(v): Verified) -> String {
    format!("hello {} (key {})", v.identity, v.key_id)
}

async fn echo(Extension(v): Verified, body: Bytes) -> String {
    format!("{} sent {} bytes", v.identity, body.len())
}

/// The app: two routes behind the layer. `clock` gives Unix seconds.
pub fn app(keys: Keys, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Router {
    let layer = ArmorPskLayer::new(
        keys,
        Arc::new(MemoryReplayGuard::new(1 << 20)),
        FingerprintKey::new(rand_key()),
        clock,
    )
    .max_body(64 * 1024);
    Router::new()
        .route("/hello", get(hello))
        .route("/echo", post(echo))
        .layer(layer)
}

fn rand_key() -> [u8; 16] {
    // Any 16 secret bytes; a single process may draw them at start.
    let mut k = [0u8; 16];
    let seed = std::collections::hash_map::RandomState::new();
    for (i, b) in k.iter_mut().enumerate() {
        use std::hash::BuildHasher as _;
        *b = (seed.hash_one(i) & 0xff) as u8;
    }
    k
}

#[allow(clippy::disallowed_methods)]
fn system_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[allow(dead_code)]
#[tokio::main]
async fn main() {
    let keys = Keys::with(&[("demo-key", "demo", "apsk_demo_secret")]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000")
        .await
        .unwrap();
    println!("listening on http://{}", listener.local_addr().unwrap());
    axum::serve(listener, app(keys, system_now)).await.unwrap();
}
