//! What server, agent and CLI send each other: the request and response
//! bodies of the HTTP API, and the few helpers both sides need to speak it.
//! The server (`src/server/`) and the agent (`src/agent/`) import these;
//! neither imports the other.

pub mod db;
pub mod db_tls;
pub mod enrol;
pub mod entry;
pub mod jwt;
pub mod node;
pub mod pg_tls;
pub mod seconds;
pub mod secret;
pub mod ssh;
pub mod token;
pub mod workload_api;

/// Seconds since the Unix epoch: the unit of every time in the bodies.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
