//! Leases: every credential zeroth hands out is a row of the ledger that
//! says who holds it, until when, and whether it is still to be undone.
//!
//! - [`engine`]: what an engine (database users, SSH certificates) does
//!   for the manager.
//! - [`ledger`]: the lease table's writes, each with its audit event; an
//!   engine's issuance writes through it.
//! - [`manager`]: renewal, revocation, the revoker of what falls due and
//!   the reconciler, over any engine.

pub mod engine;
pub mod ledger;
pub mod manager;

pub use engine::{AuditNames, Engine, Fut};
pub use ledger::{Ledger, Settlement};
pub use manager::LeaseManager;
