//! Who is on the other end of the workload socket or a proxy, as the audit
//! names it: the uid and pid the kernel reports for the connection, and the
//! systemd unit the process runs in, read from its cgroup. An unprivileged
//! process cannot move itself into another unit's cgroup, so the unit names
//! the program as its operator deployed it, not as it describes itself.
//! How those facts are read without races is `super::peer`.

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
    /// How the audit names the program: "uid 1001 pid 4242 unit shop.service".
    pub fn describe(&self) -> String {
        match (&self.unit, self.pid) {
            (_, pid) if pid <= 0 => format!("uid {} over loopback TCP", self.uid),
            (Some(u), pid) => format!("uid {} pid {pid} unit {u}", self.uid),
            (None, pid) => format!("uid {} pid {pid}", self.uid),
        }
    }
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
    fn callers_are_described_for_the_audit() {
        let who = |pid, unit: Option<&str>| Caller {
            uid: 1001,
            pid,
            unit: unit.map(Into::into),
        };
        assert_eq!(
            who(42, Some("shop.service")).describe(),
            "uid 1001 pid 42 unit shop.service"
        );
        assert_eq!(who(42, None).describe(), "uid 1001 pid 42");
        assert_eq!(who(0, None).describe(), "uid 1001 over loopback TCP");
    }
}
