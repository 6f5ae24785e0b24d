//! The verifier side: checks what a TPM produced, with no TPM of its own.
//! Pure Rust, no unsafe, usable by a server without a TPM. Every parser is
//! bounds-checked and returns an error, never panics, on hostile bytes.

pub mod alg;
pub mod attestation;
pub mod credential;
pub mod ek;
pub mod ek_chain;
mod error;
pub mod event_log;
pub mod pcr;
pub mod public;
pub mod quote;
mod wire;

/// Appends a TPM2B (u16 size + bytes), for the attester's encodings.
#[cfg(feature = "attester")]
pub(crate) fn wire_put_tpm2b(out: &mut Vec<u8>, data: &[u8]) {
    wire::put_tpm2b(out, data)
}

pub use error::VerifyError;

#[cfg(test)]
mod vectors;
