//! `armor bench`: an HTTP/1.1 load generator that can sign every request
//! with a fresh nonce (which wrk cannot), so ARMOR-PSK routes are measured
//! under the replay guard as real clients use them.
//!
//! Each of `--connections` keeps one keep-alive connection and sends one
//! request at a time. Closed loop (default): the next request leaves when
//! the answer arrives. Open loop (`--rate R`): each connection is given
//! R/connections requests per second at fixed intended times, met to
//! within microseconds (not on the runtime timer's millisecond ticks), and
//! latency is counted from the intended time (no coordinated omission).
//! Latencies go to an HDR histogram (ns, 3 digits).
//!
//! The same code drives the unauthenticated baseline (`--auth none`), so
//! both sides of a ratio carry the same client cost.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use armor_psk::{SecretKey, SignableRequest, SigningKey};
use armor_server::clock::Clock as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rand::Rng as _;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// No Authorization header.
    None,
    /// `FH-AUTH <token>` from ARMOR_TOKEN.
    Token,
    /// ARMOR-PSK, signed per request with a fresh nonce.
    Psk,
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Target, e.g. http://127.0.0.1:8080/me (http only; the query is sent
    /// and, for ARMOR-PSK, left out of the signature as the vendor does).
    url: String,
    #[arg(long, default_value = "GET")]
    method: String,
    /// Request body of this many bytes (JSON-ish filler).
    #[arg(long, default_value_t = 0)]
    body_size: usize,
    #[arg(long, value_enum, default_value_t = AuthMode::None)]
    auth: AuthMode,
    /// ARMOR-PSK keys, one "key-id secret" per line (as written by `armor
    /// admin seed-keys`); requests take them in turn. Without it: --key-id
    /// and ARMOR_SECRET_KEY.
    #[arg(long)]
    keys_file: Option<PathBuf>,
    #[arg(long, env = "ARMOR_KEY_ID")]
    key_id: Option<String>,
    /// Use at most this many keys of the file.
    #[arg(long)]
    max_keys: Option<usize>,
    /// Concurrent connections.
    #[arg(short, long, default_value_t = 64)]
    connections: usize,
    /// Measured seconds.
    #[arg(short, long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds run before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Open loop: total requests per second (default: closed loop). Each
    /// thread spins between sends to meet the intended times, so pin the
    /// load generator away from the server (`taskset`).
    #[arg(long)]
    rate: Option<f64>,
    /// Runtime worker threads (default: the CPUs this process may use).
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// A parsed `http://host:port/path?query`.
struct Target {
    authority: String,
    path_and_query: String,
    path: String,
}

fn parse_url(url: &str) -> anyhow::Result<Target> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("only http:// URLs are supported"))?;
    let (authority, pq) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        bail!("no host in {url}");
    }
    let path = pq.split('?').next().unwrap_or("/").to_owned();
    Ok(Target {
        authority: authority.to_owned(),
        path_and_query: pq.to_owned(),
        path,
    })
}

/// How requests are authorized.
enum Auth {
    None,
    Token(String),
    Psk(Vec<(String, SigningKey)>),
}

fn load_auth(args: &BenchArgs) -> anyhow::Result<Auth> {
    match args.auth {
        AuthMode::None => Ok(Auth::None),
        AuthMode::Token => {
            let t = std::env::var("ARMOR_TOKEN").context("--auth token needs ARMOR_TOKEN")?;
            Ok(Auth::Token(t))
        }
        AuthMode::Psk => {
            let mut keys = Vec::new();
            if let Some(path) = &args.keys_file {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    let (id, secret) = line
                        .trim()
                        .split_once(' ')
                        .ok_or_else(|| anyhow!("{}: expected \"key-id secret\"", path.display()))?;
                    keys.push((id.to_owned(), SigningKey::from_bytes(secret.as_bytes())));
                    if args.max_keys.is_some_and(|m| keys.len() >= m) {
                        break;
                    }
                }
            } else {
                let id = args
                    .key_id
                    .clone()
                    .ok_or_else(|| anyhow!("--auth psk needs --keys-file or --key-id"))?;
                let secret = std::env::var(crate::client::SECRET_KEY_ENV)
                    .context("--key-id needs ARMOR_SECRET_KEY")?;
                keys.push((id, SigningKey::new(&SecretKey::new(secret))));
            }
            if keys.is_empty() {
                bail!("no keys");
            }
            Ok(Auth::Psk(keys))
        }
    }
}

