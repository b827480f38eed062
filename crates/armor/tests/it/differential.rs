//! Differential test: the client signer (`armor_psk::client`, signing a real
//! `reqwest::Request` as `armor call` does) against the server's verifier
//! (`KeyVerifier::psk_begin` / `psk_finish`, with a key created in a real store),
//! over 10 000 random requests. Each must verify as sent; then single-field
//! and single-byte changes of the same request, tried first, must all be
//! refused (and must not burn the nonce: the original is accepted after).

use armor_psk::client::{sign_request_with, SignOptions};
use armor_psk::{SecretKey, SigningKey};
use armor_server::core::Core;
use rand::{Rng as _, SeedableRng as _};

const T0: u64 = 1_763_880_000;
const CASES: usize = 10_000;
const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
/// Path characters a client sends as they are (no client-side escaping).
const PATH_CHARS: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@";
const QUERY_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-._~=&";

fn pick(rng: &mut impl rand::Rng, set: &[u8], len: usize) -> String {
    (0..len)
        .map(|_| set[rng.gen_range(0..set.len())] as char)
        .collect()
}

/// The server's verdict on one request as it arrives.
async fn verdict(
    core: &Core,
    method: &str,
    path: &str,
    query: Option<&str>,
    body: &[u8],
    auth: &str,
) -> Result<String, String> {
    let begun = core.verifier.psk_begin(auth).map_err(|e| e.to_string())?;
    let req = armor_psk::Request {
        method,
        path,
        query,
        body,
    };
    core.verifier
        .psk_finish(&begun, &req, &Default::default())
        .await
        .map(|id| id.key_id.to_string())
        .map_err(|e| e.to_string())
}

/// One printable byte of `s` at `at` replaced by a different printable one.
fn substitute(s: &str, at: usize, set: &[u8], rng: &mut impl rand::Rng) -> String {
    let mut b = s.as_bytes().to_vec();
    let old = b[at];
    loop {
        let c = set[rng.gen_range(0..set.len())];
        if c != old {
            b[at] = c;
            break;
        }
    }
    String::from_utf8(b).unwrap()
}

