//! Serving a listener: each accepted connection gets its own task and
//! hyper's HTTP/1 server, nothing in between. HTTP/1 is all there is to
//! serve: the inspector under every connection refuses anything else (an
//! HTTP/2 preface included).
//!
//! On `shutdown`, no connection is accepted any more; each open one
//! finishes the request it is serving, then closes, and [`serve`] returns
//! once they all have. A connection's task reads one flag per wake-up to
//! learn of it, and the stop wakes every open connection's task.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

use axum::extract::Request;
use axum::response::Response;
use axum::serve::Listener as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;

use super::{InspectingListener, PeerInfo};

/// Serves `listener`'s connections, each with the service `service` makes
/// for its peer, until `shutdown` completes and the open connections have
/// closed.
pub async fn serve<S>(
    mut listener: InspectingListener,
    service: impl Fn(PeerInfo) -> S,
    shutdown: impl Future<Output = ()>,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let stop = Arc::new(Stop::default());
    let mut shutdown = pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let conn = http1::Builder::new().serve_connection(TokioIo::new(io), service(peer));
        let stop = stop.clone();
        let id = stop.open();
        tokio::spawn(async move {
            let mut conn = pin!(conn);
            let (mut known, mut stopping) = (None::<Waker>, false);
            let _ = poll_fn(|cx| {
                if !known.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    known = Some(cx.waker().clone());
                    stop.register(id, cx.waker());
                }
                if !stopping && stop.stopping.load(Ordering::Acquire) {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
                conn.as_mut().poll(cx)
            })
            .await;
            stop.close(id);
        });
    }
    drop(listener);
    stop.all().await;
}

/// What the connections of one listener learn the stop from.
#[derive(Default)]
struct Stop {
    stopping: AtomicBool,
    next: AtomicU64,
    /// The open connections, with their task's waker once it has run.
    open: Mutex<HashMap<u64, Option<Waker>>>,
    /// Signalled when the last connection has closed, once stopping.
    closed: Notify,
}

impl Stop {
    /// Counts a new connection open, before its task is spawned.
    fn open(&self) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, None);
        id
    }

    /// The waker of connection `id`'s task. A task that has not run yet
    /// when the stop comes reads the flag when it first does.
    fn register(&self, id: u64, waker: &Waker) {
        if let Some(slot) = self.lock().get_mut(&id) {
            *slot = Some(waker.clone());
        }
    }

    fn close(&self, id: u64) {
        let mut open = self.lock();
        open.remove(&id);
        if open.is_empty() && self.stopping.load(Ordering::Acquire) {
            self.closed.notify_one();
        }
    }

    /// Tells every connection to finish, and waits until all have.
    async fn all(&self) {
        self.stopping.store(true, Ordering::Release);
        let closed = self.closed.notified();
        {
            let open = self.lock();
            if open.is_empty() {
                return;
            }
            open.values().flatten().for_each(Waker::wake_by_ref);
        }
        closed.await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Option<Waker>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}
