//! The attester side: a real TPM through tss-esapi.

mod tpm;

pub use tpm::{AttestError, EkAlgorithm, Tpm};