/// What was changed, then method, path, query, body and Authorization.
type Change = (
    &'static str,
    String,
    String,
    Option<String>,
    Vec<u8>,
    String,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_signer_and_server_verifier_agree_on_10k_requests_and_refuse_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let (core, owner) = Core::scratch(dir.path(), T0, 1 << 20).await.unwrap();
    let created = core
        .keys
        .create_key(&owner, 1, "diff", &Default::default(), None)
        .await
        .unwrap();
    let key_id = created.row.id.clone();
    let key = SigningKey::new(&SecretKey::new(created.secret.to_string()));
    let other_key = core
        .keys
        .create_key(&owner, 1, "other", &Default::default(), None)
        .await
        .unwrap();
    let wrong = SigningKey::new(&SecretKey::new(other_key.secret.to_string()));

    let http = reqwest::Client::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x00a2_0b5e_ed00_0008);
    let (mut accepted, mut refused_changes) = (0usize, 0usize);
    for case in 0..CASES {
        let method = METHODS[rng.gen_range(0..METHODS.len())];
        let segments = rng.gen_range(1..5);
        let path: String = (0..segments)
            .map(|_| {
                let n = rng.gen_range(1..12);
                format!("/{}", pick(&mut rng, PATH_CHARS, n))
            })
            .collect();
        let query = rng.gen_bool(0.4).then(|| {
            let n = rng.gen_range(1..20);
            pick(&mut rng, QUERY_CHARS, n)
        });
        let body: Vec<u8> = if rng.gen_bool(0.5) {
            let n = rng.gen_range(1..300);
            (0..n).map(|_| rng.gen()).collect()
        } else {
            Vec::new()
        };
        let sign_query = rng.gen_bool(0.5);
        let nonce = format!("{:032x}", rng.gen::<u128>());
        let ts = T0 - 300 + rng.gen_range(0..=600);

        let url = match &query {
            Some(q) => format!("http://127.0.0.1:9/x{path}?{q}"),
            None => format!("http://127.0.0.1:9/x{path}"),
        };
        let mut req = http
            .request(method.parse().unwrap(), &url)
            .body(body.clone())
            .build()
            .unwrap();
        let signed = sign_request_with(
            &mut req,
            &key_id,
            &key,
            &nonce,
            ts,
            SignOptions { sign_query },
        )
        .unwrap();
        assert_eq!(
            (signed.nonce.as_str(), signed.timestamp),
            (nonce.as_str(), ts)
        );
        // What goes on the wire.
        let wire_path = req.url().path().to_owned();
        let wire_query = req.url().query().map(str::to_owned);
        let auth = req.headers()["authorization"].to_str().unwrap().to_owned();
        let wire_body = req
            .body()
            .and_then(|b| b.as_bytes())
            .unwrap_or(b"")
            .to_vec();
        assert_eq!(wire_body, body);

        // Changes first: each refused.
        let creds_at = auth.find(' ').unwrap() + 1;
        let mut changes: Vec<Change> = Vec::new();
        let base = || {
            (
                method.to_owned(),
                wire_path.clone(),
                wire_query.clone(),
                wire_body.clone(),
                auth.clone(),
            )
        };
        {
            let (_, p, q, b, a) = base();
            let m = loop {
                let m = METHODS[rng.gen_range(0..METHODS.len())];
                if m != method {
                    break m.to_owned();
                }
            };
            changes.push(("method", m, p, q, b, a));
        }
        {
            let (m, p, q, b, a) = base();
            let at = rng.gen_range(1..p.len());
            let p = if p.as_bytes()[at] == b'/' {
                format!("{p}x")
            } else {
                substitute(&p, at, PATH_CHARS, &mut rng)
            };
            changes.push(("path", m, p, q, b, a));
        }
        if sign_query {
            if let Some(q0) = &wire_query {
                let (m, p, _, b, a) = base();
                let at = rng.gen_range(0..q0.len());
                let q = substitute(q0, at, QUERY_CHARS, &mut rng);
                changes.push(("query", m, p, Some(q), b, a));
                let (m, p, _, b, a) = base();
                changes.push(("query dropped", m, p, None, b, a));
            }
        }
        {
            let (m, p, q, mut b, a) = base();
            if b.is_empty() {
                b.push(rng.gen());
            } else {
                let at = rng.gen_range(0..b.len());
                b[at] ^= rng.gen_range(1..=255u8);
            }
            changes.push(("body", m, p, q, b, a));
        }
        for _ in 0..3 {
            // Any byte of the credentials: key id, signature, nonce,
            // timestamp or a separator.
            let (m, p, q, b, a) = base();
            let at = rng.gen_range(creds_at..a.len());
            let a = substitute(&a, at, PATH_CHARS, &mut rng);
            changes.push(("header byte", m, p, q, b, a));
        }
        {
            // The same request signed with another key's secret.
            let mut r2 = http
                .request(method.parse().unwrap(), &url)
                .body(body.clone())
                .build()
                .unwrap();
            sign_request_with(
                &mut r2,
                &key_id,
                &wrong,
                &nonce,
                ts,
                SignOptions { sign_query },
            )
            .unwrap();
            let a = r2.headers()["authorization"].to_str().unwrap().to_owned();
            let (m, p, q, b, _) = base();
            changes.push(("secret", m, p, q, b, a));
        }
        for (what, m, p, q, b, a) in &changes {
            let v = verdict(&core, m, p, q.as_deref(), b, a).await;
            assert!(
                v.is_err(),
                "case {case}: change of {what} accepted: {m} {p} {q:?} {a}"
            );
            refused_changes += 1;
        }

        // The request as sent: accepted, as this key.
        let v = verdict(
            &core,
            method,
            &wire_path,
            wire_query.as_deref(),
            &wire_body,
            &auth,
        )
        .await;
        assert_eq!(
            v.as_deref(),
            Ok(key_id.as_str()),
            "case {case}: {method} {url}"
        );
        accepted += 1;
        // And once only.
        let again = verdict(
            &core,
            method,
            &wire_path,
            wire_query.as_deref(),
            &wire_body,
            &auth,
        )
        .await;
        assert!(again.is_err(), "case {case}: replay accepted");
    }
    assert_eq!(accepted, CASES);
    assert!(refused_changes >= CASES * 6, "{refused_changes}");
    eprintln!("differential: {accepted} accepted, {refused_changes} changes refused");
}
