//! What the kernel says of the program at the other end of the workload
//! socket, as selectors: `unix:uid`, `unix:gid`, `unix:supplementary_gid`,
//! `systemd:unit`, `unix:path` and `unix:sha256` of its executable. A
//! process that lingers from an earlier run of its service is not of that
//! service (`agent::invocation`).
//!
//! The facts must belong to the process that connected, not to whatever
//! holds its pid by the time they are read. With SO_PEERPIDFD (Linux 6.5
//! and later) the kernel hands over a pidfd of the connecting process: its
//! pid is read from the pidfd, the facts from /proc, and afterwards the
//! pidfd must still be alive, so the pid cannot have been reused in
//! between. On older kernels (Debian 12's 6.1) the pid's start time is
//! read before and after, and its /proc directory must belong to the uid
//! the socket reports; any mismatch refuses the caller.
//!
//! Reading another user's `/proc/PID/exe` needs CAP_SYS_PTRACE: without it
//! the path and hash are unknown and entries that name them do not match.
//! Executables larger than [`MAX_HASHED`] are not hashed.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::agent::caller::unit_in_cgroup;
use crate::agent::invocation;
use crate::wire::entry::Selector;

/// Executables larger than this are not hashed (no `unix:sha256` fact).
pub const MAX_HASHED: u64 = 256 * 1024 * 1024;

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

/// Hashes of executables already read, by file identity, so a program
/// that connects often is hashed once; and whether hashes are wanted at
/// all (only when an entry names one: otherwise no caller's executable is
/// read, whatever its size).
#[derive(Default)]
pub struct HashCache {
    known: Mutex<HashMap<FileIdentity, [u8; 32]>>,
    unwanted: std::sync::atomic::AtomicBool,
}

/// A file's device, inode, size, and mtime and ctime to the nanosecond: a
/// changed file is a new key, also when it was rewritten within a second.
type FileIdentity = (u64, u64, u64, (i64, i64), (i64, i64));

impl HashCache {
    /// Whether callers' executables are hashed from now on.
    pub fn wanted(&self, wanted: bool) {
        self.unwanted
            .store(!wanted, std::sync::atomic::Ordering::Relaxed);
    }

    fn is_wanted(&self) -> bool {
        !self.unwanted.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn digest(&self, file: &mut std::fs::File) -> Option<[u8; 32]> {
        let m = file.metadata().ok()?;
        if m.len() > MAX_HASHED {
            return None;
        }
        let key = (
            m.dev(),
            m.ino(),
            m.len(),
            (m.mtime(), m.mtime_nsec()),
            (m.ctime(), m.ctime_nsec()),
        );
        if let Some(d) = self.known.lock().ok()?.get(&key) {
            return Some(*d);
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut taken = file.take(MAX_HASHED);
        loop {
            let n = taken.read(&mut buf).ok()?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let digest: [u8; 32] = hasher.finalize().into();
        let mut map = self.known.lock().ok()?;
        if map.len() > 4096 {
            map.clear();
        }
        map.insert(key, digest);
        Some(digest)
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

/// The numbers after `key` in /proc/PID/status (e.g. "Groups:").
fn status_ids(status: &str, key: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The facts /proc shows about `pid`, given the uid and gid the socket
/// reported.
fn read_facts(pid: i32, uid: u32, gid: u32, hashes: &HashCache) -> (Option<String>, Vec<Selector>) {
    let mut facts = vec![Selector::Uid(uid), Selector::Gid(gid)];
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        for g in status_ids(&status, "Groups:") {
            facts.push(Selector::SupplementaryGid(g));
        }
    }
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let unit = unit_in_cgroup(&cgroup).filter(|u| match invocation::check(u, &cgroup) {
        Ok(()) => true,
        Err(invocation::NotCurrent::NoRun) => {
            tracing::warn!(pid, unit = %u, "the caller lingers in the cgroup of a service that is not running; not attested as that service");
            false
        }
        Err(invocation::NotCurrent::Leftovers(old)) => {
            tracing::warn!(pid, unit = %u, leftovers = ?old, "the service's cgroup holds processes that an earlier run left behind (KillMode=process?); no process in it is attested as that service until they are gone");
            false
        }
    });
    if let Some(u) = &unit {
        facts.push(Selector::Unit(u.clone()));
    }
    if let Ok(path) = std::fs::read_link(format!("/proc/{pid}/exe")) {
        if let Some(p) = path.to_str().filter(|p| !p.ends_with(" (deleted)")) {
            facts.push(Selector::Path(p.to_owned()));
        }
    }
    if hashes.is_wanted() {
        if let Ok(mut exe) = std::fs::File::open(format!("/proc/{pid}/exe")) {
            if let Some(d) = hashes.digest(&mut exe) {
                facts.push(Selector::Sha256(d));
            }
        }
    }
    facts.sort();
    facts.dedup();
    (unit, facts)
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
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_file_rewritten_within_one_second_is_hashed_again() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("program");
        let second = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let write = |content: &[u8], nanos: u64| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .unwrap();
            f.write_all(content).unwrap();
            f.set_modified(second + std::time::Duration::from_nanos(nanos))
                .unwrap();
        };
        let hashes = HashCache::default();
        write(b"first program", 100);
        let first = hashes.digest(&mut std::fs::File::open(&path).unwrap());
        // Same inode, same size, same whole second: only the nanoseconds differ.
        write(b"other program", 200);
        let second_digest = hashes.digest(&mut std::fs::File::open(&path).unwrap());
        assert_eq!(first, Some(Sha256::digest(b"first program").into()));
        assert_eq!(second_digest, Some(Sha256::digest(b"other program").into()));
    }

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

    #[test]
    fn status_lines_give_their_ids() {
        let status = "Name:\tx\nUid:\t1\t1\t1\t1\nGroups:\t4 27 1000 \n";
        assert_eq!(status_ids(status, "Groups:"), vec![4, 27, 1000]);
        assert!(status_ids("Groups:\t\n", "Groups:").is_empty());
    }
}
