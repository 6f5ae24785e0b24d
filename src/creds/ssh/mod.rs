//! Short-lived OpenSSH certificates signed by CA keys that never leave the
//! HSM.

pub mod ca;
pub mod issuer;
pub mod krl;
pub mod request;
