//! Who is on the other end of the workload socket: the uid and pid the
//! kernel reports for the connection (SO_PEERCRED), and the systemd unit
//! the process runs in, read from its cgroup. An unprivileged process
//! cannot move itself into another unit's cgroup, so the unit names the
//! program as its operator deployed it, not as it describes itself.

/// The program that connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub pid: i32,
    /// The systemd service it runs in, e.g. "shop.service"; `None` outside
    /// one (a login session, a container without systemd).
    pub unit: Option<String>,
}

impl Caller {
    /// The caller of `conn`. The unit is read twice around a check that the
    /// pid still names the process that connected (same start time), so a
    /// process that exits and whose pid is reused is not mistaken for the
    /// newcomer.
    pub fn of(conn: &impl std::os::fd::AsFd) -> Result<Self, String> {
        let cred = rustix::net::sockopt::socket_peercred(conn)
            .map_err(|e| format!("cannot identify the caller: {e}"))?;
        let (uid, pid) = (cred.uid.as_raw(), cred.pid.as_raw_nonzero().get());
        let started = start_time(pid);
        let unit = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|text| unit_in_cgroup(&text));
        if started.is_none() || start_time(pid) != started {
            return Err(format!("the caller (pid {pid}) has gone"));
        }
        Ok(Self { uid, pid, unit })
    }

    /// How the audit names the program: "uid 1001 pid 4242 unit shop.service".
    pub fn describe(&self) -> String {
        match (&self.unit, self.pid) {
            (_, pid) if pid <= 0 => format!("uid {} over loopback TCP", self.uid),
            (Some(u), pid) => format!("uid {} pid {pid} unit {u}", self.uid),
            (None, pid) => format!("uid {} pid {pid}", self.uid),
        }
    }
}

/// The process's start time, in clock ticks since boot (field 22 of
/// /proc/PID/stat): with the pid, it names one process.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which ends at the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The system service in a /proc/PID/cgroup text: on the unified (cgroup
/// v2) line, the first component after the slices, as in
/// "0::/system.slice/x.service". Only the system manager's units count: a
/// user's own manager (under user.slice) may name its units anything, and
/// a service with a delegated subtree may name its sub-groups anything, so
/// neither can pass for another service.
pub fn unit_in_cgroup(text: &str) -> Option<String> {
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let mut parts = path.split('/').filter(|c| !c.is_empty());
    for part in parts.by_ref() {
        if part == "user.slice" {
            return None;
        }
        if part.ends_with(".slice") {
            continue;
        }
        let is_service = part.len() > ".service".len() && part.ends_with(".service");
        return is_service.then(|| part.to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn the_unit_is_the_system_service_right_under_the_slices() {
        let unit = |t: &str| unit_in_cgroup(t);
        assert_eq!(
            unit("0::/system.slice/shop.service\n").as_deref(),
            Some("shop.service")
        );
        assert_eq!(
            unit("0::/system.slice/system-app.slice/app@2.service\n").as_deref(),
            Some("app@2.service")
        );
        // A hybrid system: only the unified line counts.
        let hybrid = "1:name=systemd:/system.slice/other.service\n0::/system.slice/shop.service\n";
        assert_eq!(unit(hybrid).as_deref(), Some("shop.service"));
        // Sub-groups a service made for itself do not name another service.
        assert_eq!(
            unit("0::/system.slice/app.service/shop.service\n").as_deref(),
            Some("app.service")
        );
        // A user's own manager names its units as it likes: none count.
        assert_eq!(
            unit("0::/user.slice/user-1000.slice/user@1000.service/app.slice/shop.service\n"),
            None
        );
        assert_eq!(
            unit("0::/user.slice/user-1000.slice/session-3.scope\n"),
            None
        );
        assert_eq!(unit("0::/init.scope\n"), None);
        assert_eq!(unit("0::/\n"), None);
        assert_eq!(unit(""), None);
        assert_eq!(unit("0::/system.slice/.service\n"), None);
    }

    #[test]
    fn this_process_is_its_own_caller() {
        let (a, _b) = UnixStream::pair().unwrap();
        let me = Caller::of(&a).unwrap();
        assert_eq!(me.uid, rustix::process::getuid().as_raw());
        assert_eq!(me.pid as u32, std::process::id());
        assert!(me.describe().starts_with(&format!("uid {} pid ", me.uid)));
    }
}
