//! The process at the other end of a Unix socket, pinned so that its
//! facts are its own (see the module's documentation): SO_PEERPIDFD where
//! the kernel has it, the pid's start time and /proc owner where not.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use super::hashes::HashCache;
use super::selectors::read_facts;
use crate::wire::entry::Selector;

/// Why a caller could not be attested.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestError {
    #[error("cannot read the socket's peer credentials: {0}")]
    Credentials(String),
    #[error("the caller (pid {0}) has gone; its identity cannot be attested")]
    Gone(i32),
    #[error("pid {pid} changed while it was being attested ({what}); refused")]
    Raced { pid: i32, what: &'static str },
    #[error("pid {0} has run another program since it connected; refused (a connection belongs to the program that opened it)")]
    Exec(i32),
    /// A loopback TCP caller whose socket the kernel's tables do not name.
    #[error("cannot tell who connected over loopback TCP: {0}")]
    TcpOwner(String),
}

/// A caller, attested: who it is and every selector it satisfies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attested {
    pub uid: u32,
    pub pid: i32,
    pub unit: Option<String>,
    pub facts: Vec<Selector>,
    /// Whether a pidfd pinned the process (SO_PEERPIDFD).
    pub pinned: bool,
    /// What ties later requests to the process and program attested.
    pub process: Process,
}

/// The process an attestation describes, kept to check before each reply
/// that it is still there and still runs the program it ran then: its
/// pidfd (or, on older kernels, its start time) and its executable's
/// device and inode. An exec between two requests on one connection
/// changes the executable, and the next request is refused.
#[derive(Debug, Clone, Default)]
pub struct Process {
    pidfd: Option<Arc<OwnedFd>>,
    start: Option<u64>,
    exe: Option<(u64, u64)>,
}

impl PartialEq for Process {
    fn eq(&self, other: &Self) -> bool {
        self.start == other.start && self.exe == other.exe
    }
}

impl Eq for Process {}

/// The device and inode of `pid`'s executable.
fn exe_identity(pid: i32) -> Option<(u64, u64)> {
    std::fs::metadata(format!("/proc/{pid}/exe"))
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

impl Attested {
    /// Checks, before a reply is written, that the caller is still the
    /// process attested and still runs the same executable. A caller whose
    /// executable could not be read (another user's, without
    /// CAP_SYS_PTRACE) matched no path or hash and is checked for liveness
    /// only. Loopback TCP callers (pid 0) have no process to check.
    pub fn still_same(&self) -> Result<(), AttestError> {
        if self.pid <= 0 {
            return Ok(());
        }
        match (&self.process.pidfd, self.process.start) {
            (Some(fd), _) if !alive(fd) => return Err(AttestError::Gone(self.pid)),
            (None, Some(start)) if start_time(self.pid) != Some(start) => {
                return Err(AttestError::Gone(self.pid))
            }
            _ => {}
        }
        match self.process.exe {
            Some(exe) if exe_identity(self.pid) != Some(exe) => Err(AttestError::Exec(self.pid)),
            _ => Ok(()),
        }
    }

    /// How logs and the audit name it.
    pub fn describe(&self) -> String {
        match &self.unit {
            Some(u) => format!("uid {} pid {} unit {u}", self.uid, self.pid),
            None => format!("uid {} pid {}", self.uid, self.pid),
        }
    }
}

/// The pid a pidfd refers to (from /proc/self/fdinfo), `None` once the
/// process has exited.
fn pid_of_pidfd(fd: &OwnedFd) -> Option<i32> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    let pid: i32 = info
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))?
        .trim()
        .parse()
        .ok()?;
    (pid > 0).then_some(pid)
}

/// Whether the process behind `pidfd` is still running (a pidfd turns
/// readable when it exits).
fn alive(pidfd: &OwnedFd) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(poll(&mut fds, Some(&zero)), Ok(0))
}

/// Field 22 of /proc/PID/stat: the start time, in clock ticks since boot.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Attests the peer of `conn`, a connected Unix socket.
pub fn attest(conn: &impl AsFd, hashes: &HashCache) -> Result<Attested, AttestError> {
    attest_with(conn, hashes, true)
}

