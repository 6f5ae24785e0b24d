//! One attestor per kind of fact: `unix:uid`, `unix:gid` and
//! `unix:supplementary_gid` from the socket and /proc/PID/status,
//! `systemd:unit` from the cgroup (only the service's current run, see
//! [`super::invocation`]), `unix:path` and `unix:sha256` of the
//! executable (hashed only while an entry names a hash).

use super::caller::unit_in_cgroup;
use super::hashes::HashCache;
use super::invocation;
use crate::wire::entry::Selector;

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
pub(super) fn read_facts(
    pid: i32,
    uid: u32,
    gid: u32,
    hashes: &HashCache,
) -> (Option<String>, Vec<Selector>) {
    let mut facts = unix_ids(pid, uid, gid);
    let unit = systemd_unit(pid);
    if let Some(u) = &unit {
        facts.push(Selector::Unit(u.clone()));
    }
    facts.extend(executable(pid, hashes));
    facts.sort();
    facts.dedup();
    (unit, facts)
}

/// `unix:uid`, `unix:gid` (as the socket reported them) and every
/// `unix:supplementary_gid` of `pid`.
fn unix_ids(pid: i32, uid: u32, gid: u32) -> Vec<Selector> {
    let mut facts = vec![Selector::Uid(uid), Selector::Gid(gid)];
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        for g in status_ids(&status, "Groups:") {
            facts.push(Selector::SupplementaryGid(g));
        }
    }
    facts
}

/// The system service `pid` runs in, if that is the service's current
/// run alone.
fn systemd_unit(pid: i32) -> Option<String> {
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    unit_in_cgroup(&cgroup).filter(|u| match invocation::check(u, &cgroup) {
        Ok(()) => true,
        Err(invocation::NotCurrent::NoRun) => {
            tracing::warn!(pid, unit = %u, "the caller lingers in the cgroup of a service that is not running; not attested as that service");
            false
        }
        Err(invocation::NotCurrent::Leftovers(old)) => {
            tracing::warn!(pid, unit = %u, leftovers = ?old, "the service's cgroup holds processes that an earlier run left behind (KillMode=process?); no process in it is attested as that service until they are gone");
            false
        }
    })
}

/// `unix:path` of `pid`'s executable and, when wanted, its `unix:sha256`.
fn executable(pid: i32, hashes: &HashCache) -> Vec<Selector> {
    let mut facts = Vec::new();
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
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_give_their_ids() {
        let status = "Name:\tx\nUid:\t1\t1\t1\t1\nGroups:\t4 27 1000 \n";
        assert_eq!(status_ids(status, "Groups:"), vec![4, 27, 1000]);
        assert!(status_ids("Groups:\t\n", "Groups:").is_empty());
    }
}
