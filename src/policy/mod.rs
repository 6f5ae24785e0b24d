//! Authorisation decisions: which TPMs a node group trusts, which PCR
//! values it requires, and whether a node is approved at once.

pub mod enrolment;

pub use enrolment::GroupPolicy;
