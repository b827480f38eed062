//! Usage counted by two nodes adds up in the same buckets.

use super::*;

/// Accepted and `nonce_reused` of `key` summed over a day of hours, as
/// `app` answers.
async fn totals(app: &TestApp, auth: &str, key: &Key) -> (u64, u64) {
    let (s, _, body) = app
        .send(
            "GET",
            &format!("/users/1/keys/{}/usage?bucket=hour", key.id),
            &[("Authorization", auth)],
            vec![],
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let mut accepted = 0;
    let mut refused = serde_json::Map::new();
    for b in body["buckets"].as_array().unwrap() {
        accepted += b["accepted"].as_u64().unwrap();
        for (code, n) in b["refused"].as_object().unwrap() {
            let sum = refused.get(code).and_then(|v| v.as_u64()).unwrap_or(0);
            refused.insert(code.clone(), (sum + n.as_u64().unwrap()).into());
        }
    }
    (
        accepted,
        refused
            .get("nonce_reused")
            .and_then(|v| v.as_u64())
            .unwrap_or(0),
    )
}

/// The rest of the current minute, the flush period (5 s) and a margin
/// for a loaded machine.
const WRITTEN_WITHIN: Duration = Duration::from_secs(90);

#[tokio::test]
async fn usage_counted_on_two_nodes_adds_up_in_the_same_buckets() {
    let c = cluster().await;
    let token = c.a.login().await;
    let auth = fh(&token);
    let key = c.a.create_key(&token, 1, "both").await;
    // B's first 200 is its first accepted count (the 401s before it knew
    // the key name no key and are not counted; those after, if any, are
    // refusals of its own, not looked at here).
    until_status(&c.b, &key, 200, NEW_KEY_SEEN).await;
    for _ in 0..2 {
        assert_eq!(signed(&c.a, &fresh_auth(&key)).await.0, 200);
    }
    let replayed = fresh_auth(&key);
    assert_eq!(signed(&c.a, &replayed).await.0, 200);
    assert_eq!(signed(&c.b, &replayed).await.0, 401);

    // A shows its own counts at once, and B's once B has written them
    // (a minute's counts go to the store within seconds of its end): 3
    // accepted on A, 1 accepted and the replay refused on B.
    let want = (4, 1);
    let start = Instant::now();
    loop {
        let got = totals(&c.a, &auth, &key).await;
        if got == want {
            break;
        }
        assert!(
            got.0 >= 3 && start.elapsed() < WRITTEN_WITHIN,
            "A answers {got:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // B says the same (its own pending counts plus what A wrote).
    let start = Instant::now();
    while totals(&c.b, &auth, &key).await != want {
        assert!(start.elapsed() < WRITTEN_WITHIN, "B never agreed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
