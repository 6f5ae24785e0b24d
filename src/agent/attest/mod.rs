//! Who is calling, and what it is granted: every agent socket (the
//! workload socket's gRPC and JSON requests, the database proxies) attests
//! its callers here and matches them here.
//!
//! - [`peer`]: the process at the other end of the socket, pinned so the
//!   facts are its own. With SO_PEERPIDFD (Linux 6.5 and later) the kernel
//!   hands over a pidfd of the connecting process: its pid is read from
//!   the pidfd, the facts from /proc, and afterwards the pidfd must still
//!   be alive, so the pid cannot have been reused in between. On older
//!   kernels (Debian 12's 6.1) the pid's start time is read before and
//!   after, and its /proc directory must belong to the uid the socket
//!   reports; any mismatch refuses the caller.
//! - `selectors`: one attestor per kind of fact (`unix:uid`, `unix:gid`,
//!   `unix:supplementary_gid`, `systemd:unit`, `unix:path`,
//!   `unix:sha256`). A process that lingers from an earlier run of its
//!   service is not of that service ([`invocation`]). Reading another
//!   user's `/proc/PID/exe` needs CAP_SYS_PTRACE: without it the path and
//!   hash are unknown and entries that name them do not match.
//!   Executables larger than [`MAX_HASHED`] are not hashed, and none is
//!   hashed while no entry names a hash ([`hashes`]).
//! - [`matcher`]: the roles a caller is granted by the configuration (its
//!   uid, its service) and by the registration entries it matches.
//! - [`caller`]: how logs and the audit name a caller.

pub mod caller;
pub mod hashes;
pub mod invocation;
pub mod matcher;
pub mod peer;
mod selectors;

pub use caller::Caller;
pub use hashes::{HashCache, MAX_HASHED};
pub use matcher::{Access, Granted};
pub use peer::{attest, AttestError, Attested};
