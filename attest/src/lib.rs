//! zeroth-attest: TPM 2.0 attestation.
//!
//! - [`verify`] is pure Rust and needs no TPM: the server uses it to judge
//!   what machines send (EK certificate chains today).
//! - [`attester`] (feature `attester`) drives a real TPM through tss-esapi on
//!   the machine being attested.
//!
//! Neither side knows anything of HTTP, SQL or configuration files.
#![forbid(unsafe_code)]

#[cfg(feature = "attester")]
pub mod attester;
pub mod verify;

#[cfg(feature = "attester")]
pub use attester::{AkAlgorithm, AttestError, Attester, EkAlgorithm, KeyBlob, Quote, Tpm, TpmInfo};
pub use verify::ek_chain::{verify_ek_chain, ChainError, EkChain, TrustAnchors};
