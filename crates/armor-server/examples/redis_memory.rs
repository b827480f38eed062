//! Redis memory per accepted ARMOR-PSK request: claims made through the
//! node's own claim path ([`Cluster`]) at RATE requests per second (RATE
//! distinct timestamps per simulated second, spread over 1,000 key ids,
//! for SECONDS seconds), then `INFO memory` of every primary before and
//! after (after a warm-up, without the replication backlog, which fills
//! to its fixed size whatever is stored), divided by the claims made.
//!
//! ```text
//! cargo run -p armor-server --example redis_memory -- URL MODE RATE SECONDS
//! scripts/with-redis-cluster sh -c 'cargo run -p armor-server --example \
//!     redis_memory -- "$ARMOR_TEST_REDIS_CLUSTER" cluster 10000 30'
//! ```
//!
//! MODE is `single` or `cluster`. The figures are in docs/deployment.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Instant;

use armor_psk::Fingerprints;
use armor_server::clock::{Clock, SystemClock};
use armor_server::cluster::{ClaimError, Cluster, RedisMode};
use armor_server::ports::{BoxFuture, InvalidationHandler};

struct NoKeys;

impl InvalidationHandler for NoKeys {
    fn reload_keys(
        &self,
        _user_id: Option<i64>,
    ) -> BoxFuture<'_, Result<usize, armor_server::Error>> {
        Box::pin(async { Ok(0) })
    }
}

/// splitmix64.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Used memory, the replication backlog's part of it and microseconds
/// spent in scripts, summed over the primaries among `urls`.
fn used_memory(urls: &[&str]) -> (u64, u64, u64) {
    let mut total = 0;
    let mut backlog = 0;
    let mut usec = 0;
    for url in urls {
        let client = redis::Client::open(*url).unwrap();
        let mut c = client.get_connection().unwrap();
        let repl: String = redis::cmd("INFO").arg("replication").query(&mut c).unwrap();
        if !repl.contains("role:master") {
            continue;
        }
        let _: () = redis::cmd("MEMORY")
            .arg("PURGE")
            .query(&mut c)
            .unwrap_or(());
        let info: String = redis::cmd("INFO").arg("memory").query(&mut c).unwrap();
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or("0")
                .trim()
                .parse::<u64>()
                .unwrap()
        };
        total += field("used_memory:");
        backlog += field("mem_replication_backlog:");
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut c)
            .unwrap();
        for l in stats.lines().filter(|l| l.starts_with("cmdstat_eval")) {
            usec += l
                .split(',')
                .find_map(|f| f.strip_prefix("usec="))
                .and_then(|u| u.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    (total, backlog, usec)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, mode, rate, seconds] = &args[..] else {
        panic!("usage: redis_memory URL single|cluster RATE SECONDS");
    };
    let mode = RedisMode::parse(mode, None).unwrap();
    let rate: u64 = rate.parse().unwrap();
    let seconds: u64 = seconds.parse().unwrap();
    let urls: Vec<&str> = url.split(',').collect();

    let cluster = Cluster::with_mode(url, &mode, 4).await.unwrap();
    let handler = Arc::new(NoKeys);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    cluster.spawn(Arc::downgrade(&handler), clock.clone());
    cluster.start_up(clock.as_ref()).await;
    while !cluster.ready() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let key_ids: Vec<String> = (0..1000).map(|i| format!("{:016x}", mix(i))).collect();
    let now = clock.now();
    // Warm-up: one claim per key id, so what Redis allocates once (one
    // latency histogram per command name, about 24 KB each with
    // `latency-tracking`, on by default from Redis 7) is not counted per
    // request.
    let warm_up = key_ids.iter().enumerate().map(|(i, key_id)| {
        let n = u64::MAX / 2 + i as u64;
        let fp = Fingerprints {
            pair: u128::from(mix(n)) << 64 | u128::from(mix(n + 1)),
            signature: u128::from(mix(n + 2)) << 64 | u128::from(mix(n + 3)),
        };
        let cluster = cluster.clone();
        async move { cluster.claim(key_id, &fp, now, now + 300, now).await }
    });
    futures_util::future::join_all(warm_up).await;
    let (before, backlog_before, usec_before) = used_memory(&urls);
    let started = Instant::now();
    let mut made = 0u64;
    let mut unanswered = 0u64;
    for s in 0..seconds {
        // One simulated second: RATE requests with timestamp now + 1 + s.
        let ts = now + 1 + s;
        // In rounds of at most 1,000 at once, so each is answered in time.
        let mut claims: Vec<_> = (0..rate)
            .map(|i| {
                let n = s * rate + i;
                let fp = Fingerprints {
                    pair: u128::from(mix(2 * n)) << 64 | u128::from(mix(2 * n + 1)),
                    signature: u128::from(mix(3 * n + 7)) << 64 | u128::from(mix(5 * n + 11)),
                };
                let key_id = &key_ids[(mix(n) % 1000) as usize];
                let cluster = cluster.clone();
                async move { cluster.claim(key_id, &fp, ts, ts + 300, now).await }
            })
            .collect();
        while !claims.is_empty() {
            let round: Vec<_> = claims.drain(..claims.len().min(1000)).collect();
            for r in futures_util::future::join_all(round).await {
                match r {
                    Ok(()) => made += 1,
                    // Not answered in time (a loaded machine); read only
                    // runs without any.
                    Err(ClaimError::Unavailable) => unanswered += 1,
                    Err(e) => panic!("claim refused: {e:?}"),
                }
            }
        }
    }
    // Let replication drain: what is left in a replica's output buffer is
    // not held per request.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let (after, backlog_after, usec_after) = used_memory(&urls);
    // The replication backlog fills up to its fixed size
    // (`repl-backlog-size`, 1 MB by default) as a primary writes, whatever
    // the keys held: not memory per request.
    let backlog = backlog_after.saturating_sub(backlog_before);
    let held = (after - before).saturating_sub(backlog);
    println!(
        "{made} claims ({unanswered} not answered in time) in {:.1} s; used_memory {before} -> {after}, \
         of which replication backlog {backlog_before} -> {backlog_after}: {:.0} bytes per accepted \
         request ({:.0} with the backlog); Redis script time {:.2} us per claim",
        started.elapsed().as_secs_f64(),
        held as f64 / made as f64,
        (after - before) as f64 / made as f64,
        (usec_after - usec_before) as f64 / made as f64
    );
}
