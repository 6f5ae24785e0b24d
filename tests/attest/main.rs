//! zeroth-attest's verifier against a real TPM (swtpm) driven by tpm2-tools,
//! the reference implementation, and its attester against the same TPM.

mod ek_chain;
mod event_log;
mod roundtrip;
mod tools;
mod verifier;
