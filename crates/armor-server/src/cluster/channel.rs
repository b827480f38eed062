//! The invalidation channel: publishing, and the subscription that hands
//! messages to this node (see the module documentation of
//! [`crate::cluster`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::{FutureExt as _, StreamExt as _};

use super::{Cluster, ROUND_TRIP};
use crate::error::Error;
use crate::ports::{BoxFuture, Invalidation, InvalidationHandler};

/// The channel carrying invalidation messages.
pub const CHANNEL: &str = "armor:invalidate";

impl Cluster {
    /// Publishes an invalidation message; returns whether Redis took it.
    pub async fn publish(&self, message: &str) -> bool {
        let Some((slot, mut conn)) = self.conn() else {
            return false;
        };
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(CHANNEL).arg(message);
        let fut = cmd.query_async::<i64>(&mut conn);
        let sent = matches!(tokio::time::timeout(ROUND_TRIP * 4, fut).await, Ok(Ok(_)));
        if !sent {
            self.failed(slot);
        }
        sent
    }

    /// Publishes `message`, retrying in the background for a while if
    /// Redis does not take it at once (other nodes refuse claims while they
    /// cannot hear it, and re-read everything when they can again).
    pub async fn publish_reliably(self: &Arc<Self>, message: String) {
        if self.publish(&message).await {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            for _ in 0..600 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if me.publish(&message).await {
                    return;
                }
            }
            tracing::error!(%message, "could not publish an invalidation message");
        });
    }
    pub(super) async fn subscribe_loop(self: Arc<Self>, handler: Weak<dyn InvalidationHandler>) {
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Err(e) = self.subscribe_once(&handler, attempt).await {
                tracing::warn!(error = %e, "invalidation channel down");
            }
            self.in_sync.store(false, Ordering::Release);
            if handler.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One subscription, until it breaks. Claims are allowed only after
    /// the subscription is live and the whole key cache was re-read.
    async fn subscribe_once(
        &self,
        handler: &Weak<dyn InvalidationHandler>,
        attempt: usize,
    ) -> Result<(), Error> {
        let redis_err = |e: redis::RedisError| Error::Internal(format!("Redis: {e}"));
        let connect = async {
            let client = self.backend.client(attempt).await?;
            client.get_async_pubsub().await
        };
        let pubsub = tokio::time::timeout(ROUND_TRIP * 4, connect)
            .await
            .map_err(|_| Error::Internal("Redis: connect timed out".into()))?
            .map_err(redis_err)?;
        let (mut sink, mut stream) = pubsub.split();
        tokio::time::timeout(ROUND_TRIP * 4, sink.subscribe(CHANNEL))
            .await
            .map_err(|_| Error::Internal("Redis: subscribe timed out".into()))?
            .map_err(redis_err)?;
        {
            let Some(handler) = handler.upgrade() else {
                return Ok(());
            };
            let n = handler.reload_keys(None).await?;
            tracing::info!(keys = n, "invalidation channel up; key cache re-read");
        }
        self.in_sync.store(true, Ordering::Release);
        let mut ping = tokio::time::interval(Duration::from_secs(1));
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        return Err(Error::Internal("Redis: subscription closed".into()));
                    };
                    // A burst (many keys created at once) re-reads each user
                    // once: take every message already there, keep distinct.
                    let mut batch = std::collections::BTreeSet::new();
                    batch.insert(msg.get_payload::<String>().unwrap_or_default());
                    while batch.len() < 1024 {
                        match stream.next().now_or_never() {
                            Some(Some(m)) => {
                                batch.insert(m.get_payload::<String>().unwrap_or_default());
                            }
                            Some(None) => {
                                return Err(Error::Internal("Redis: subscription closed".into()))
                            }
                            None => break,
                        }
                    }
                    let Some(handler) = handler.upgrade() else {
                        return Ok(());
                    };
                    for text in &batch {
                        if let Err(e) = apply(handler.as_ref(), text).await {
                            // Could not re-read: accept nothing until a full
                            // re-read succeeds.
                            tracing::error!(error = %e, message = %text, "invalidation failed");
                            return Err(e);
                        }
                    }
                }
                _ = ping.tick() => {
                    let alive = tokio::time::timeout(ROUND_TRIP * 4, sink.ping::<redis::Value>()).await;
                    if !matches!(alive, Ok(Ok(_))) {
                        return Err(Error::Internal("Redis: subscription ping failed".into()));
                    }
                }
            }
        }
    }
}

/// The message that makes every node re-read one user's keys.
pub fn user_message(user_id: i64) -> String {
    format!("user:{user_id}")
}

/// Applies a message of the invalidation channel: `user:<id>` re-reads
/// that user's keys, anything else every key.
async fn apply(handler: &dyn InvalidationHandler, message: &str) -> Result<(), Error> {
    match message.strip_prefix("user:").map(str::parse::<i64>) {
        Some(Ok(uid)) => handler.reload_keys(Some(uid)).await.map(|_| ()),
        _ => {
            tracing::warn!(%message, "unknown invalidation message; re-reading every key");
            handler.reload_keys(None).await.map(|_| ())
        }
    }
}

impl Invalidation for Cluster {
    fn user_changed(self: Arc<Self>, user_id: i64) -> BoxFuture<'static, ()> {
        Box::pin(async move { self.publish_reliably(user_message(user_id)).await })
    }
}
