//! Admin-socket operations on nodes (`node.list|show|approve|reject|
//! revoke|readmit`) and enrolment tokens (`token.create|list|revoke`).
//! Each change is one transaction with its audit event.

use secrecy::ExposeSecret;

use super::error::need_id;
use super::{AdminError, AdminRequest};
use crate::audit::{self, Event};
use crate::store::nodes::{self, NodeState};
use crate::store::Store;

/// The state an operator's `op` moves a node in `from` to, and the audit
/// event that records it. Revocation is final until a re-admission, which
/// puts the node back to pending: its next enrolment follows its group.
fn node_transition(
    op: &str,
    id: &str,
    from: NodeState,
) -> Result<(NodeState, &'static str), AdminError> {
    use NodeState::*;
    match (op, from) {
        ("node.approve", Pending | Approved) => Ok((Approved, "node.approved")),
        ("node.approve", Revoked) => Err(AdminError::Conflict(format!(
            "node {id} was revoked; re-admit it first (`zeroth node readmit {id}`)"
        ))),
        ("node.reject", Pending) => Ok((Revoked, "node.rejected")),
        ("node.reject", _) => Err(AdminError::Conflict(format!(
            "node {id} is {}, not pending; use revoke",
            from.as_str()
        ))),
        ("node.revoke", _) => Ok((Revoked, "node.revoked")),
        ("node.readmit", Revoked) => Ok((Pending, "node.readmitted")),
        ("node.readmit", _) => Err(AdminError::Conflict(format!(
            "node {id} is {}, not revoked; only a revoked node is re-admitted",
            from.as_str()
        ))),
        _ => Err(AdminError::BadRequest(format!("unknown operation {op}"))),
    }
}

/// `node.*` and `token.*`.
pub(super) fn execute(
    store: &Store,
    groups: &[String],
    req: &AdminRequest,
    uid: u32,
) -> Result<serde_json::Value, AdminError> {
    let id = || need_id(req);
    match req.op.as_str() {
        "node.list" => {
            let list = nodes::nodes(&store.lock())?;
            Ok(serde_json::json!({"ok": true, "nodes": list}))
        }
        "node.show" => {
            let id = id()?;
            let node = nodes::node(&store.lock(), &id)?
                .ok_or_else(|| AdminError::NotFound(format!("no node {id}")))?;
            Ok(serde_json::json!({"ok": true, "node": node}))
        }
        op @ ("node.approve" | "node.reject" | "node.revoke" | "node.readmit") => {
            let id = id()?;
            let mut conn = store.lock();
            let tx = conn.transaction()?;
            let node = nodes::node(&tx, &id)?
                .ok_or_else(|| AdminError::NotFound(format!("no node {id}")))?;
            let (state, kind) = node_transition(op, &id, node.state)?;
            if !nodes::set_node_state(&tx, &id, node.state, state)? {
                return Err(AdminError::Conflict(format!(
                    "node {id} changed meanwhile; try again"
                )));
            }
            audit::append(
                &tx,
                &Event {
                    kind,
                    subject: &format!("node/{id}"),
                    detail: serde_json::json!({"by_uid": uid, "was": node.state}),
                },
            )?;
            tx.commit()?;
            Ok(serde_json::json!({"ok": true, "id": id, "state": state}))
        }
        "token.create" => {
            let group = req
                .group
                .clone()
                .ok_or_else(|| AdminError::BadRequest("token.create needs a \"group\"".into()))?;
            if !groups.contains(&group) {
                return Err(AdminError::NotFound(format!("no node group {group:?}")));
            }
            let ttl = req.ttl_secs.unwrap_or(600);
            if !(60..=30 * 24 * 3600).contains(&ttl) {
                return Err(AdminError::BadRequest(
                    "the token lifetime must be between 1 minute and 30 days".into(),
                ));
            }
            let (token, hash) = crate::server::api::token::new_token();
            let chain = hex::encode(rand::random::<[u8; 8]>());
            let mut conn = store.lock();
            let tx = conn.transaction()?;
            let expires = crate::store::tokens::create_chain(&tx, &chain, &group, ttl, &hash)?;
            audit::append(
                &tx,
                &Event {
                    kind: "token.created",
                    subject: &format!("token-chain/{chain}"),
                    detail: serde_json::json!({"by_uid": uid, "group": group, "ttl": ttl}),
                },
            )?;
            tx.commit()?;
            // The token is shown once, to the operator, and stored only as a hash.
            Ok(
                serde_json::json!({"ok": true, "chain": chain, "token": token.expose_secret(), "expires": expires}),
            )
        }
        "token.list" => {
            let chains = crate::store::tokens::list_chains(&store.lock())?;
            Ok(serde_json::json!({"ok": true, "chains": chains}))
        }
        "token.revoke" => {
            let chain = id()?;
            let mut conn = store.lock();
            let tx = conn.transaction()?;
            let was = crate::store::tokens::chain(&tx, &chain)?
                .ok_or_else(|| AdminError::NotFound(format!("no token chain {chain}")))?;
            if !was.revoked {
                crate::store::tokens::revoke_chain(&tx, &chain)?;
                audit::append(
                    &tx,
                    &Event {
                        kind: "token.revoked",
                        subject: &format!("token-chain/{chain}"),
                        detail: serde_json::json!({"by_uid": uid, "group": was.group}),
                    },
                )?;
            }
            tx.commit()?;
            // Its leases go at the revoker's next pass, like a revoked node's.
            Ok(serde_json::json!({"ok": true, "chain": chain, "was_revoked": was.revoked}))
        }
        other => Err(AdminError::BadRequest(format!(
            "unknown operation {other:?}"
        ))),
    }
}
