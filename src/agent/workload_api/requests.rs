//! The JSON requests a program sends to the workload socket, the server
//! call each stands for, and the client that programs' own commands
//! (`zeroth db creds`, `zeroth ssh`) use.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// A request to the agent, as a local program sends it.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadRequest {
    pub op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub increment_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principals: Option<Vec<String>>,
}

/// The request for the host KRL (`{"op": "ssh.host_krl"}`), answered
/// `{"ok": true, "krl": BASE64}`.
pub const HOST_KRL: &str = "ssh.host_krl";

/// Why a request names no server call.
#[derive(Debug, thiserror::Error)]
pub enum BadRequest {
    #[error("{op} needs a valid \"{what}\"")]
    Missing { op: String, what: &'static str },
    #[error("unknown operation {0:?}")]
    UnknownOp(String),
}

/// The server call a request stands for: path and JSON body.
pub fn route(req: &WorkloadRequest) -> Result<(String, serde_json::Value), BadRequest> {
    // Role names and lease ids become one path segment: letters, digits,
    // '-', '_' and inner dots only, so nothing can reach another path
    // ("..", "%2e%2e", '/', '?', '#').
    let need = |v: &Option<String>, what: &'static str| {
        v.clone()
            .filter(|s| {
                !s.is_empty()
                    && s.len() <= 128
                    && !s.starts_with('.')
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            })
            .ok_or_else(|| BadRequest::Missing {
                op: req.op.clone(),
                what,
            })
    };
    Ok(match req.op.as_str() {
        "db.creds" => (
            format!("/v1/db/creds/{}", need(&req.role, "role")?),
            serde_json::json!({"ttl_seconds": req.ttl_seconds}),
        ),
        "ssh.sign" => (
            format!("/v1/ssh/sign/{}", need(&req.role, "role")?),
            serde_json::json!({
                "public_key": req.public_key.clone().ok_or_else(|| BadRequest::Missing {
                    op: req.op.clone(),
                    what: "public_key",
                })?,
                "principals": req.principals,
                "ttl_seconds": req.ttl_seconds,
            }),
        ),
        "lease.renew" => (
            format!("/v1/leases/{}/renew", need(&req.id, "id")?),
            serde_json::json!({"increment_seconds": req.increment_seconds}),
        ),
        "lease.revoke" => (
            format!("/v1/leases/{}/revoke", need(&req.id, "id")?),
            serde_json::json!({}),
        ),
        other => return Err(BadRequest::UnknownOp(other.to_owned())),
    })
}

/// Sends one request to an agent's workload API and returns the answer,
/// `Err((status, reason))` for a refusal.
pub fn call(socket: &Path, req: &WorkloadRequest) -> Result<serde_json::Value, (u16, String)> {
    let mut conn = UnixStream::connect(socket).map_err(|e| {
        (
            503,
            format!(
                "cannot connect to the agent's workload API at {}: {e} (is `zeroth agent run` up, with [workload_api]?)",
                socket.display()
            ),
        )
    })?;
    let line = serde_json::to_string(req).map_err(|e| (400, e.to_string()))?;
    // One write; if the agent has already answered (a refusal it gives
    // before reading) and closed, its answer is still there to read.
    let sent = conn.write_all(format!("{line}\n").as_bytes());
    let mut answer = String::new();
    let read = BufReader::new(&conn).read_line(&mut answer);
    if answer.is_empty() {
        sent.map_err(|e| (503, e.to_string()))?;
        read.map_err(|e| (503, e.to_string()))?;
    }
    let v: serde_json::Value = serde_json::from_str(&answer)
        .map_err(|e| (503, format!("the agent's answer does not parse: {e}")))?;
    if v["ok"] == true {
        Ok(v)
    } else {
        Err((
            v["status"].as_u64().unwrap_or(503) as u16,
            v["error"].as_str().unwrap_or("refused").to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_name_only_plain_path_segments() {
        let req = |op: &str, role: Option<&str>| WorkloadRequest {
            op: op.into(),
            role: role.map(Into::into),
            ..Default::default()
        };
        assert_eq!(
            route(&req("db.creds", Some("app"))).unwrap().0,
            "/v1/db/creds/app"
        );
        for bad in [
            "",
            "../identity/renew",
            "..",
            ".",
            "%2e%2e",
            "a?b",
            "a#b",
            "a b",
        ] {
            let e = route(&req("db.creds", Some(bad))).unwrap_err().to_string();
            assert!(e.contains("valid \"role\""), "{bad}: {e}");
        }
        assert!(route(&req("node.revoke", None))
            .unwrap_err()
            .to_string()
            .contains("unknown operation"));
        assert!(route(&req("ssh.sign", Some("ops")))
            .unwrap_err()
            .to_string()
            .contains("public_key"));
    }
}
