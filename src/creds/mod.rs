//! Dynamic credentials: database users that exist for minutes, each under
//! a lease that outlives zeroth's own failures.

pub mod db;
pub mod ssh;
