//! `store.backup` on the admin socket.

use super::AdminError;
use crate::audit::{self, Event};
use crate::store::{backup, Store};

/// `store.backup`: a consistent snapshot of the store, recorded in the
/// audit log; its size goes in the answer, its bytes after it.
pub(super) fn take(
    store: &Store,
    uid: u32,
) -> Result<(serde_json::Value, backup::Snapshot), AdminError> {
    let snap = backup::snapshot(store)?;
    let bytes = std::fs::metadata(snap.path())
        .map_err(AdminError::Snapshot)?
        .len();
    let inspected = backup::inspect(snap.path())?;
    let mut conn = store.lock();
    let tx = conn.transaction()?;
    audit::append(
        &tx,
        &Event {
            kind: "store.backup",
            subject: "store",
            detail: serde_json::json!({"by_uid": uid, "bytes": bytes, "schema": inspected.schema, "nodes": inspected.nodes, "leases": inspected.leases, "audit_events": inspected.audit_events}),
        },
    )?;
    tx.commit()?;
    Ok((
        serde_json::json!({"ok": true, "bytes": bytes, "schema": inspected.schema, "nodes": inspected.nodes, "leases": inspected.leases, "audit_events": inspected.audit_events}),
        snap,
    ))
}
