//! Refusals are decisions, and every decision is audited: the event is
//! written before the caller hears the refusal, and if the audit write
//! fails the caller sees that failure instead.

use super::error::ApiError;
use crate::audit::{self, Event};
use crate::server::state::AppState;

/// Records `err` as an audit event of `kind` about `subject`, counts it
/// under `metric`, and returns it.
pub fn refuse(
    s: &AppState,
    kind: &'static str,
    metric: &'static str,
    subject: &str,
    err: ApiError,
) -> ApiError {
    crate::server::metrics::rejection(metric);
    let mut conn = s.store.lock();
    let recorded = conn
        .transaction()
        .map_err(|e| crate::store::StoreError::sql("starting a transaction")(e).into())
        .and_then(|tx| {
            audit::append(
                &tx,
                &Event {
                    kind,
                    subject,
                    detail: serde_json::json!({"reason": err.reason, "status": err.status.as_u16()}),
                },
            )?;
            tx.commit()
                .map_err(|e| crate::store::StoreError::sql("committing")(e))?;
            Ok::<(), crate::audit::AuditError>(())
        });
    match recorded {
        Ok(()) => err,
        Err(e) => e.into(),
    }
}