/// What one connection measured.
struct Tally {
    hist: Histogram<u64>,
    ok: u64,
    non_2xx: u64,
    io_errors: u64,
    first_error: Option<String>,
    /// Open loop: how late each measured request left after its intended
    /// time, or after the previous answer when that came later (the load
    /// generator's own lateness, counted in the latencies).
    send_lag: Histogram<u64>,
    /// Requests slower than [`SLOW`].
    slow: u64,
    /// The 10-ms windows (of send times, from the start: intended ones in
    /// the open loop) holding a request slower than [`SLOW`], each once.
    slow_windows: Vec<u32>,
}

/// Records `d` in `h` in ns (at least 1 µs, the histogram's floor).
fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1_000));
}

/// A request slower than this marks its window in [`Tally::slow_windows`].
const SLOW: Duration = Duration::from_millis(1);
const WINDOW: Duration = Duration::from_millis(10);

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Tally {
            hist: Histogram::new_with_bounds(1_000, 60_000_000_000, 3)?,
            ok: 0,
            non_2xx: 0,
            io_errors: 0,
            first_error: None,
            send_lag: Histogram::new_with_bounds(1_000, 60_000_000_000, 3)?,
            slow: 0,
            slow_windows: Vec::new(),
        })
    }
    fn merge(&mut self, o: Tally) -> anyhow::Result<()> {
        self.hist.add(&o.hist)?;
        self.ok += o.ok;
        self.non_2xx += o.non_2xx;
        self.io_errors += o.io_errors;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        self.send_lag.add(&o.send_lag)?;
        self.slow += o.slow;
        self.slow_windows.extend(o.slow_windows);
        Ok(())
    }

    /// Spells of slow requests: runs of slow windows, joined across at
    /// most one window without a slow request. A stall of the machine
    /// (another process, the hypervisor) makes one, whatever the route.
    fn slow_spells(&mut self) -> usize {
        self.slow_windows.sort_unstable();
        self.slow_windows.dedup();
        let mut spells = 0;
        let mut last = None;
        for &w in &self.slow_windows {
            if last.is_none_or(|l: u32| w > l.saturating_add(2)) {
                spells += 1;
            }
            last = Some(w);
        }
        spells
    }
}

struct Shared {
    target: Target,
    method: hyper::Method,
    body: Bytes,
    auth: Auth,
    /// Measurement window: [start, end).
    start: Instant,
    end: Instant,
    /// Open loop: the gap between one connection's intended sends.
    interval: Option<Duration>,
}

fn unix_now() -> u64 {
    armor_server::clock::SystemClock.now()
}

async fn connect(authority: &str) -> anyhow::Result<http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sleeps on the runtime's timer until shortly before `at`.
///
/// tokio's timer fires on millisecond ticks: sleeping to each intended
/// time would send an open loop's requests in bursts, one burst per tick
/// (45 requests at once at 45 k req/s), and the latencies would measure
/// each burst's queue rather than the server. The timer takes a
/// connection to within two ticks; [`spin_until`] does the rest.
async fn sleep_near(at: Instant) {
    const TICKS: Duration = Duration::from_millis(2);
    if let Some(coarse) = at.checked_sub(TICKS) {
        if coarse > Instant::now() {
            tokio::time::sleep_until(coarse.into()).await;
        }
    }
}

/// Yields until `at` (at once when it has passed). The runtime polls its
/// I/O between two rounds of yields, so answers are still read; the spin
/// costs CPU, which is the load generator's own when it is pinned
/// (`taskset`, as `bench/run` does).
async fn spin_until(at: Instant) {
    while Instant::now() < at {
        tokio::task::yield_now().await;
    }
}

