//! What server, agent and CLI send each other: serde helpers shared by the
//! request and response bodies of both sides.

pub mod db;
pub mod secret;
