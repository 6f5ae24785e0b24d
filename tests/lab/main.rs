//! The lab itself: every component is real, reachable, and gone afterwards.
//!
//! Each test starts the parts it needs privately, so tests run in parallel
//! without sharing ports, directories or state.

mod cleanup;
mod hsm;
mod mariadb;
mod postgres;
mod sshd;
mod tpm;