/// One connection's loop until the end of the window.
async fn connection(sh: Arc<Shared>, index: usize, connections: usize) -> anyhow::Result<Tally> {
    let mut tally = Tally::new()?;
    let mut sender = connect(&sh.target.authority).await?;
    let nonce_prefix: u64 = rand::thread_rng().gen();
    let mut counter: u64 = 0;
    let mut key_index = index;
    // Open loop: spread the connections' first sends over one interval.
    let mut intended = sh.interval.map(|iv| {
        let offset = iv.mul_f64(index as f64 / connections.max(1) as f64);
        Instant::now() + offset
    });
    // When the connection's previous answer arrived.
    let mut free_at = Instant::now();
    loop {
        // Open loop: the timer takes the connection to near its slot, the
        // request is built and signed, and the connection sends at the slot
        // itself, so that neither the timer nor signing adds to a latency.
        if let Some(next) = intended {
            if next >= sh.end {
                break;
            }
            sleep_near(next).await;
        }
        let mut req = hyper::Request::builder()
            .method(sh.method.clone())
            .uri(sh.target.path_and_query.as_str())
            .header(hyper::header::HOST, sh.target.authority.as_str());
        match &sh.auth {
            Auth::None => {}
            Auth::Token(t) => {
                req = req.header(hyper::header::AUTHORIZATION, format!("FH-AUTH {t}"))
            }
            Auth::Psk(keys) => {
                let (key_id, key) = &keys[key_index % keys.len()];
                key_index = key_index.wrapping_add(connections);
                counter += 1;
                let nonce = format!("{nonce_prefix:016x}{counter:016x}");
                let value = SignableRequest {
                    key_id,
                    method: sh.method.as_str(),
                    request_path: &sh.target.path,
                    nonce: &nonce,
                    timestamp: unix_now(),
                    body: &sh.body,
                }
                .authorization(key);
                req = req.header(hyper::header::AUTHORIZATION, value);
            }
        }
        if !sh.body.is_empty() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(sh.body.clone()))?;
        let sent_at = match (intended.as_mut(), sh.interval) {
            (Some(next), Some(iv)) => {
                // Early, the connection waits for its slot; behind, the
                // request has been due since then. Either way its latency
                // counts from it.
                spin_until(*next).await;
                let due = *next;
                // The load generator's own lateness: from the slot, or
                // from the previous answer when it came after the slot
                // (the connection was busy; that wait is the server's).
                if due >= sh.start {
                    record(&mut tally.send_lag, due.max(free_at).elapsed());
                }
                *next += iv;
                due
            }
            _ => Instant::now(),
        };
        if sent_at >= sh.end {
            break;
        }
        let result = async {
            sender.ready().await?;
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            resp.into_body().collect().await?;
            anyhow::Ok(status)
        }
        .await;
        let done = Instant::now();
        free_at = done;
        let measured = sent_at >= sh.start;
        match result {
            Ok(status) => {
                if measured {
                    let took = done.duration_since(sent_at);
                    record(&mut tally.hist, took);
                    if took > SLOW {
                        tally.slow += 1;
                        let window =
                            sent_at.duration_since(sh.start).as_nanos() / WINDOW.as_nanos();
                        let window = u32::try_from(window).unwrap_or(u32::MAX);
                        if tally.slow_windows.last() != Some(&window) {
                            tally.slow_windows.push(window);
                        }
                    }
                    if status.is_success() {
                        tally.ok += 1;
                    } else {
                        tally.non_2xx += 1;
                        if tally.first_error.is_none() {
                            tally.first_error = Some(format!("HTTP {status}"));
                        }
                    }
                }
            }
            Err(e) => {
                if measured {
                    tally.io_errors += 1;
                }
                if tally.first_error.is_none() {
                    tally.first_error = Some(format!("{e:#}"));
                }
                if done >= sh.end {
                    break;
                }
                sender = match connect(&sh.target.authority).await {
                    Ok(s) => s,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
            }
        }
    }
    Ok(tally)
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.connections == 0 || args.duration <= 0.0 || args.warmup < 0.0 {
        bail!("--connections and --duration must be positive");
    }
    let target = parse_url(&args.url)?;
    let auth = load_auth(&args)?;
    let method = hyper::Method::from_bytes(args.method.to_ascii_uppercase().as_bytes())?;
    let body: Bytes = b"{\"items\":[{\"id\":0,\"name\":\"vm-0000\"}]}"
        .iter()
        .copied()
        .cycle()
        .take(args.body_size)
        .collect::<Vec<u8>>()
        .into();
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    let interval = match args.rate {
        Some(r) if r > 0.0 => Some(Duration::from_secs_f64(args.connections as f64 / r)),
        Some(_) => bail!("--rate must be positive"),
        None => None,
    };
    let start = Instant::now() + Duration::from_secs_f64(args.warmup);
    let end = start + Duration::from_secs_f64(args.duration);
    let shared = Arc::new(Shared {
        target,
        method,
        body,
        auth,
        start,
        end,
        interval,
    });
    let mut total = rt.block_on(async {
        let tasks: Vec<_> = (0..args.connections)
            .map(|i| tokio::spawn(connection(shared.clone(), i, args.connections)))
            .collect();
        let mut total = Tally::new()?;
        for t in tasks {
            total.merge(t.await??)?;
        }
        anyhow::Ok(total)
    })?;
    let spells = total.slow_spells();
    let secs = args.duration;
    let count = total.ok + total.non_2xx;
    let rps = total.ok as f64 / secs;
    let q = |p: f64| total.hist.value_at_quantile(p) as f64 / 1_000.0;
    let h = &total.hist;
    let over_slow = 100.0 * total.slow as f64 / h.len().max(1) as f64;
    let lag = &total.send_lag;
    let lag_us = |p: f64| lag.value_at_quantile(p) as f64 / 1_000.0;
    if args.json {
        let out = serde_json::json!({
            "url": args.url,
            "method": shared.method.as_str(),
            "auth": format!("{:?}", args.auth).to_ascii_lowercase(),
            "connections": args.connections,
            "rate": args.rate,
            "seconds": secs,
            "requests": count,
            "ok": total.ok,
            "non_2xx": total.non_2xx,
            "io_errors": total.io_errors,
            "rps": rps,
            "mean_us": h.mean() / 1_000.0,
            "p50_us": q(0.50),
            "p90_us": q(0.90),
            "p99_us": q(0.99),
            "p999_us": q(0.999),
            "max_us": h.max() as f64 / 1_000.0,
            "over_1ms_pct": over_slow,
            "slow_spells": spells,
            "send_lag_p99_us": args.rate.map(|_| lag_us(0.99)),
            "send_lag_max_us": args.rate.map(|_| lag.max() as f64 / 1_000.0),
            "first_error": total.first_error,
        });
        println!("{out}");
    } else {
        println!(
            "{} {} ({:?}), {} connections, {}: {count} requests in {secs:.1} s",
            shared.method,
            args.url,
            args.auth,
            args.connections,
            match args.rate {
                Some(r) => format!("open loop at {r:.0} req/s"),
                None => "closed loop".into(),
            }
        );
        println!(
            "  {rps:.0} req/s ok; non-2xx {}, I/O errors {}",
            total.non_2xx, total.io_errors
        );
        println!(
            "  latency µs: p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}",
            q(0.50),
            q(0.90),
            q(0.99),
            q(0.999),
            h.max() as f64 / 1_000.0
        );
        println!("  over 1 ms: {over_slow:.2} % of requests, in {spells} spells");
        if args.rate.is_some() {
            println!(
                "  sent after the intended time by: p99 {:.0} µs, max {:.0} µs",
                lag_us(0.99),
                lag.max() as f64 / 1_000.0
            );
        }
        if let Some(e) = &total.first_error {
            println!("  first error: {e}");
        }
    }
    Ok(if total.ok == 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits until `at`, to within a few microseconds, as a connection
    /// does around building its request.
    async fn wait_until(at: Instant) {
        sleep_near(at).await;
        spin_until(at).await;
    }

    /// A slot already past is not waited for: a connection that is behind
    /// sends at once.
    #[tokio::test(flavor = "current_thread")]
    async fn a_slot_already_past_is_not_waited_for() {
        let past = Instant::now();
        tokio::time::sleep(Duration::from_millis(2)).await;
        let before = Instant::now();
        wait_until(past).await;
        assert!(
            before.elapsed() < Duration::from_millis(50),
            "waited for a time already past"
        );
    }

    /// Slow windows close together are one spell, wherever they came
    /// from; windows three apart are two.
    #[test]
    fn slow_windows_group_into_spells() {
        let mut a = Tally::new().unwrap();
        a.slow_windows = vec![7, 8, 40];
        let mut b = Tally::new().unwrap();
        b.slow_windows = vec![9, 10, 43, 100];
        a.merge(b).unwrap();
        assert_eq!(a.slow_spells(), 4);
        assert_eq!(Tally::new().unwrap().slow_spells(), 0);
        // Merged out of order: sorted before grouping.
        let mut c = Tally::new().unwrap();
        c.slow_windows = vec![10, 30];
        let mut d = Tally::new().unwrap();
        d.slow_windows = vec![20, 31];
        c.merge(d).unwrap();
        assert_eq!(c.slow_spells(), 3);
        // One window without a slow request between two: one spell.
        let mut e = Tally::new().unwrap();
        e.slow_windows = vec![5, 7, u32::MAX];
        assert_eq!(e.slow_spells(), 2);
    }

    /// A wait shorter than the timer's tick ends near its time, not on the
    /// next tick (where tokio's own sleep ends, about 1 ms later): otherwise
    /// an open loop sends in bursts. The median of several waits, so that
    /// a preempted one does not decide.
    #[tokio::test(flavor = "current_thread")]
    async fn short_waits_do_not_wait_for_the_timers_next_tick() {
        let wait = Duration::from_micros(50);
        let took = wait + median_lateness(21, wait).await;
        assert!(took < Duration::from_micros(500), "median wait {took:?}");
    }

    /// The median, over `n` waits of `wait` each, of how long after its
    /// time a wait ended.
    async fn median_lateness(n: usize, wait: Duration) -> Duration {
        let mut late = Vec::new();
        for _ in 0..n {
            let at = Instant::now() + wait;
            wait_until(at).await;
            late.push(at.elapsed());
        }
        late.sort();
        late[n / 2]
    }

    /// A wait past the timer's margin ends near its time too: the timer
    /// does not oversleep into the slot.
    #[tokio::test(flavor = "current_thread")]
    async fn long_waits_end_near_their_time() {
        let late = median_lateness(11, Duration::from_millis(5)).await;
        assert!(
            late < Duration::from_micros(500),
            "median lateness {late:?}"
        );
    }
}
