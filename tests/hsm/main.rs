//! zeroth-hsm against a real SoftHSM2 token from the lab.
//!
//! A PKCS#11 module is initialised once per process, so each test (its own
//! process under nextest) opens one lab token.

mod adversary;
mod errors;
mod keystore;
mod recovery;
