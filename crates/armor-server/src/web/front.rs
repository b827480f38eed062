//! The service hyper calls for each request: the tracing layer, then the
//! front layer ([`super::front`]), which dispatches on the route table,
//! called directly rather than through `axum::middleware::from_fn` layers
//! and routers (each of which boxed and cloned services per request).
//!
//! Per connection it holds the peer ([`PeerInfo`]) and per request it
//! works out the sender ([`crate::conn::client::Client`]: the peer, or the
//! client a trusted proxy names). Those, the gateway and the refusal
//! limiter are handed to the front layer as arguments. A route's handler
//! gets the caller and the sender in its state (`auth::RouteState`) for
//! its extractors; the portal's pages in the request's extensions.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use axum::Router;
use hyper::body::Incoming;
use tower::Service;

use super::AppState;
use crate::conn::client::{Client, TrustedProxies};
use crate::conn::PeerInfo;
use crate::gateway::Gateway;
use crate::limit::AuthFailureLimiter;

/// What the front layer ([`super::front`]) works with: passed to it
/// directly, not through each request's extensions.
pub(super) struct Inner {
    pub(super) core: AppState,
    /// Behind the route table: the portal's pages, and 404.
    pub(super) portal: Router,
    /// Whether `/metrics` is served here (else 404: it has a listener of
    /// its own).
    pub(super) with_metrics: bool,
    pub(super) gateway: Option<Arc<Gateway>>,
    pub(super) limiter: Option<Arc<AuthFailureLimiter>>,
    trusted: TrustedProxies,
}

/// The application, as served on the main listener.
#[derive(Clone)]
pub struct App(Arc<Inner>);

impl App {
    /// `with_metrics`: see [`super::app`].
    pub fn new(
        core: AppState,
        with_metrics: bool,
        gateway: Option<Arc<Gateway>>,
        limiter: Option<Arc<AuthFailureLimiter>>,
        trusted: TrustedProxies,
    ) -> Self {
        let portal = super::portal_router(core.clone());
        App(Arc::new(Inner {
            core,
            portal,
            with_metrics,
            gateway,
            limiter,
            trusted,
        }))
    }
}

/// The service of one connection.
#[derive(Clone)]
pub struct Connection {
    app: App,
    /// `None` in process ([`App::service`]): the caller puts the sender
    /// ([`Client`]) in the request's extensions.
    peer: Option<PeerInfo>,
}

impl App {
    /// The service of one accepted connection, from `peer`.
    pub fn connection(&self, peer: PeerInfo) -> Connection {
        Connection {
            app: self.clone(),
            peer: Some(peer),
        }
    }

    /// The service without a connection, for calls in process (`oneshot`).
    pub fn service(&self) -> Connection {
        Connection {
            app: self.clone(),
            peer: None,
        }
    }
}

/// A request's answer, as both services below give it.
type Answer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl Connection {
    fn answer(&self, req: Request) -> Answer {
        let inner = &self.app.0;
        // In process, the caller has put the sender in the extensions.
        let client = match &self.peer {
            Some(peer) => Some(inner.trusted.client(peer.addr.ip(), req.headers())),
            None => req.extensions().get::<Client>().copied(),
        };
        let (app, peer) = (self.app.clone(), self.peer.clone());
        Box::pin(async move {
            let front = |req, made| super::front(&app.0, peer, client, made, req);
            Ok(super::trace::layer(req, front).await)
        })
    }
}

/// As served on a connection ([`crate::conn::serve`]).
impl hyper::service::Service<hyper::Request<Incoming>> for Connection {
    type Response = Response;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, req: hyper::Request<Incoming>) -> Answer {
        self.answer(req.map(Body::new))
    }
}

/// In process (`oneshot`).
impl Service<Request> for Connection {
    type Response = Response;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Answer {
        self.answer(req)
    }
}
