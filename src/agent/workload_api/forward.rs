//! A request passed on to the server in the agent's name, for the program
//! that asked: leases are acted on only by the program they were issued
//! to.

use super::refusal;
use super::requests::{route, WorkloadRequest, HOST_KRL};
use crate::agent::attest::Caller;
use crate::agent::lease_owners::LeaseOwners;
use crate::agent::upstream::Upstream;

/// Forwards `req` for `who`, acting on a lease only for the program it was
/// issued to, and remembering whose each new lease is.
pub(super) fn owned(
    req: &WorkloadRequest,
    who: &Caller,
    owners: &LeaseOwners,
    upstream: &Upstream,
) -> serde_json::Value {
    let on_lease = matches!(req.op.as_str(), "lease.renew" | "lease.revoke");
    if on_lease {
        if let Err(why) = owners.check(req.id.as_deref().unwrap_or_default(), who) {
            return refusal(403, why.to_string());
        }
    }
    let answer = forward(req, &who.describe(), upstream);
    if answer["ok"] != true {
        return answer;
    }
    let id = req.id.as_deref().unwrap_or_default();
    match req.op.as_str() {
        "db.creds" | "ssh.sign" => {
            let expires = answer["expires"]
                .as_i64()
                .or_else(|| answer["valid_before"].as_i64())
                .unwrap_or_else(|| crate::wire::now() + 24 * 3600);
            if let Some(lease) = answer["lease_id"].as_str() {
                owners.record(lease, who, expires);
            }
        }
        "lease.renew" => {
            if let Some(expires) = answer["expires"].as_i64() {
                owners.extend(id, expires);
            }
        }
        "lease.revoke" => owners.forget(id),
        _ => {}
    }
    answer
}

/// The server's KRL of revoked host certificates (base64), which `zeroth
/// ssh` hands to the system ssh: public, so any caller the socket admits
/// may have it.
fn host_krl(upstream: &Upstream) -> serde_json::Value {
    use base64::Engine;
    let got = upstream
        .connect()
        .and_then(|c| c.get_bytes("/v1/ssh/krl/host"));
    match got {
        Ok((200, krl)) => serde_json::json!({
            "ok": true,
            "krl": base64::engine::general_purpose::STANDARD.encode(krl),
        }),
        Ok((status, _)) => refusal(
            status,
            format!("the server answered HTTP {status} for the host KRL"),
        ),
        Err(e) => refusal(503, e.to_string()),
    }
}

/// Asks the server for `req`, naming the local program `who` for its audit.
pub(super) fn forward(req: &WorkloadRequest, who: &str, upstream: &Upstream) -> serde_json::Value {
    if req.op == HOST_KRL {
        return host_krl(upstream);
    }
    let (path, body) = match route(req) {
        Ok(r) => r,
        Err(e) => return refusal(400, e.to_string()),
    };
    let (status, text) = match upstream.post(&path, &body, who) {
        Ok(answer) => answer,
        Err(e) => return refusal(503, e.to_string()),
    };
    let parsed: serde_json::Value = if text.trim().is_empty() {
        serde_json::json!({})
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| serde_json::json!({"reason": text}))
    };
    if (200..300).contains(&status) {
        let mut answer = parsed;
        match answer.as_object_mut() {
            Some(map) => {
                map.insert("ok".into(), true.into());
                answer
            }
            None => serde_json::json!({"ok": true, "answer": answer}),
        }
    } else {
        let reason = parsed["reason"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("HTTP {status}"));
        refusal(status, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_identity_the_agent_says_so() {
        let answer = forward(
            &WorkloadRequest {
                op: "db.creds".into(),
                role: Some("app".into()),
                ..Default::default()
            },
            "uid 0 pid 1",
            &Upstream::default(),
        );
        assert_eq!(answer["status"], 503);
        assert!(answer["error"]
            .as_str()
            .unwrap()
            .contains("no identity yet"));
    }
}
