//! Identities zeroth issues: SPIFFE IDs and X.509-SVIDs signed by the HSM CA.

pub mod spiffe;
pub mod x509_ca;

pub use spiffe::SpiffeId;
pub use x509_ca::{P256Subject, X509Ca};
