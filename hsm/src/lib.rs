//! zeroth-hsm: the only code in zeroth that touches PKCS#11.
//!
//! Root keys (CAs, JWT signing, the store's key-encryption key) are generated
//! inside a PKCS#11 token and never leave it. This crate knows nothing of
//! HTTP, SQL or configuration files; callers hand it a module path and a
//! token label.
#![forbid(unsafe_code)]

mod error;
pub mod token;

pub use error::HsmError;
pub use token::{Capability, Module, TokenSummary};
