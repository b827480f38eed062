//! Password hashing off the async workers. Argon2id takes tens of
//! milliseconds of CPU and 19 MiB per call: run on a worker thread, a few
//! logins at once stall every other request. Here each hash or check runs
//! on tokio's blocking pool, and a semaphore bounds how many run at once
//! (one per core by default). A caller that waits longer than `max_wait`
//! for a permit gets 503 `server_busy` with `Retry-After` instead of joining
//! an unbounded queue: the server is short of CPU, not this client of
//! quota, and a prompt refusal costs less than a login that answers after
//! its client has given up.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use zeroize::Zeroizing;

use crate::crypto;
use crate::error::Error;

/// Longest wait for a hashing permit before 503.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(10);

/// The bounded pool passwords are hashed and checked on.
#[derive(Debug, Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    max_wait: Duration,
}

/// The right to run one hash: taken before anything is counted, so a
/// login refused as busy leaves no trace.
#[derive(Debug)]
pub struct HashPermit {
    _permit: OwnedSemaphorePermit,
}

impl Default for Hasher {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Hasher::new(cores, DEFAULT_MAX_WAIT)
    }
}

impl Hasher {
    pub fn new(concurrent: usize, max_wait: Duration) -> Self {
        Hasher {
            permits: Arc::new(Semaphore::new(concurrent.max(1))),
            max_wait,
        }
    }

    /// Waits for a permit, at most `max_wait`.
    pub async fn permit(&self) -> Result<HashPermit, Error> {
        match tokio::time::timeout(self.max_wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(HashPermit { _permit: p }),
            Ok(Err(_)) => Err(Error::Internal("the hashing pool is closed".into())),
            Err(_) => Err(Error::Busy { retry_after: 1 }),
        }
    }

    /// Hashes a new password (taking a permit).
    pub async fn hash(&self, password: &str) -> Result<String, Error> {
        let permit = self.permit().await?;
        let password = Zeroizing::new(password.to_owned());
        run(permit, move || crypto::hash_password(&password)).await?
    }
}

impl HashPermit {
    /// Checks `password` against `stored`, or against `dummy` when there is
    /// none (the same work either way; see [`crypto::verify_password`]).
    pub async fn verify(
        self,
        password: &str,
        stored: Option<String>,
        dummy: Arc<str>,
    ) -> Result<bool, Error> {
        let password = Zeroizing::new(password.to_owned());
        run(self, move || {
            crypto::verify_password(&password, stored.as_deref(), &dummy)
        })
        .await
    }
}

/// Runs `work` on the blocking pool; the permit is released when `work`
/// ends, even if the caller has gone (a dropped request does not free a
/// slot whose hash is still running).
async fn run<T: Send + 'static>(
    permit: HashPermit,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(move || {
        let out = work();
        drop(permit);
        out
    })
    .await
    .map_err(|e| Error::Internal(format!("password hashing task failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a one-thread runtime, work on the pool must not stop a task
    /// spawned beside it: the work here waits for that task's signal, which
    /// could never come if the work ran on the runtime's only thread.
    #[tokio::test(flavor = "current_thread")]
    async fn hashing_runs_off_the_async_worker() {
        let h = Hasher::new(1, DEFAULT_MAX_WAIT);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let beside = tokio::spawn(async move { tx.send(()).unwrap() });
        let permit = h.permit().await.unwrap();
        let got = run(permit, move || {
            rx.recv_timeout(Duration::from_secs(20)).is_ok()
        })
        .await
        .unwrap();
        assert!(got, "the blocking work held the async worker");
        beside.await.unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn verify_and_hash_agree_and_a_full_pool_refuses_promptly() {
        let h = Hasher::new(1, Duration::from_millis(50));
        let stored = h.hash("correct horse").await.unwrap();
        let dummy: Arc<str> = h.hash("dummy").await.unwrap().into();
        let p = h.permit().await.unwrap();
        // The only permit is held: the next caller is refused, not queued.
        assert!(matches!(
            h.permit().await,
            Err(Error::Busy { retry_after: 1 })
        ));
        assert!(p
            .verify("correct horse", Some(stored.clone()), dummy.clone())
            .await
            .unwrap());
        let p = h.permit().await.unwrap();
        assert!(!p
            .verify("wrong", Some(stored), dummy.clone())
            .await
            .unwrap());
        let p = h.permit().await.unwrap();
        assert!(!p.verify("dummy", None, dummy).await.unwrap());
    }
}
