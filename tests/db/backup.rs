//! Backup and restore: an online snapshot taken while users are being
//! issued, restored for a fresh server on the same HSM token, refused on
//! any other token.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use secrecy::ExposeSecret;
use zeroth::agent::enrol;
use zeroth::lab::{LabDir, LabError, SoftHsm, ZerothServer};

use super::{eventually, lab, psql, psql_super_with, Lab};

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_zeroth"))
}

fn role_exists(lab: &Lab, name: &str) -> bool {
    psql_super_with(
        &lab.pg,
        lab.pg.password().expose_secret(),
        &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{name}'"),
    )
    .unwrap()
        == "1"
}

fn user_ca(server: &ZerothServer) -> String {
    enrol::client(&server.bundle())
        .unwrap()
        .get(format!("{}/v1/ssh/ca/user", server.url()))
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.text())
        .unwrap()
}

fn refusal(restored: Result<(ZerothServer, String), LabError>) -> String {
    match restored {
        Err(LabError::Command { output, .. }) => output,
        Err(e) => panic!("restore failed otherwise: {e}"),
        Ok((_, printed)) => panic!("restore was not refused: {printed}"),
    }
}

#[test]
fn a_backup_taken_under_issuance_restores_on_its_token_and_nowhere_else() {
    let mut lab = lab();
    lab.add_connections();
    let kept = lab.creds("app-ro", Some(1800)).unwrap();
    // Expires between the backup and the restore.
    let short = lab.creds("app-ro", Some(10)).unwrap();
    let ca_before = user_ca(&lab.server);
    let out_dir = LabDir::new("backups").unwrap();
    let file = out_dir.join("zeroth-backup.db");

    // The backup is taken while another client keeps asking for users.
    let stop = AtomicBool::new(false);
    let (issued_tx, issued) = mpsc::channel();
    let (ok, printed, during) = std::thread::scope(|s| {
        let load = s.spawn(|| {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                lab.creds("app-ro", Some(1800)).unwrap();
                n += 1;
                let _ = issued_tx.send(n);
            }
            n
        });
        for _ in 0..3 {
            issued.recv().unwrap();
        }
        let (ok, printed) = lab.zeroth(&["backup", "--out", file.to_str().unwrap()], "");
        stop.store(true, Ordering::Relaxed);
        (ok, printed, load.join().unwrap())
    });
    assert!(ok, "{printed}");
    assert!(printed.contains("backup written to"), "{printed}");
    assert!(during >= 3);
    let backup = std::fs::read(&file).unwrap();
    let admin_password = lab.pg.password().expose_secret().to_owned();
    assert!(
        !backup
            .windows(admin_password.len())
            .any(|w| w == admin_password.as_bytes()),
        "the database's admin password is in the backup in the clear"
    );
    let recorded = lab.server.audit_details("store.backup").unwrap();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["by_uid"], 0);
    lab.server.stop();

    // Waiting for the short lease's expiry is the point here.
    let expiry = SystemTime::UNIX_EPOCH + Duration::from_secs(short.expires as u64);
    if let Ok(left) = expiry.duration_since(SystemTime::now()) {
        std::thread::sleep(left + Duration::from_secs(1));
    }

    // Another token, with keys of its own: refused, nothing started.
    let other = SoftHsm::start().unwrap();
    drop(ZerothServer::start(exe(), &other, &lab.groups).unwrap());
    let why = refusal(ZerothServer::start_from_backup(
        exe(),
        &other,
        &lab.groups,
        &file,
    ));
    assert!(
        why.contains("restore refused") && why.contains("another token"),
        "{why}"
    );
    // A token without zeroth's keys: refused, naming the missing key.
    let empty = SoftHsm::start().unwrap();
    let why = refusal(ZerothServer::start_from_backup(
        exe(),
        &empty,
        &lab.groups,
        &file,
    ));
    assert!(why.contains("has no key"), "{why}");

    // The same token: restored for a fresh server.
    let (restored, printed) =
        ZerothServer::start_from_backup(exe(), &lab.hsm, &lab.groups, &file).unwrap();
    assert!(printed.contains("restored 1 nodes"), "{printed}");
    assert!(printed.contains("sealed secrets open"), "{printed}");
    // What a rollback undoes is said, and the restore is on the record,
    // with SSH serials moved past any issued after the backup.
    assert!(
        printed.contains("what happened since is undone") && printed.contains("revoke them again"),
        "{printed}"
    );
    let restored_events = restored.audit_details("store.restored").unwrap();
    assert_eq!(restored_events.len(), 1, "{restored_events:?}");
    assert!(
        restored_events[0]["ssh_serials_from"].as_i64().unwrap() > 1 << 40,
        "{restored_events:?}"
    );
    // Never over a store.
    let again = Command::new(exe())
        .arg("restore")
        .arg(&file)
        .arg("--config")
        .arg(restored.config())
        .env("SOFTHSM2_CONF", lab.hsm.conf())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && said.contains("already holds a store"),
        "{said}"
    );
    lab.server = restored;

    let verified = Command::new(exe())
        .args(["audit", "verify", "--config"])
        .arg(lab.server.config())
        .env("SOFTHSM2_CONF", lab.hsm.conf())
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert_eq!(user_ca(&lab.server), ca_before, "the SSH user CA changed");
    // The lease still running is there and its user works; the node is
    // still approved and the sealed admin password opens (a new user).
    let (ok, live) = lab.zeroth(&["lease", "list", "--json"], "");
    assert!(ok && live.contains(&kept.lease_id), "{live}");
    psql(&kept, "SELECT 1").unwrap();
    let fresh = lab.creds("app-ro", None).unwrap();
    psql(&fresh, "SELECT 1").unwrap();
    // The lease that expired in between is revoked, its user dropped.
    eventually(Duration::from_secs(20), || {
        let (ok, live) = lab.zeroth(&["lease", "list", "--json"], "");
        assert!(ok, "{live}");
        if live.contains(&short.lease_id) || role_exists(&lab, &short.username) {
            return Err(format!("{} not revoked yet: {live}", short.lease_id));
        }
        Ok(())
    });
}
