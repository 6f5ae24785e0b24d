//! Stock clients from PyPI that tests and the demo run against zeroth, to
//! show that it speaks their protocols unchanged. `make deps`
//! (scripts/clients.sh) installs them in a virtual environment of Debian's
//! Python, readable by every user.

use std::path::PathBuf;

use super::{LabDir, LabError};

/// The Python with py-spiffe (the SPIFFE Workload API client) installed.
pub const PY_SPIFFE_PYTHON: &str = "/opt/zeroth-test/py-spiffe/bin/python3";
/// The py-spiffe release the project tests against.
pub const PY_SPIFFE_VERSION: &str = "0.3.2";

/// The interpreter with py-spiffe, or how to get it.
pub fn py_spiffe() -> Result<PathBuf, LabError> {
    let p = PathBuf::from(PY_SPIFFE_PYTHON);
    if p.is_file() {
        return Ok(p);
    }
    Err(LabError::Unsupported(format!(
        "py-spiffe {PY_SPIFFE_VERSION} is not installed at {PY_SPIFFE_PYTHON}: run `make deps` as root (scripts/clients.sh)"
    )))
}

/// A small program using py-spiffe (`spiffe_probe.py`), written into `dir`
/// where any user may read it: what it prints is one JSON object per answer.
pub fn spiffe_probe(dir: &LabDir) -> Result<PathBuf, LabError> {
    dir.write(
        "spiffe_probe.py",
        include_str!("clients/spiffe_probe.py").as_bytes(),
        0o644,
    )
}

/// Two programs that open mTLS to each other with their X.509-SVIDs and
/// check each other's SPIFFE ID (`spiffe_mtls.py`), written into `dir`.
pub fn spiffe_mtls(dir: &LabDir) -> Result<PathBuf, LabError> {
    dir.write(
        "spiffe_mtls.py",
        include_str!("clients/spiffe_mtls.py").as_bytes(),
        0o644,
    )
}

/// `exec_probe.py`, which asks a Workload API socket the ways an impostor
/// would (HTTP/2 written by hand, standard library only), and a private
/// copy of the system's Python: a program of its own by path and inode,
/// for an entry to name. Both written into `dir`, runnable by every user.
pub fn exec_probe(dir: &LabDir) -> Result<(PathBuf, PathBuf), LabError> {
    let script = dir.write(
        "exec_probe.py",
        include_str!("clients/exec_probe.py").as_bytes(),
        0o644,
    )?;
    let system = std::fs::canonicalize("/usr/bin/python3")
        .map_err(|e| LabError::io("find python3 (make deps)", e))?;
    let python = std::fs::read(&system)
        .map_err(|e| LabError::io(format!("read {}", system.display()), e))?;
    let copy = dir.write("x-python", &python, 0o755)?;
    Ok((script, copy))
}

/// What `exec_probe.py` printed (its JSON lines merged into one object),
/// run by `program` as `uid`.
pub fn run_exec_probe(
    uid: u32,
    program: &std::path::Path,
    script: &std::path::Path,
    args: &[&str],
) -> Result<serde_json::Value, LabError> {
    let out = std::process::Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
        ])
        .arg(program)
        .arg(script)
        .args(args)
        .output()
        .map_err(|e| LabError::io("run exec_probe.py", e))?;
    let failed = |why: String| LabError::NotReady {
        what: format!("exec_probe.py {args:?} as uid {uid}"),
        after: std::time::Duration::ZERO,
        log: why,
    };
    if !out.status.success() {
        return Err(failed(String::from_utf8_lossy(&out.stderr).into_owned()));
    }
    let mut merged = serde_json::Map::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        match serde_json::from_str(line) {
            Ok(serde_json::Value::Object(o)) => merged.extend(o),
            _ => return Err(failed(format!("printed {line:?}"))),
        }
    }
    Ok(merged.into())
}
