//! Serving a listener: each accepted connection gets its own task and
//! hyper's HTTP/1 server, nothing in between. HTTP/1 is all there is to
//! serve: hyper's HTTP/1 parser drops a connection that opens with an
//! HTTP/2 preface.
//!
//! On `shutdown`, no connection is accepted any more; each open one
//! finishes the request it is serving, then closes, and [`serve`] returns
//! once they all have, or after [`DRAIN_LIMIT`] (so that what the server
//! writes on its way out is written even if an answer streams for ever).
//! A connection hyper has read nothing from is closed at once, even if a
//! request is already on its way (as when any server closes a kept-alive
//! connection); one whose head has begun is served, within
//! `--header-timeout`. A connection's task reads one flag per wake-up to
//! learn of the stop, and the stop wakes every open connection's task.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::Duration;

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
        // Without a timer, hyper has no head timeout of its own: the
        // connection's phase timers (`--header-timeout`) are the limit.
        // hyper's default parser is relied on by the inspector: it refuses
        // a head it cannot parse and closes the connection, and never
        // skips a header line (so no `ignore_invalid_headers` or other
        // leniency here without the inspector's parse matching it).
        let conn = http1::Builder::new()
            .header_read_timeout(None)
            .serve_connection(TokioIo::new(io), service(peer));
        // Counted open until the task ends, however it ends.
        let open = Open::new(stop.clone());
        tokio::spawn(async move {
            let open = open;
            let mut conn = pin!(conn);
            let (mut known, mut stopping) = (None::<Waker>, false);
            let _ = poll_fn(|cx| {
                if !known.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    known = Some(cx.waker().clone());
                    open.register(cx.waker());
                }
                if !stopping && open.stop.stopping.load(Ordering::Acquire) {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
                conn.as_mut().poll(cx)
            })
            .await;
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_LIMIT, stop.drain())
        .await
        .is_err()
    {
        let left = stop.lock().len();
        tracing::warn!(connections = left, "stopped with connections still open");
    }
}

/// The longest a stop waits for the open connections to finish.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// One open connection, counted until dropped (the end of its task, or
/// the task's unwinding).
struct Open {
    stop: Arc<Stop>,
    id: u64,
}

impl Open {
    fn new(stop: Arc<Stop>) -> Self {
        let id = stop.next.fetch_add(1, Ordering::Relaxed);
        stop.lock().insert(id, None);
        Open { stop, id }
    }

    /// The waker of this connection's task. A task that has not run yet
    /// when the stop comes reads the flag when it first does (and hyper,
    /// having read nothing, closes the connection).
    fn register(&self, waker: &Waker) {
        if let Some(slot) = self.stop.lock().get_mut(&self.id) {
            *slot = Some(waker.clone());
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let mut open = self.stop.lock();
        open.remove(&self.id);
        if open.is_empty() && self.stop.stopping.load(Ordering::Acquire) {
            self.stop.closed.notify_one();
        }
    }
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
    /// Tells every connection to finish, and waits until all have.
    async fn drain(&self) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn a_stop_is_not_held_up_by_a_connection_whose_task_panicked() {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let listener = InspectingListener::new(tcp, super::super::Limits::default());
        let service = |_| {
            hyper::service::service_fn(|_: Request<Incoming>| async move {
                let fail = true;
                assert!(!fail, "the handler fails");
                Ok::<_, Infallible>(Response::new(axum::body::Body::empty()))
            })
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(serve(listener, service, async {
            let _ = stopped.await;
        }));
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // The connection ends with its task.
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
        stop.send(()).unwrap();
        // Well within the drain limit, which would end the stop anyway.
        let within = Duration::from_secs(5).min(DRAIN_LIMIT / 2);
        tokio::time::timeout(within, served)
            .await
            .expect("the stop waited for a connection whose task had panicked")
            .unwrap();
    }
}
