//! Whether a systemd service's cgroup holds only its current run (its
//! invocation): a service with `KillMode=process` (or `none`) leaves its
//! other processes behind when it stops or restarts, in the same cgroup,
//! and they must not keep the service's identity.
//!
//! systemd writes `/run/systemd/units/invocation:<unit>` (a symlink to the
//! invocation's ID, readable by every user) once per invocation, before it
//! forks the invocation's first process, and removes it when the unit
//! stops. Every process of the current run started after that; a process
//! in the cgroup that started before it was left by an earlier run. A
//! leftover can fork, and its children start after the run began, so no
//! single process's start time tells them apart: while any process in the
//! cgroup predates the run, no process in it is attested as the service
//! (the agent warns, naming them), and once they are gone the service is
//! itself again. Where systemd keeps no such directory (no systemd, a
//! container) there is nothing to compare with, and the cgroup alone
//! decides.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Where systemd's system manager exports per-unit state.
pub const UNITS_DIR: &str = "/run/systemd/units";

/// Where the unified cgroup hierarchy is mounted on a systemd host.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// What the clocks may disagree by: a process's start time is known to a
/// clock tick (10 ms, rounded down), the symlink's to the file system's
/// coarse clock (a jiffy, at most 10 ms).
const SLACK: Duration = Duration::from_millis(50);

/// The kernel's USER_HZ, the unit of /proc/PID/stat's start time (fixed at
/// 100 on every architecture Linux reports it for).
const TICKS_PER_SECOND: u64 = 100;

/// Why a service's cgroup is not its current run alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotCurrent {
    /// systemd records no current run of the service (it is stopped).
    NoRun,
    /// These processes in its cgroup started before its current run.
    Leftovers(Vec<i32>),
}

/// Whether the cgroup of `unit`, as named in the /proc/PID/cgroup text
/// `cgroup` of a caller in it, holds only the unit's current run.
pub fn check(unit: &str, cgroup: &str) -> Result<(), NotCurrent> {
    let units = Path::new(UNITS_DIR);
    if !units.is_dir() {
        return Ok(());
    }
    let began = run_began(units, unit).ok_or(NotCurrent::NoRun)?;
    let procs = unit_cgroup(Path::new(CGROUP_ROOT), cgroup, unit)
        .map(|dir| pids_under(&dir))
        .unwrap_or_default();
    let starts: Vec<(i32, Option<SystemTime>)> =
        procs.into_iter().map(|p| (p, started_at(p))).collect();
    leftovers(began, &starts)
}

/// When the current run of `unit` began: the time of systemd's record.
fn run_began(units: &Path, unit: &str) -> Option<SystemTime> {
    std::fs::symlink_metadata(units.join(format!("invocation:{unit}")))
        .ok()?
        .modified()
        .ok()
}

/// The decision: which processes (with their start times; None: gone or
/// unreadable, so not counted) started before the run `began`.
fn leftovers(began: SystemTime, starts: &[(i32, Option<SystemTime>)]) -> Result<(), NotCurrent> {
    let old: Vec<i32> = starts
        .iter()
        .filter(|(_, s)| s.is_some_and(|s| s + SLACK < began))
        .map(|(p, _)| *p)
        .collect();
    match old.is_empty() {
        true => Ok(()),
        false => Err(NotCurrent::Leftovers(old)),
    }
}

/// The directory of `unit`'s cgroup: the unified-hierarchy path of the
/// `0::` line of `cgroup`, cut after the component naming the unit.
fn unit_cgroup(root: &Path, cgroup: &str, unit: &str) -> Option<PathBuf> {
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let mut dir = root.to_path_buf();
    for part in path.split('/').filter(|c| !c.is_empty()) {
        dir.push(part);
        if part == unit {
            return Some(dir);
        }
    }
    None
}

/// Every pid in the cgroup `dir` and the cgroups below it (a service with
/// a delegated subtree may have some).
fn pids_under(dir: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                pids.extend(pids_under(&e.path()));
            }
        }
    }
    pids
}

/// When `pid` started, on the wall clock: its start time since boot (field
/// 22 of /proc/PID/stat, in clock ticks) placed against the boot-time clock
/// now.
fn started_at(pid: i32) -> Option<SystemTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let since_boot = Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND);
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let up = Duration::new(now.tv_sec as u64, now.tv_nsec as u32);
    let ago = up.checked_sub(since_boot)?;
    SystemTime::now().checked_sub(ago)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_is_its_current_run_only_while_nothing_in_it_predates_the_run() {
        let began = SystemTime::now();
        let later = Some(began + Duration::from_secs(1));
        let earlier = Some(began - Duration::from_secs(5));
        assert_eq!(leftovers(began, &[(10, later), (11, later)]), Ok(()));
        // A clock tick either way is the same moment.
        assert_eq!(leftovers(began, &[(10, Some(began - SLACK / 2))]), Ok(()));
        // One leftover spoils it for every process of the cgroup, the
        // current run's included: its children would look new.
        assert_eq!(
            leftovers(began, &[(10, later), (7, earlier), (12, None)]),
            Err(NotCurrent::Leftovers(vec![7]))
        );
    }

    #[test]
    fn the_run_began_when_systemd_recorded_it_and_a_stopped_unit_has_no_run() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(run_began(dir.path(), "shop.service"), None);
        std::os::unix::fs::symlink(
            "0123456789abcdef0123456789abcdef",
            dir.path().join("invocation:shop.service"),
        )
        .unwrap();
        let began = run_began(dir.path(), "shop.service").unwrap();
        assert!(began <= SystemTime::now());
        assert_eq!(run_began(dir.path(), "other.service"), None);
    }

    #[test]
    fn the_units_cgroup_is_cut_after_the_unit_and_its_subtree_is_read() {
        let root = Path::new("/sys/fs/cgroup");
        assert_eq!(
            unit_cgroup(
                root,
                "0::/system.slice/shop.service/worker\n",
                "shop.service"
            ),
            Some(root.join("system.slice/shop.service"))
        );
        assert_eq!(
            unit_cgroup(root, "0::/system.slice/other.service\n", "shop.service"),
            None
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.procs"), "10\n11\n").unwrap();
        std::fs::create_dir(dir.path().join("worker")).unwrap();
        std::fs::write(dir.path().join("worker/cgroup.procs"), "12\n").unwrap();
        let mut pids = pids_under(dir.path());
        pids.sort();
        assert_eq!(pids, [10, 11, 12]);
    }

    #[test]
    fn this_process_started_in_the_past_on_the_wall_clock() {
        let started = started_at(std::process::id() as i32).unwrap();
        let now = SystemTime::now();
        assert!(started <= now + SLACK);
        assert!(now.duration_since(started).unwrap_or_default() < Duration::from_secs(24 * 3600));
    }
}
