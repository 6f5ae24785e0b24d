//! The demo's backup step: a snapshot of the running server, restored for
//! a second server on the same HSM token, which serves the same CA.

use anyhow::{Context, Result};

use crate::lab::{LabDir, SoftHsm, ZerothServer};

/// `server` runs; `groups` is its configuration's groups and roles.
pub fn show_backup(server: &ZerothServer, hsm: &SoftHsm, groups: &str) -> Result<()> {
    let dir = LabDir::new("demo-backup")?;
    let file = dir.join("zeroth-backup.db");
    let out = file.to_str().context("the backup's path")?;
    println!("$ zeroth backup --out {out}   # online, the server keeps serving");
    let (ok, printed) = server.cli(&["backup", "--out", out], "")?;
    anyhow::ensure!(ok, "zeroth backup failed: {printed}");
    println!("           {}", printed.trim());
    println!(
        "$ zeroth restore {out} --state-dir /var/lib/zeroth   # on a fresh machine, same HSM token"
    );
    let exe = std::env::current_exe().context("find the zeroth binary")?;
    let (mut restored, printed) = ZerothServer::start_from_backup(&exe, hsm, groups, &file)?;
    println!("           {}", printed.trim());
    let same_ca = std::fs::read(restored.bundle())? == std::fs::read(server.bundle())?;
    println!(
        "           the restored server at {} serves {} CA bundle as the original",
        restored.url(),
        if same_ca { "the same" } else { "ANOTHER" }
    );
    anyhow::ensure!(same_ca, "the restored server has another CA");
    restored.stop();
    Ok(())
}
