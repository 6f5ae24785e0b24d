//! Bodies of the dynamic database credential endpoints
//! (`/v1/db/creds/{role}`, `/v1/leases/{id}/…`).

use serde::{Deserialize, Serialize};

/// The header a holder's agent names the local program with.
pub const WORKLOAD_HEADER: &str = "zeroth-workload";

#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredsRequest {
    /// Lease lifetime in seconds (the role's default when absent; never
    /// beyond its maximum).
    #[serde(default, deserialize_with = "crate::wire::seconds::deserialize")]
    #[schema(maximum = 4294967295.0)]
    pub ttl_seconds: Option<u64>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct CredsResponse {
    pub lease_id: String,
    pub username: String,
    #[serde(with = "crate::wire::secret")]
    #[schema(value_type = String)]
    pub password: secrecy::SecretString,
    pub expires: i64,
    pub engine: String,
    pub host: String,
    pub port: u16,
    pub database: String,
    /// PEM CA of the database's TLS certificate, when the connection uses
    /// TLS (verify-full): how a proxy reaches the database as zeroth does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<String>,
}

impl std::fmt::Debug for CredsResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredsResponse")
            .field("lease_id", &self.lease_id)
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewLeaseRequest {
    #[serde(default, deserialize_with = "crate::wire::seconds::deserialize")]
    #[schema(maximum = 4294967295.0)]
    pub increment_seconds: Option<u64>,
}

/// Use of a proxied database session, reported by the agent that relays
/// it (`POST /v1/db/session-events`). Holds no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionEvent {
    /// Unique per event: a redelivered event is recorded once.
    pub id: String,
    pub kind: SessionEventKind,
    /// When it happened (seconds since the epoch, agent's clock).
    pub time: i64,
    /// The proxy's name in agent.toml.
    pub proxy: String,
    pub role: String,
    pub lease: String,
    /// The database user made for the session.
    pub user: String,
    /// The local program: uid, pid and systemd unit, as the kernel said.
    pub workload: Workload,
    /// Closed sessions: how long, and bytes each way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_from_client: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_to_client: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionEventKind {
    Opened,
    Closed,
}

impl SessionEventKind {
    /// The audit event's kind.
    pub fn audit_kind(self) -> &'static str {
        match self {
            Self::Opened => "db.session.opened",
            Self::Closed => "db.session.closed",
        }
    }
}

/// A local program, as the agent's kernel attribution named it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub uid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionEvents {
    pub events: Vec<SessionEvent>,
}

/// What the server did with a batch of session events.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionEventsRecorded {
    /// Newly written to the audit.
    pub recorded: usize,
    /// Already recorded earlier (a redelivery).
    pub duplicates: usize,
    /// Events naming a lease the caller does not hold: not recorded.
    pub refused: Vec<String>,
}
