//! zeroth: secret zero solved outside the cloud.
//!
//! Machines prove who they are with their TPM 2.0, root keys stay inside a
//! PKCS#11 HSM, and machines and workloads receive short-lived identities and
//! credentials in return.
#![deny(unsafe_code)]

pub mod agent;
pub mod audit;
pub mod cli;
pub mod config;
pub mod creds;
pub mod identity;
#[cfg(feature = "lab")]
pub mod lab;
pub mod policy;
pub mod sd_notify;
pub mod server;
pub mod store;
pub mod wire;
