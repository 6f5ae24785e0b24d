//! zeroth-hsm: the only code in zeroth that touches PKCS#11.
//!
//! Root keys (CAs, JWT signing, audit checkpoints, the store's key-encryption
//! key) are generated inside a PKCS#11 token and never leave it. Callers see
//! the [`KeyStore`] trait; [`Pkcs11KeyStore`] is what production runs, and
//! [`SoftwareKeyStore`] exists for unit tests and an explicit `--dev` mode.
//! [`Sealer`] builds envelope encryption on top of any key store. This crate
//! knows nothing of HTTP, SQL or configuration files.
#![forbid(unsafe_code)]

pub mod bench;
pub mod conformance;
mod error;
mod key;
mod keystore;
pub mod pkcs11;
mod sealer;
mod software;

pub use error::HsmError;
pub use key::{KeyInfo, KeyKind, KeyName, PublicKey, LABEL_PREFIX, STANDARD_KEYS, STORE_KEK};
pub use keystore::KeyStore;
pub use pkcs11::{
    Capability, Module, PinSource, Pkcs11Config, Pkcs11KeyStore, TokenSelector, TokenSummary,
};
pub use sealer::{Binding, Sealer};
pub use software::SoftwareKeyStore;
