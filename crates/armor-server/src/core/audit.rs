//! The audit log: appended to by every service that changes something,
//! read by `GET /auditlog` and the portal's audit page.

use std::sync::Arc;

use super::Principal;
use crate::clock::Clock;
use crate::error::Error;
use crate::store::{AuditEvent, AuditFilter, AuditRow, Store};

/// Appends to and reads the audit log.
#[derive(Clone)]
pub struct Audit {
    store: Store,
    clock: Arc<dyn Clock>,
}

impl Audit {
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Self {
        Audit { store, clock }
    }

    /// Appends to the audit log; a failure is logged, not fatal to the
    /// action that already happened.
    pub async fn record(&self, e: AuditEvent) {
        if let Err(err) = self.store.audit(self.clock.now(), &e).await {
            tracing::error!(event = e.event, error = %err, "audit write failed");
        }
    }

    /// An event by the caller `p` in their account, about `target`.
    pub async fn by(
        &self,
        p: &Principal,
        event: &'static str,
        target: impl ToString,
        address: Option<String>,
        detail: Option<String>,
    ) {
        self.record(AuditEvent {
            account_id: Some(p.account_id),
            actor_id: Some(p.user_id),
            credential: p.credential(),
            event,
            target: Some(target.to_string()),
            address,
            detail,
        })
        .await;
    }

    /// Rows of the caller's account matching `filter` (its `account_id`
    /// is the caller's), newest first; needs Audit Log Read.
    pub async fn query(&self, p: &Principal, filter: AuditFilter) -> Result<Vec<AuditRow>, Error> {
        p.require(super::perm::AUDIT_READ)?;
        self.store
            .audit_query(&AuditFilter {
                account_id: p.account_id,
                ..filter
            })
            .await
    }
}
