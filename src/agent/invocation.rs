//! Whether a process in a systemd service's cgroup belongs to the service's
//! current run (its invocation) or lingers from an earlier one: a service
//! with `KillMode=process` (or `none`) leaves its other processes behind
//! when it stops or restarts, in the same cgroup. They must not keep the
//! service's identity.
//!
//! systemd writes `/run/systemd/units/invocation:<unit>` (a symlink to the
//! invocation's ID, readable by every user) once per invocation, before it
//! forks the invocation's first process, and removes it when the unit
//! stops. So a process of the current invocation started after that
//! symlink was made; a process that started before it, or of a unit with
//! no symlink, is of an earlier invocation. Where systemd keeps no such
//! directory (no systemd, a container) there is nothing to tell them apart
//! by, and the cgroup alone decides.

use std::path::Path;
use std::time::{Duration, SystemTime};

/// Where systemd's system manager exports per-unit state.
pub const UNITS_DIR: &str = "/run/systemd/units";

/// What the clocks may disagree by: the process's start time is known to
/// a clock tick (10 ms), the symlink's to the file system's timestamp.
const SLACK: Duration = Duration::from_millis(250);

/// The kernel's USER_HZ, the unit of /proc/PID/stat's start time (fixed at
/// 100 on every architecture Linux reports it for).
const TICKS_PER_SECOND: u64 = 100;

/// Whether `pid`, found in `unit`'s cgroup, belongs to `unit`'s current
/// invocation.
pub fn of_current_invocation(unit: &str, pid: i32) -> bool {
    decide(Path::new(UNITS_DIR), unit, started_at(pid))
}

/// The decision, given where systemd exports unit state and when the
/// process started (None: unknown).
fn decide(units: &Path, unit: &str, started: Option<SystemTime>) -> bool {
    if !units.is_dir() {
        return true;
    }
    let Ok(link) = std::fs::symlink_metadata(units.join(format!("invocation:{unit}"))) else {
        return false;
    };
    match (link.modified(), started) {
        (Ok(began), Some(started)) => started + SLACK >= began,
        _ => false,
    }
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
    fn only_a_process_started_after_the_invocation_began_is_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let units = dir.path().join("units");
        // No systemd bookkeeping: the cgroup alone decides.
        assert!(decide(&units, "shop.service", None));
        std::fs::create_dir(&units).unwrap();
        // The unit has no current invocation: whatever is in its cgroup lingers.
        assert!(!decide(&units, "shop.service", Some(SystemTime::now())));
        std::os::unix::fs::symlink(
            "0123456789abcdef0123456789abcdef",
            units.join("invocation:shop.service"),
        )
        .unwrap();
        let began = std::fs::symlink_metadata(units.join("invocation:shop.service"))
            .unwrap()
            .modified()
            .unwrap();
        assert!(decide(
            &units,
            "shop.service",
            Some(began + Duration::from_secs(1))
        ));
        assert!(decide(&units, "shop.service", Some(began - SLACK / 2)));
        assert!(!decide(
            &units,
            "shop.service",
            Some(began - Duration::from_secs(5))
        ));
        assert!(!decide(&units, "shop.service", None));
        // Another unit's invocation says nothing of this one.
        assert!(!decide(
            &units,
            "other.service",
            Some(began + Duration::from_secs(1))
        ));
    }

    #[test]
    fn this_process_started_in_the_past_on_the_wall_clock() {
        let started = started_at(std::process::id() as i32).unwrap();
        let now = SystemTime::now();
        assert!(started <= now + SLACK);
        assert!(now.duration_since(started).unwrap_or_default() < Duration::from_secs(24 * 3600));
    }
}
