//! The verifier side: checks what a TPM produced, with no TPM of its own.

pub mod ek_chain;
