//! A session's database user: asked for when a program connects, renewed
//! while the connection stays open, given back when it closes. The server
//! holds the lease in the host's name; the database holds the expiry, so a
//! crashed agent leaves nothing usable past it.

use std::time::{Duration, SystemTime};

use crate::agent::upstream::Upstream;
use crate::wire::db::CredsResponse;

/// Why no user could be had.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The server refused (its status and reason).
    #[error("the zeroth server refused ({status}): {reason}")]
    Refused { status: u16, reason: String },
    #[error("the zeroth server is unreachable: {0}")]
    Unreachable(String),
    #[error("the zeroth server's answer does not parse: {0}")]
    BadAnswer(String),
}

fn reason_of(status: u16, text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v["reason"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("HTTP {status}"))
}

async fn post(
    upstream: &Upstream,
    path: String,
    body: serde_json::Value,
    who: &str,
) -> Result<(u16, String), IssueError> {
    let (upstream, who) = (upstream.clone(), who.to_owned());
    tokio::task::spawn_blocking(move || upstream.post(&path, &body, &who))
        .await
        .map_err(|e| IssueError::Unreachable(e.to_string()))?
        .map_err(|e| IssueError::Unreachable(e.to_string()))
}

/// A new user of `role` for the program `who`.
pub async fn issue(
    upstream: &Upstream,
    role: &str,
    ttl: Option<Duration>,
    who: &str,
) -> Result<CredsResponse, IssueError> {
    let body = serde_json::json!({ "ttl_seconds": ttl.map(|t| t.as_secs()) });
    let (status, text) = post(upstream, format!("/v1/db/creds/{role}"), body, who).await?;
    if !(200..300).contains(&status) {
        return Err(IssueError::Refused {
            status,
            reason: reason_of(status, &text),
        });
    }
    serde_json::from_str(&text).map_err(|e| IssueError::BadAnswer(e.to_string()))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// Keeps `lease` alive while the session lasts: renews it by its first
/// lifetime at half of what is left. Returns only when the server says the
/// lease can no longer be renewed (gone, or at its maximum); an unreachable
/// server is retried until then.
pub async fn keep(upstream: &Upstream, lease: &str, expires: i64, who: &str) {
    let lifetime = (expires - now()).max(10);
    let mut expires = expires;
    loop {
        let left = (expires - now()).max(2) as u64;
        tokio::time::sleep(Duration::from_secs(left / 2)).await;
        let body = serde_json::json!({ "increment_seconds": lifetime });
        match post(upstream, format!("/v1/leases/{lease}/renew"), body, who).await {
            Ok((200..=299, text)) => {
                let renewed = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["expires"].as_i64());
                match renewed {
                    Some(e) if e > expires => expires = e,
                    // At its maximum: the session ends with the lease.
                    _ => return,
                }
            }
            Ok((status, text)) => {
                tracing::warn!(lease, status, reason = %reason_of(status, &text), "the session's lease cannot be renewed");
                return;
            }
            Err(e) => {
                tracing::warn!(lease, error = %e, "renewing the session's lease failed; retrying")
            }
        }
    }
}

/// Gives `lease` back: the server ends its sessions and drops the user.
pub async fn give_back(upstream: &Upstream, lease: &str, who: &str) -> Result<(), IssueError> {
    let (status, text) = post(
        upstream,
        format!("/v1/leases/{lease}/revoke"),
        serde_json::json!({}),
        who,
    )
    .await?;
    match status {
        200..=299 | 404 => Ok(()),
        _ => Err(IssueError::Refused {
            status,
            reason: reason_of(status, &text),
        }),
    }
}
