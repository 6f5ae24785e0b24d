//! Admin-socket operations on registration entries: `entry.create`,
//! `entry.list`, `entry.show`, `entry.delete`. Each change is one
//! transaction with its audit event.

use serde_json::{json, Value};

use super::error::need_id;
use super::{AdminError, AdminRequest, Names};
use crate::audit::{self, Event};
use crate::identity::SpiffeId;
use crate::store::{entries, nodes, Store};
use crate::wire::entry::{Entry, Parent, Selector};

/// Path segments that name nodes and token hosts; a workload may not take
/// one, or its SVID would pass for a machine's.
const RESERVED: [&str; 2] = ["node", "token"];
/// Shortest and longest lifetime of an entry's X.509-SVIDs.
const TTL_RANGE: std::ops::RangeInclusive<i64> = 60..=7 * 24 * 3600;

fn bad(why: impl Into<String>) -> AdminError {
    AdminError::BadRequest(why.into())
}

fn strings(req: &AdminRequest, key: &str) -> Result<Vec<String>, AdminError> {
    match &req.params[key] {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad(format!("\"{key}\" holds strings only")))
            })
            .collect(),
        _ => Err(bad(format!("\"{key}\" is a list of strings"))),
    }
}

fn dns_name_ok(name: &str) -> bool {
    let bare = name.strip_prefix("*.").unwrap_or(name);
    !bare.is_empty()
        && name.len() <= 253
        && bare.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// The entry `req` describes, checked against the configuration and the
/// node registry.
fn entry_of(store: &Store, names: &Names, req: &AdminRequest) -> Result<Entry, AdminError> {
    let raw_id = req.params["spiffe_id"]
        .as_str()
        .ok_or_else(|| bad("entry.create needs a \"spiffe_id\""))?;
    let spiffe_id =
        SpiffeId::parse_in(&names.trust_domain, raw_id).map_err(|e| bad(e.to_string()))?;
    let first = spiffe_id
        .as_str()
        .split('/')
        .nth(3)
        .unwrap_or_default()
        .to_owned();
    if RESERVED.contains(&first.as_str()) {
        return Err(bad(format!(
            "{spiffe_id}: paths under /{first}/ name machines; choose another path for a workload"
        )));
    }
    let parent = match (req.params["node"].as_str(), req.params["group"].as_str()) {
        (Some(node), None) => {
            if nodes::node(&store.lock(), node)?.is_none() {
                return Err(AdminError::NotFound(format!("no node {node}")));
            }
            Parent::Node(node.to_owned())
        }
        (None, Some(group)) => {
            if !names.groups.iter().any(|g| g == group) {
                return Err(AdminError::NotFound(format!("no node group {group:?}")));
            }
            Parent::Group(group.to_owned())
        }
        _ => return Err(bad("an entry names either --node or --group")),
    };
    let mut selectors = strings(req, "selectors")?
        .iter()
        .map(|s| s.parse::<Selector>().map_err(|e| bad(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    if selectors.is_empty() {
        return Err(bad("an entry needs at least one --selector"));
    }
    selectors.sort();
    selectors.dedup();
    crate::wire::entry::bounded(&selectors).map_err(|e| bad(e.to_string()))?;
    // Short by default: an SVID already handed out stays valid until it
    // expires, also after its node is revoked.
    let ttl = req.ttl_secs.unwrap_or(600);
    if !TTL_RANGE.contains(&ttl) {
        return Err(bad("the SVID lifetime must be between 1 minute and 7 days"));
    }
    let dns_names = strings(req, "dns_names")?;
    if let Some(bad) = dns_names.iter().find(|n| !dns_name_ok(n)) {
        return Err(AdminError::BadRequest(format!(
            "DNS name {bad:?}: lowercase labels of letters, digits and '-', optionally starting with \"*.\""
        )));
    }
    let mut roles = strings(req, "roles")?;
    if let Some(bad) = roles.iter().find(|r| !names.roles.contains(r)) {
        return Err(AdminError::NotFound(format!(
            "no database or SSH role {bad:?} in server.toml"
        )));
    }
    roles.sort();
    roles.dedup();
    let hint = req.params["hint"].as_str().unwrap_or_default().to_owned();
    if hint.len() > 64 || hint.chars().any(|c| c.is_control()) {
        return Err(bad("the hint is at most 64 printable characters"));
    }
    Ok(Entry {
        id: hex::encode(rand::random::<[u8; 8]>()),
        spiffe_id: spiffe_id.to_string(),
        parent,
        selectors,
        ttl_seconds: ttl as u64,
        dns_names,
        roles,
        hint,
        created: crate::store::now(),
    })
}

fn record(
    tx: &crate::store::sql::Tx<'_>,
    kind: &'static str,
    e: &Entry,
    uid: u32,
) -> Result<(), AdminError> {
    audit::append(
        tx,
        &Event {
            kind,
            subject: &format!("entry/{}", e.id),
            detail: json!({
                "by_uid": uid,
                "spiffe_id": e.spiffe_id,
                "parent": e.parent,
                "selectors": e.selectors,
                "ttl": e.ttl_seconds,
                "roles": e.roles,
            }),
        },
    )
    .map(|_| ())
    .map_err(AdminError::from)
}

/// Runs the operation if it is one of these; `None` for any other op.
pub fn execute(
    store: &Store,
    names: &Names,
    req: &AdminRequest,
    uid: u32,
) -> Option<Result<Value, AdminError>> {
    let id = || need_id(req);
    let result = match req.op.as_str() {
        "entry.create" => (|| {
            let entry = entry_of(store, names, req)?;
            let mut conn = store.lock();
            let tx = conn.transaction()?;
            if !entries::create(&tx, &entry)? {
                return Err(AdminError::Conflict(format!(
                    "an entry for {} on {} with these selectors exists already",
                    entry.spiffe_id, entry.parent
                )));
            }
            record(&tx, "entry.created", &entry, uid)?;
            tx.commit()?;
            Ok(json!({"ok": true, "entry": entry}))
        })(),
        "entry.list" => entries::all(&store.lock())
            .map(|list| json!({"ok": true, "entries": list}))
            .map_err(AdminError::from),
        "entry.show" => (|| {
            let id = id()?;
            let entry = entries::get(&store.lock(), &id)?
                .ok_or_else(|| AdminError::NotFound(format!("no entry {id}")))?;
            Ok(json!({"ok": true, "entry": entry}))
        })(),
        "entry.delete" => (|| {
            let id = id()?;
            let mut conn = store.lock();
            let tx = conn.transaction()?;
            let entry = entries::delete(&tx, &id)?
                .ok_or_else(|| AdminError::NotFound(format!("no entry {id}")))?;
            record(&tx, "entry.deleted", &entry, uid)?;
            tx.commit()?;
            Ok(json!({"ok": true, "entry": entry}))
        })(),
        _ => return None,
    };
    Some(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_are_lowercase_labels() {
        for ok in ["shop.local", "*.shop.example", "a-1.b"] {
            assert!(dns_name_ok(ok), "{ok}");
        }
        for bad in ["", "Shop.local", "a..b", "-a.b", "a_b", "*.", "a.*.b"] {
            assert!(!dns_name_ok(bad), "{bad}");
        }
    }
}
