//! Local accounts: the one daemons refusing root (PostgreSQL) run as, and the
//! one sshd logins land in.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use super::LabError;

/// An /etc/passwd entry: name, uid, gid.
fn find(pred: impl Fn(&str, u32) -> bool) -> Result<Option<(String, u32, u32)>, LabError> {
    let passwd =
        std::fs::read_to_string("/etc/passwd").map_err(|e| LabError::io("read /etc/passwd", e))?;
    Ok(passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let uid: u32 = f.next()?.parse().ok()?;
        let gid: u32 = f.next()?.parse().ok()?;
        pred(name, uid).then(|| (name.to_owned(), uid, gid))
    }))
}

/// The name of the account this process runs as.
pub fn current_user_name() -> Result<String, LabError> {
    let uid = rustix::process::geteuid().as_raw();
    find(|_, u| u == uid)?
        .map(|(name, _, _)| name)
        .ok_or_else(|| LabError::Unsupported(format!("uid {uid} has no entry in /etc/passwd")))
}

/// When the lab runs as root: the `nobody` account; otherwise: ourselves.
#[derive(Debug, Clone, Copy)]
pub struct Unprivileged {
    ids: Option<(u32, u32)>,
}

pub fn unprivileged() -> Result<Unprivileged, LabError> {
    if !rustix::process::geteuid().is_root() {
        return Ok(Unprivileged { ids: None });
    }
    let (_, uid, gid) = find(|name, _| name == "nobody")?.ok_or_else(|| {
        LabError::Unsupported(
            "running as root, the lab needs the unprivileged account `nobody` (package base-passwd)"
                .into(),
        )
    })?;
    Ok(Unprivileged {
        ids: Some((uid, gid)),
    })
}

impl Unprivileged {
    /// Makes `cmd` run as this account.
    pub fn apply(&self, cmd: &mut Command) {
        if let Some((uid, gid)) = self.ids {
            cmd.uid(uid).gid(gid);
        }
    }

    /// Gives `path` to this account.
    pub fn chown(&self, path: &Path) -> Result<(), LabError> {
        match self.ids {
            None => Ok(()),
            Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(|e| LabError::io(format!("chown {}", path.display()), e)),
        }
    }
}

/// A program copied where every account can run it: a build tree under a
/// private directory (a clone in /root, say) cannot be reached by the
/// other uids the lab runs programs as. Removed on drop.
#[derive(Debug)]
pub struct RunnableCopy {
    path: std::path::PathBuf,
    _dir: super::LabDir,
}

impl RunnableCopy {
    /// Links (or, across file systems, copies) `program` into a lab
    /// directory, mode 0755.
    pub fn of(program: &Path) -> Result<Self, LabError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = super::LabDir::new("bin")?;
        let name = program
            .file_name()
            .unwrap_or(std::ffi::OsStr::new("program"));
        let path = dir.join(name);
        if std::fs::hard_link(program, &path).is_err() {
            std::fs::copy(program, &path)
                .map_err(|e| LabError::io(format!("copy {}", program.display()), e))?;
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| LabError::io(format!("chmod {}", path.display()), e))?;
        Ok(Self { path, _dir: dir })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
