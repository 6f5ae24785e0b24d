//! Admin-socket operations on database connections and leases:
//! `db.connection.add|list|remove`, `db.rotate-root`, `db.reconcile`,
//! `lease.list`, `lease.revoke` (by id, prefix or holder).

use secrecy::ExposeSecret;
use serde_json::{json, Value};

use super::error::need_id;
use super::{AdminError, AdminRequest, Extensions};
use crate::creds::db::connections::ConnectionSpec;
use crate::creds::db::Engine;
use crate::store::{db_connections, leases};

fn bad(why: impl Into<String>) -> AdminError {
    AdminError::BadRequest(why.into())
}

fn param<'a>(req: &'a AdminRequest, key: &str) -> Result<&'a str, AdminError> {
    req.params[key]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad(format!("{} needs \"{key}\"", req.op)))
}

/// Runs the operation if it is one of these; `None` for any other op.
pub fn execute(
    ext: &Extensions,
    req: &AdminRequest,
    uid: u32,
) -> Option<Result<Value, AdminError>> {
    let (db, lm) = (&ext.db, &ext.leases);
    let rt = &ext.runtime;
    let result = match req.op.as_str() {
        "db.connection.add" => (|| {
            let name = param(req, "name")?;
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(bad(format!(
                    "connection name {name:?}: use letters, digits, '-' or '_'"
                )));
            }
            let engine = Engine::parse(param(req, "engine")?)
                .ok_or_else(|| bad("\"engine\" is postgres or mariadb"))?;
            let port = req.params["port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| bad("db.connection.add needs a \"port\""))?;
            let password = req
                .secret
                .clone()
                .filter(|s| !s.expose_secret().is_empty())
                .ok_or_else(|| {
                    bad("db.connection.add needs the admin password (stdin or --password-file)")
                })?;
            let spec = ConnectionSpec {
                name: name.to_owned(),
                engine,
                host: param(req, "host")?.to_owned(),
                port,
                dbname: param(req, "dbname")?.to_owned(),
                admin_user: param(req, "admin_user")?.to_owned(),
                tls_ca: req.params["tls_ca"].as_str().map(|p| p.as_bytes().to_vec()),
            };
            rt.block_on(db.add_connection(spec, password, uid))?;
            Ok(json!({"ok": true, "name": name}))
        })(),
        "db.connection.list" => db_connections::connections(&lm.store().lock())
            .map(|c| json!({"ok": true, "connections": c}))
            .map_err(AdminError::from),
        "db.connection.remove" => (|| {
            let name = need_id(req)?;
            let removed = rt.block_on(db.remove_connection(&name, uid))?;
            if !removed {
                return Err(AdminError::NotFound(format!("no connection {name}")));
            }
            Ok(json!({"ok": true, "name": name}))
        })(),
        "db.rotate-root" => (|| {
            let name = need_id(req)?;
            rt.block_on(db.rotate_root(&name, uid))?;
            Ok(json!({"ok": true, "name": name}))
        })(),
        "db.reconcile" => rt
            .block_on(lm.reconcile())
            .map(|dropped| json!({"ok": true, "dropped": dropped}))
            .map_err(AdminError::from),
        "lease.list" => (|| {
            let conn = lm.store().lock();
            let live = leases::live(
                &conn,
                req.params["holder"].as_str(),
                req.params["prefix"].as_str(),
            )?;
            let given_up: std::collections::HashSet<String> =
                leases::irrevocable(&conn)?.into_iter().collect();
            // A lease given up on is shown as `irrevocable`.
            let listed: Vec<serde_json::Value> = live
                .into_iter()
                .map(|l| {
                    let mut v = json!(l);
                    if given_up.contains(&l.id) {
                        v["state"] = "irrevocable".into();
                    }
                    v
                })
                .collect();
            Ok(json!({"ok": true, "leases": listed}))
        })(),
        "lease.retry" => (|| {
            let id = need_id(req)?;
            let mut conn = lm.store().lock();
            let tx = conn.transaction()?;
            if !leases::retry_now(&tx, &id)? {
                return Err(AdminError::NotFound(format!("no unfinished lease {id}")));
            }
            crate::audit::append(
                &tx,
                &crate::audit::Event {
                    kind: "lease.retried",
                    subject: &format!("lease/{id}"),
                    detail: json!({"by_uid": uid}),
                },
            )?;
            tx.commit()?;
            Ok(json!({"ok": true, "id": id}))
        })(),
        "lease.mark-revoked" => (|| {
            let id = need_id(req)?;
            let mut conn = lm.store().lock();
            let tx = conn.transaction()?;
            let lease = leases::get(&tx, &id)?
                .filter(|l| l.state != leases::LeaseState::Revoked)
                .ok_or_else(|| AdminError::NotFound(format!("no unfinished lease {id}")))?;
            if !leases::transition(&tx, &id, lease.state, leases::LeaseState::Revoked)? {
                return Err(AdminError::Conflict(format!(
                    "lease {id} changed meanwhile; list it again"
                )));
            }
            crate::audit::append(
                &tx,
                &crate::audit::Event {
                    kind: "lease.marked_revoked",
                    subject: &format!("lease/{id}"),
                    detail: json!({"by_uid": uid, "was": lease.state.as_str(), "user": lease.external_name}),
                },
            )?;
            tx.commit()?;
            Ok(json!({"ok": true, "id": id}))
        })(),
        "lease.revoke" => (|| {
            let (holder, prefix) = (req.params["holder"].as_str(), req.params["prefix"].as_str());
            let targets = match (req.id.as_deref(), holder, prefix) {
                (Some(id), None, None) => {
                    vec![rt.block_on(lm.lease(id, None))?]
                }
                (None, Some(_), None) | (None, None, Some(_)) => {
                    leases::live(&lm.store().lock(), holder, prefix)?
                }
                _ => {
                    return Err(bad(
                        "lease.revoke takes one of \"id\", \"holder\" or \"prefix\"",
                    ))
                }
            };
            let reason = format!("revoked by an operator (uid {uid})");
            let mut revoked = Vec::new();
            for lease in targets {
                rt.block_on(lm.revoke(&lease, &reason))
                    .map_err(|e| AdminError::Conflict(format!("lease {}: {e}", lease.id)))?;
                revoked.push(lease.id);
            }
            Ok(json!({"ok": true, "revoked": revoked}))
        })(),
        _ => return None,
    };
    Some(result)
}
