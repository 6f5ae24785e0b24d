//! Identities zeroth issues: SPIFFE IDs, X.509-SVIDs signed by the HSM CA,
//! JWT-SVIDs signed by the HSM JWT key.

pub mod csr;
pub mod jwt;
pub mod spiffe;
pub mod x509_ca;

pub use jwt::JwtIssuer;
pub use spiffe::SpiffeId;
pub use x509_ca::{P256Subject, X509Ca};
