//! Short-lived OpenSSH certificates signed by CA keys that never leave the
//! HSM.

pub mod ca;
pub mod ca_set;
pub mod engine;
pub mod issuer;
pub mod krl;
pub mod request;
mod rotation;
