use std::path::{Path, PathBuf};
use std::process::Command;

use zeroth::lab::{tools::SSH_KEYGEN, LabDir, Sshd, SshdOptions};

fn keygen(dir: &LabDir, name: &str) -> PathBuf {
    let key = dir.join(name);
    let st = Command::new(SSH_KEYGEN.path().unwrap())
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    key
}

fn ssh_with(sshd: &Sshd, key: &Path) -> std::process::Output {
    sshd.ssh_command()
        .unwrap()
        .arg("-i")
        .arg(key)
        .args(["echo", "logged-in-as-$(id -un)"])
        .output()
        .unwrap()
}

#[test]
fn sshd_accepts_an_authorised_key_and_refuses_another() {
    let dir = LabDir::new("sshd-test").unwrap();
    let good = keygen(&dir, "good");
    let bad = keygen(&dir, "bad");
    let authorized = dir.join("authorized_keys");
    std::fs::copy(good.with_extension("pub"), &authorized).unwrap();
    let sshd = Sshd::start(&SshdOptions {
        authorized_keys: Some(authorized),
        ..Default::default()
    })
    .unwrap();

    let ok = ssh_with(&sshd, &good);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        format!("logged-in-as-{}", sshd.login_user())
    );

    let refused = ssh_with(&sshd, &bad);
    assert_eq!(refused.status.code(), Some(255));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("Permission denied"), "{err}");
    assert!(sshd.log().contains("Accepted publickey"), "{}", sshd.log());
}
