//! A cgroup standing for a system service, as systemd makes one
//! ("…/<lab slice>/<name>.service" in the unified hierarchy), so that the
//! workload API's service check can be shown and tested without systemd.
//! Needs root and a mounted cgroup2 hierarchy.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct ServiceCgroup {
    slice: PathBuf,
    dir: PathBuf,
}

impl ServiceCgroup {
    /// Makes the cgroup of service `name` (e.g. "shop.service") under a
    /// slice of this process's own.
    pub fn new(name: &str) -> Result<Self, String> {
        let root = unified_root()?;
        let slice = root.join(format!("zeroth-lab-{}.slice", std::process::id()));
        let dir = slice.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| {
            format!(
                "cannot make the cgroup {}: {e} (run as root)",
                dir.display()
            )
        })?;
        Ok(Self { slice, dir })
    }

    /// `program args…` run as `uid`, moved into this service's cgroup
    /// before it starts.
    pub fn command_as(&self, uid: u32, program: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"echo $$ > "$1" && shift && exec "$@""#)
            .arg("sh")
            .arg(self.dir.join("cgroup.procs"))
            .args([
                "setpriv",
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
            ])
            .arg(program)
            .args(args);
        cmd
    }
}

impl Drop for ServiceCgroup {
    fn drop(&mut self) {
        // Empty once its processes have exited.
        let _ = std::fs::remove_dir(&self.dir);
        let _ = std::fs::remove_dir(&self.slice);
    }
}

/// Where the unified (cgroup v2) hierarchy is mounted.
fn unified_root() -> Result<PathBuf, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    mountinfo
        .lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split_whitespace().next()? == "cgroup2")
                .then(|| pre.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .ok_or_else(|| {
            "no cgroup2 (unified) hierarchy is mounted: mount one (mount -t cgroup2 none /sys/fs/cgroup) to tell services apart".to_owned()
        })
}
