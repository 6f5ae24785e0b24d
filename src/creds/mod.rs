//! Dynamic credentials, each under a lease that outlives zeroth's own
//! failures.
//!
//! - [`lease`]: the lease manager. It knows nothing of engines: it writes
//!   the ledger, renews, revokes what falls due (retrying with backoff,
//!   then leaving a lease `irrevocable` for an operator) and compares each
//!   engine's credentials with the ledger.
//! - [`db`], [`ssh`]: the engines, each implementing [`lease::Engine`]:
//!   PostgreSQL and MariaDB users, OpenSSH certificates.

pub mod db;
mod error;
pub mod lease;
pub mod ssh;

pub use error::{CredsError, Holder};