/// As [`attest`]; without `use_pidfd` as on a kernel older than 6.5.
fn attest_with(
    conn: &impl AsFd,
    hashes: &HashCache,
    use_pidfd: bool,
) -> Result<Attested, AttestError> {
    let cred = rustix::net::sockopt::socket_peercred(conn)
        .map_err(|e| AttestError::Credentials(e.to_string()))?;
    let (uid, gid, pid) = (
        cred.uid.as_raw(),
        cred.gid.as_raw(),
        cred.pid.as_raw_nonzero().get(),
    );
    let pidfd = use_pidfd
        .then(|| nix::sys::socket::getsockopt(conn, nix::sys::socket::sockopt::PeerPidfd).ok())
        .flatten();
    match pidfd {
        Some(pidfd) => {
            // The pidfd names the process that connected; it must still be
            // pid `pid` and still alive once the facts are read.
            if pid_of_pidfd(&pidfd) != Some(pid) {
                return Err(AttestError::Gone(pid));
            }
            // The executable's identity before its facts: an exec after
            // this point is seen by the first check before a reply.
            let exe = exe_identity(pid);
            let (unit, facts) = read_facts(pid, uid, gid, hashes);
            if !alive(&pidfd) {
                return Err(AttestError::Gone(pid));
            }
            Ok(Attested {
                uid,
                pid,
                unit,
                facts,
                pinned: true,
                process: Process {
                    pidfd: Some(Arc::new(pidfd)),
                    start: None,
                    exe,
                },
            })
        }
        None => {
            let before = start_time(pid).ok_or(AttestError::Gone(pid))?;
            let exe = exe_identity(pid);
            let (unit, facts) = read_facts(pid, uid, gid, hashes);
            match std::fs::metadata(format!("/proc/{pid}")) {
                Ok(m) if m.uid() == uid => {}
                Ok(_) => {
                    return Err(AttestError::Raced {
                        pid,
                        what: "its /proc owner is not the socket's uid",
                    })
                }
                Err(_) => return Err(AttestError::Gone(pid)),
            }
            if start_time(pid) != Some(before) {
                return Err(AttestError::Raced {
                    pid,
                    what: "another process holds the pid now",
                });
            }
            Ok(Attested {
                uid,
                pid,
                unit,
                facts,
                pinned: false,
                process: Process {
                    pidfd: None,
                    start: Some(before),
                    exe,
                },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::os::unix::net::UnixStream;

    #[test]
    fn this_process_attests_as_itself_with_its_executable() {
        let (a, _b) = UnixStream::pair().unwrap();
        let hashes = HashCache::default();
        let me = attest(&a, &hashes).unwrap();
        assert_eq!(me.pid as u32, std::process::id());
        assert!(me
            .facts
            .contains(&Selector::Uid(rustix::process::geteuid().as_raw())));
        let exe = std::env::current_exe().unwrap();
        assert!(
            me.facts
                .contains(&Selector::Path(exe.to_str().unwrap().to_owned())),
            "{:?}",
            me.facts
        );
        let digest: [u8; 32] = Sha256::digest(std::fs::read(&exe).unwrap()).into();
        assert!(me.facts.contains(&Selector::Sha256(digest)));
        // Pinned by a pidfd exactly where the kernel has SO_PEERPIDFD (6.5).
        let release = rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned();
        let mut v = release
            .split(['.', '-'])
            .map(|n| n.parse::<u32>().unwrap_or(0));
        let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
        assert_eq!(me.pinned, (major, minor) >= (6, 5), "kernel {release}");
        // The second time comes from the cache, and agrees.
        assert_eq!(attest(&a, &hashes).unwrap().facts, me.facts);
    }

    /// A peer that connected and exited before it was looked at is refused
    /// by both ways of pinning it, never attested as whoever has its pid.
    #[test]
    fn a_peer_that_has_exited_is_refused_with_or_without_a_pidfd() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let hashes = HashCache::default();
        for use_pidfd in [true, false] {
            let status = std::process::Command::new("python3")
                .args([
                    "-c",
                    "import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])",
                ])
                .arg(&path)
                .status()
                .expect("python3 (make deps)");
            assert!(status.success());
            let (conn, _) = listener.accept().unwrap();
            let got = attest_with(&conn, &hashes, use_pidfd);
            assert!(
                matches!(got, Err(AttestError::Gone(_))),
                "{use_pidfd}: {got:?}"
            );
        }
        // A live peer: attested, pinned by a pidfd where the kernel has one.
        let (a, _b) = UnixStream::pair().unwrap();
        assert!(!attest_with(&a, &hashes, false).unwrap().pinned);
    }
}
