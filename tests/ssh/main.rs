//! SSH user certificates end to end: a real zeroth server signs with its
//! HSM-held CA key, a real sshd trusts that CA, the real ssh client logs in.

use std::path::Path;
use std::process::Command;

use zeroth::agent::enrol::{client, post_json, AgentError, Enrolment};
use zeroth::agent::{enrol, EnrolOptions, Outcome};
use zeroth::lab::sshd::SshdOptions;
use zeroth::lab::{tools, LabDir, SoftHsm, Sshd, Swtpm, ZerothServer};
use zeroth::server::api::ssh::{SshSignRequest, SshSignResponse};

fn refusal(e: AgentError) -> (u16, String) {
    match e {
        AgentError::Refused { status, reason } => (status, reason),
        other => panic!("expected a refusal, got {other}"),
    }
}

/// Runs `ssh … true` with `key` and its certificate; true if it logged in.
fn login(sshd: &Sshd, key: &Path, cert: &Path, bind: Option<&str>) -> (bool, String) {
    let mut cmd = sshd.ssh_command().unwrap();
    cmd.arg("-i")
        .arg(key)
        .arg("-o")
        .arg(format!("CertificateFile={}", cert.display()));
    if let Some(addr) = bind {
        cmd.args(["-b", addr]);
    }
    let out = cmd.arg("true").output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A server with an `ops` SSH role, an enrolled node, and an sshd that
/// trusts the server's user CA and reads its KRL from a file.
struct SshLab {
    tpm: Swtpm,
    _hsm: SoftHsm,
    _roots: LabDir,
    server: ZerothServer,
    agent: LabDir,
    work: LabDir,
    sshd: Sshd,
    krl_file: std::path::PathBuf,
    user: String,
    node_id: String,
}

fn lab() -> SshLab {
    let tpm = Swtpm::start().unwrap();
    let hsm = SoftHsm::start().unwrap();
    let roots = LabDir::new("roots").unwrap();
    std::fs::copy(tpm.ca_root_pem(), roots.join("root.pem")).unwrap();
    let me = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let user = if rustix::process::geteuid().is_root() {
        "root".to_owned()
    } else {
        me
    };
    let groups = format!(
        "[[group]]\nname = \"edge\"\nek_roots = \"{}\"\nek_intermediates = \"{}\"\nauto_approve = true\n\n[[ssh_role]]\nname = \"ops\"\nprincipals = [\"{user}\", \"node-{{{{node}}}}\"]\nallow_groups = [\"edge\"]\n",
        roots.path().display(),
        tpm.ca_intermediate_pem().display()
    );
    let server =
        ZerothServer::start(Path::new(env!("CARGO_BIN_EXE_zeroth")), &hsm, &groups).unwrap();
    let agent = LabDir::new("agent").unwrap();
    let opts = EnrolOptions {
        server: server.url().to_owned(),
        ca_bundle: server.bundle(),
        group: "edge".into(),
        tcti: tpm.tcti(),
        state_dir: agent.path().to_owned(),
    };
    let Outcome::Approved { node_id, .. } = enrol(&opts).unwrap() else {
        panic!("not approved");
    };

    // sshd trusts the CA key zeroth publishes, nothing else.
    let ca = client(&server.bundle())
        .unwrap()
        .get(format!("{}/v1/ssh/ca/user", server.url()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(ca.starts_with("ssh-ed25519 "), "{ca}");
    let work = LabDir::new("ssh-client").unwrap();
    let ca_file = work.write("user_ca.pub", ca.as_bytes(), 0o644).unwrap();
    let krl_file = work
        .write("revoked_keys", &fetch_krl(&server), 0o644)
        .unwrap();
    let sshd = Sshd::start(&SshdOptions {
        trusted_user_ca_keys: Some(ca_file),
        revoked_keys: Some(krl_file.clone()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(sshd.login_user(), user);

    SshLab {
        tpm,
        _hsm: hsm,
        _roots: roots,
        server,
        agent,
        work,
        sshd,
        krl_file,
        user,
        node_id,
    }
}

fn fetch_krl(server: &ZerothServer) -> Vec<u8> {
    client(&server.bundle())
        .unwrap()
        .get(format!("{}/v1/ssh/krl", server.url()))
        .send()
        .unwrap()
        .bytes()
        .unwrap()
        .to_vec()
}

#[test]
fn a_certificate_from_the_hsm_ca_logs_in_within_its_principals_and_source_address_until_revoked() {
    let lab = lab();
    let SshLab {
        tpm,
        server,
        agent,
        work,
        sshd,
        krl_file,
        user,
        node_id,
        ..
    } = &lab;
    // A key of the person's, certified for five minutes.
    let key = ssh_key::PrivateKey::random(
        &mut p256::elliptic_curve::rand_core::OsRng,
        ssh_key::Algorithm::Ed25519,
    )
    .unwrap();
    let key_file = work
        .write_private(
            "id",
            key.to_openssh(ssh_key::LineEnding::LF).unwrap().as_bytes(),
        )
        .unwrap();
    let e = Enrolment::open(&tpm.tcti(), agent.path()).unwrap();
    let svid = std::fs::read_to_string(agent.join("svid.pem")).unwrap();
    let http = e.mtls_client(&server.bundle(), &svid).unwrap();
    let url = format!("{}/v1/ssh/sign/ops", server.url());
    let sign = |principals: Option<Vec<String>>, public_key: String| {
        post_json::<_, SshSignResponse>(
            &http,
            &url,
            &SshSignRequest {
                public_key,
                principals,
                ttl_seconds: None,
            },
        )
    };
    let public = key.public_key().to_openssh().unwrap();

    // No certificate: refused.
    let plain = work.write("plain-cert.pub", b"", 0o644).unwrap();
    assert!(!login(sshd, &key_file, &plain, None).0);

    let signed = sign(None, public.clone()).unwrap();
    assert_eq!(signed.principals, [user.clone(), format!("node-{node_id}")]);
    let cert = ssh_key::Certificate::from_openssh(&signed.certificate).unwrap();
    assert!(
        cert.key_id().contains(&signed.lease_id),
        "{}",
        cert.key_id()
    );
    assert_eq!(cert.serial(), signed.serial);
    assert_eq!(
        cert.critical_options()
            .get("source-address")
            .map(String::as_str),
        Some("127.0.0.1/32")
    );
    let backdated = cert.valid_after() as i64;
    assert!(
        signed.valid_before - backdated >= 300 + 30,
        "backdated for clock skew"
    );
    let cert_file = work
        .write("id-cert.pub", signed.certificate.as_bytes(), 0o644)
        .unwrap();
    let (ok, err) = login(sshd, &key_file, &cert_file, None);
    assert!(ok, "{err}\n{}", sshd.log());
    // From another address than the one that asked: refused.
    let (ok, err) = login(sshd, &key_file, &cert_file, Some("127.0.0.2"));
    assert!(!ok, "source-address was not enforced");
    assert!(err.contains("Permission denied"), "{err}");
    // sshd saw the connection from 127.0.0.2 and did not accept the key
    // (its log is written by another process: wait for the line).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !sshd
        .log()
        .contains("Connection closed by authenticating user")
        || !sshd.log().contains("from 127.0.0.2")
    {
        assert!(std::time::Instant::now() < deadline, "{}", sshd.log());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!sshd
        .log()
        .contains("Accepted publickey for root from 127.0.0.2"));

    // The holder gives the certificate back: it lands in the KRL, which
    // ssh-keygen reads as revoked and sshd refuses once it has the file.
    let status = http
        .post(format!(
            "{}/v1/leases/{}/revoke",
            server.url(),
            signed.lease_id
        ))
        .send()
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 204);
    let krl = fetch_krl(server);
    let fresh = work.write("krl.new", &krl, 0o644).unwrap();
    let query = Command::new(tools::SSH_KEYGEN.path().unwrap())
        .args(["-Q", "-f"])
        .arg(&fresh)
        .arg(&cert_file)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&query.stdout).contains("REVOKED"),
        "{}{}",
        String::from_utf8_lossy(&query.stdout),
        String::from_utf8_lossy(&query.stderr)
    );
    assert!(
        login(sshd, &key_file, &cert_file, None).0,
        "sshd has the old KRL still"
    );
    std::fs::rename(&fresh, krl_file).unwrap();
    let (ok, err) = login(sshd, &key_file, &cert_file, None);
    assert!(!ok, "a revoked certificate logged in");
    assert!(err.contains("Permission denied"), "{err}");

    // Serials are unique; only the role's principals; weak keys refused.
    let again = sign(Some(vec![user.clone()]), public.clone()).unwrap();
    assert_ne!(again.serial, signed.serial);
    let (status, reason) =
        refusal(sign(Some(vec!["postgres".into()]), public.clone()).unwrap_err());
    assert_eq!(status, 403);
    assert!(
        reason.contains("principal \"postgres\" is not allowed"),
        "{reason}"
    );
    let rsa = work.join("rsa");
    let out = Command::new(tools::SSH_KEYGEN.path().unwrap())
        .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
        .arg(&rsa)
        .output()
        .unwrap();
    assert!(out.status.success());
    let rsa_pub = std::fs::read_to_string(rsa.with_extension("pub")).unwrap();
    let (status, reason) = refusal(sign(None, rsa_pub).unwrap_err());
    assert_eq!(status, 400);
    assert!(reason.contains("3072"), "{reason}");
    let (status, reason) = refusal(sign(None, "ssh-ed25519 AAAA".into()).unwrap_err());
    assert_eq!(status, 400);
    assert!(reason.contains("`public_key`"), "{reason}");
    let (status, _) = refusal(
        post_json::<_, SshSignResponse>(
            &http,
            &format!("{}/v1/ssh/sign/nope", server.url()),
            &SshSignRequest {
                public_key: public,
                principals: None,
                ttl_seconds: None,
            },
        )
        .unwrap_err(),
    );
    assert_eq!(status, 404);
}

#[test]
fn zeroth_ssh_logs_in_with_a_key_that_never_touches_the_disk() {
    let lab = lab();
    let config = lab.agent.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "server = \"{}\"\nca_bundle = \"{}\"\ngroup = \"edge\"\ntcti = \"{}\"\nstate_dir = \"{}\"\n",
            lab.server.url(),
            lab.server.bundle().display(),
            lab.tpm.tcti(),
            lab.agent.path().display()
        ),
    )
    .unwrap();
    let before: Vec<_> = std::fs::read_dir(lab.agent.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_zeroth"))
        .args(["ssh", "--role", "ops", "--principal", &lab.user, "--config"])
        .arg(&config)
        .args([
            "--",
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "IdentitiesOnly=no",
        ])
        .args(["-p", &lab.sshd.port().to_string()])
        .arg(format!("{}@127.0.0.1", lab.user))
        .args(["echo", "hello from sshd"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{}", lab.sshd.log());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello from sshd"
    );
    assert!(stderr.starts_with("certificate "), "{stderr}");
    // sshd saw a certificate from zeroth's CA.
    assert!(
        lab.sshd.log().contains("Accepted publickey for"),
        "{}",
        lab.sshd.log()
    );
    assert!(
        lab.sshd.log().contains("ED25519-CERT"),
        "{}",
        lab.sshd.log()
    );
    // Nothing new on the node's disk, and the lease was given back.
    let after: Vec<_> = std::fs::read_dir(lab.agent.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        before.len(),
        after.len(),
        "the session wrote to the node's state: {after:?}"
    );
    let krl = fetch_krl(&lab.server);
    assert!(krl.len() > 60, "the given-back certificate is in the KRL");
}
