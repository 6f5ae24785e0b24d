//! `zeroth agent`: the machine side. It enrols through the TPM and keeps on
//! disk only public material and TPM-wrapped key blobs.

pub mod enrol;
pub mod jwt;
pub mod mtls;
pub mod run;

pub use enrol::{enrol, renew, EnrolOptions, Outcome};
pub use jwt::jwt;
