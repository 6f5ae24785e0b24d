//! The lab's temporary directories.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::LabError;

const PREFIX: &str = "zeroth-lab.";

/// A private temporary directory, removed on drop.
///
/// Its name carries our PID, so a lab started later removes the directories
/// of processes that were killed before they could clean up.
#[derive(Debug)]
pub struct LabDir {
    inner: tempfile::TempDir,
}

impl LabDir {
    /// Creates `$TMPDIR/zeroth-lab.<pid>.<component>.<random>`, traversable
    /// (mode 0711) so daemons that run unprivileged can reach their own
    /// subdirectory, but not listable by others.
    pub fn new(component: &str) -> Result<Self, LabError> {
        sweep_stale(&std::env::temp_dir());
        let inner = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}.{component}.", std::process::id()))
            .tempdir()
            .map_err(|e| LabError::io("create the lab directory", e))?;
        fs::set_permissions(inner.path(), fs::Permissions::from_mode(0o711))
            .map_err(|e| LabError::io("chmod the lab directory", e))?;
        Ok(Self { inner })
    }

    pub fn path(&self) -> &Path {
        self.inner.path()
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.inner.path().join(p)
    }

    /// Creates a subdirectory with the given mode.
    pub fn subdir(&self, name: &str, mode: u32) -> Result<PathBuf, LabError> {
        let p = self.join(name);
        fs::create_dir_all(&p).map_err(|e| LabError::io(format!("mkdir {}", p.display()), e))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
            .map_err(|e| LabError::io(format!("chmod {}", p.display()), e))?;
        Ok(p)
    }

    /// Writes a file readable only by its owner (mode 0600).
    pub fn write_private(&self, name: &str, contents: &[u8]) -> Result<PathBuf, LabError> {
        self.write(name, contents, 0o600)
    }

    /// Writes a file with the given mode.
    pub fn write(&self, name: &str, contents: &[u8], mode: u32) -> Result<PathBuf, LabError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let p = self.join(name);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&p)
            .map_err(|e| LabError::io(format!("create {}", p.display()), e))?;
        f.write_all(contents)
            .map_err(|e| LabError::io(format!("write {}", p.display()), e))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
            .map_err(|e| LabError::io(format!("chmod {}", p.display()), e))?;
        Ok(p)
    }
}

/// Removes lab directories whose owning process no longer exists.
fn sweep_stale(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            tracing::debug!(dir = %entry.path().display(), "removing a stale lab directory");
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_directories_of_dead_processes_are_swept() {
        let tmp = tempfile::tempdir().unwrap();
        // PID 0 is never a user process, so its directory is stale by definition.
        let stale = tmp.path().join(format!("{PREFIX}0.swtpm.abc"));
        let live = tmp
            .path()
            .join(format!("{PREFIX}{}.swtpm.abc", std::process::id()));
        let foreign = tmp.path().join("someone-else.0");
        for d in [&stale, &live, &foreign] {
            fs::create_dir(d).unwrap();
        }
        sweep_stale(tmp.path());
        assert!(!stale.exists());
        assert!(live.exists());
        assert!(foreign.exists());
    }

    #[test]
    fn private_files_are_0600() {
        let d = LabDir::new("unit").unwrap();
        let p = d.write_private("pin", b"1234").unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let root = d.path().to_owned();
        drop(d);
        assert!(!root.exists());
    }
}
