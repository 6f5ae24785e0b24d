//! A module that cannot initialise, or shows no token, usually cannot read
//! its own files under the service's account (SoftHSM's configuration and
//! token directories are root's and group softhsm's on Debian). PKCS#11
//! reports only "general error": name the files and the account instead.

use std::path::{Path, PathBuf};

/// What stands in the way, as a parenthesised note for an error message;
/// empty when every file checked is readable.
pub(crate) fn diagnose(module: &Path) -> String {
    let mut problems = Vec::new();
    if let Err(e) = std::fs::File::open(module) {
        problems.push(format!("cannot read {}: {e}", module.display()));
    }
    if module.to_string_lossy().contains("softhsm") {
        softhsm(&mut problems);
    }
    if problems.is_empty() {
        return String::new();
    }
    let uid = rustix::process::geteuid().as_raw();
    let name = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    format!(
        " [{}; zeroth runs as uid {uid}{name}: give it read access, e.g. SupplementaryGroups=softhsm, and tokens it owns]",
        problems.join("; ")
    )
}

/// SoftHSM's configuration, its token directory and each token in it.
fn softhsm(problems: &mut Vec<String>) {
    let conf = std::env::var_os("SOFTHSM2_CONF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/softhsm/softhsm2.conf"));
    let text = match std::fs::read_to_string(&conf) {
        Ok(t) => t,
        Err(e) => {
            problems.push(format!("cannot read {}: {e}", conf.display()));
            return;
        }
    };
    let Some(dir) = text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == "directories.tokendir").then(|| PathBuf::from(v.trim()))
    }) else {
        return;
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) => {
            problems.push(format!(
                "cannot read the token directory {}: {e}",
                dir.display()
            ));
            return;
        }
    };
    for token in entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()) {
        if let Err(e) = std::fs::read_dir(&token) {
            problems.push(format!("cannot read the token {}: {e}", token.display()));
        }
    }
}
