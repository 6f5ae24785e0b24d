//! `zeroth agent`: the machine side. With a TPM it enrols through the TPM
//! and keeps on disk only public material and TPM-wrapped key blobs;
//! without one it lives on a rotating identity token.

pub mod attest;
pub mod enrol;
pub mod jwt;
pub mod lease_owners;
pub mod mtls;
pub mod proxy;
pub mod run;
pub mod servers;
pub mod slots;
pub mod spiffe;
pub mod ssh_agent;
pub mod ssh_host;
pub mod token;
pub mod upstream;
pub mod workload_api;

pub use enrol::{enrol, renew, EnrolOptions, Outcome};
pub use jwt::jwt;
