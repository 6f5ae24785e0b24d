//! SSH user certificates end to end: a real zeroth server signs with its
//! HSM-held CA key, a real sshd trusts that CA, the real ssh client logs in.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use zeroth::agent::enrol::{client, post_json, AgentError, Enrolment};
use zeroth::agent::{enrol, EnrolOptions, Outcome};
use zeroth::lab::sshd::SshdOptions;
use zeroth::lab::{tools, LabDir, SoftHsm, Sshd, Swtpm, ZerothServer};
use zeroth::wire::ssh::{SshSignRequest, SshSignResponse};

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
    lab_with("")
}

/// As [`lab`], with extra top-level server.toml `settings`.
fn lab_with(settings: &str) -> SshLab {
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
        "[[group]]\nname = \"edge\"\nek_roots = \"{}\"\nek_intermediates = \"{}\"\nauto_approve = true\n\n[[ssh_role]]\nname = \"ops\"\nprincipals = [\"{user}\", \"node-{{{{node}}}}\"]\nallow_groups = [\"edge\"]\n\n[[ssh_role]]\nname = \"hosts\"\ncert_type = \"host\"\nprincipals = [\"127.0.0.1\", \"node-{{{{node}}}}.lab\"]\ndefault_ttl = \"1h\"\nmax_ttl = \"1h\"\nallow_groups = [\"edge\"]\n",
        roots.path().display(),
        tpm.ca_intermediate_pem().display()
    );
    let server = ZerothServer::start_configured(
        Path::new(env!("CARGO_BIN_EXE_zeroth")),
        &hsm,
        settings,
        &groups,
        &[],
    )
    .unwrap();
    let agent = LabDir::new("agent").unwrap();
    let opts = EnrolOptions {
        server: server.url().to_owned(),
        ca_bundle: server.bundle(),
        group: "edge".into(),
        tcti: tpm.tcti(),
        state_dir: agent.path().to_owned(),
        event_log: None,
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
    let algorithm = if settings.contains("ecdsa-p256") {
        "ecdsa-sha2-nistp256 "
    } else {
        "ssh-ed25519 "
    };
    assert!(ca.starts_with(algorithm), "{ca}");
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

/// `ssh-keygen -Q`: whether the KRL file revokes the certificate file, and
/// what ssh-keygen said.
fn krl_revokes(krl: &Path, cert: &Path) -> (bool, String) {
    let q = Command::new(tools::SSH_KEYGEN.path().unwrap())
        .args(["-Q", "-f"])
        .arg(krl)
        .arg(cert)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&q.stdout),
        String::from_utf8_lossy(&q.stderr)
    );
    (String::from_utf8_lossy(&q.stdout).contains("REVOKED"), said)
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
    let (revoked, said) = krl_revokes(&fresh, &cert_file);
    assert!(revoked, "{said}");
    // The KRL names it by key id too: a KRL with only that entry revokes it.
    let ca_line = client(&server.bundle())
        .unwrap()
        .get(format!("{}/v1/ssh/ca/user", server.url()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let ca_blob = ssh_key::PublicKey::from_openssh(ca_line.lines().next().unwrap())
        .unwrap()
        .to_bytes()
        .unwrap();
    let by_id = zeroth::creds::ssh::krl::build(
        &[ca_blob],
        &zeroth::creds::ssh::krl::Revoked {
            serials: vec![],
            key_ids: vec![cert.key_id().to_owned()],
        },
        1,
        1,
    );
    let by_id_file = work.write("krl.by-id", &by_id, 0o644).unwrap();
    let (revoked, said) = krl_revokes(&by_id_file, &cert_file);
    assert!(revoked, "key-id entry not honoured: {said}");
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
    // A certificate for another principal does not log in as this user.
    let other = sign(Some(vec![format!("node-{node_id}")]), public.clone()).unwrap();
    let other_file = work
        .write("other-cert.pub", other.certificate.as_bytes(), 0o644)
        .unwrap();
    let (ok, err) = login(sshd, &key_file, &other_file, None);
    assert!(
        !ok,
        "a certificate without the login user's principal logged in"
    );
    assert!(err.contains("Permission denied"), "{err}");
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
    let config = agent_config(&lab, "");
    let before: Vec<_> = std::fs::read_dir(lab.agent.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let stderr = zeroth_ssh_echo(&lab, &config, "hello from sshd");
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

#[test]
fn a_host_without_a_tpm_logs_in_through_its_agents_workload_api() {
    let lab = lab();
    let out = Command::new(env!("CARGO_BIN_EXE_zeroth"))
        .args([
            "token", "create", "--group", "edge", "--ttl", "5m", "--socket",
        ])
        .arg(lab.server.admin_socket())
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let bootstrap = lab.work.write("token", token.as_bytes(), 0o600).unwrap();
    let config = lab
        .work
        .write(
            "token-host.toml",
            format!(
                "server = \"{}\"\nca_bundle = \"{}\"\ntoken_file = \"{}\"\nstate_dir = \"{}\"\n[workload_api]\nsocket = \"{}\"\nroles = {{ \"65534\" = [\"ops\"] }}\n",
                lab.server.url(),
                lab.server.bundle().display(),
                bootstrap.display(),
                lab.work.join("token-state").display(),
                lab.work.join("api.sock").display()
            )
            .as_bytes(),
            0o644,
        )
        .unwrap();
    let mut agent =
        zeroth::lab::AgentProcess::start(Path::new(env!("CARGO_BIN_EXE_zeroth")), &config).unwrap();
    agent
        .expect(std::time::Duration::from_secs(30), |l| {
            l.starts_with("token rotated: ")
        })
        .unwrap();
    zeroth_ssh_echo(&lab, &config, "hello from a token host");
    // A program's user cannot read the agent's configuration (0600 as
    // packaged): it names the agent's socket instead, and still gets the
    // host KRL through it.
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let zeroth = zeroth::lab::RunnableCopy::of(Path::new(env!("CARGO_BIN_EXE_zeroth"))).unwrap();
    let as_nobody = |extra: &[&str]| {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(zeroth.path());
        zeroth_ssh_args(&mut cmd, &lab, &config, extra, "hello by the socket")
            .output()
            .unwrap()
    };
    let out = as_nobody(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--socket"),
        "{stderr}"
    );
    let socket = lab.work.join("api.sock");
    let out = as_nobody(&["--socket", socket.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{}", lab.sshd.log());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello by the socket"
    );
    // The certificate named the token host, and the agent's caller.
    let issued = lab.server.audit_details("ssh.cert.issued").unwrap();
    assert_eq!(issued.len(), 2, "{issued:?}");
    let key_id = issued[0]["key_id"].as_str().unwrap();
    assert!(key_id.starts_with("spiffe://lab.zeroth/token/"), "{key_id}");
    assert!(issued[0]["workload"].as_str().unwrap().starts_with("uid "));
    assert!(issued[1]["workload"]
        .as_str()
        .unwrap()
        .starts_with("uid 65534 "));
    agent.stop().unwrap();
}

/// `zeroth ssh --role ops` into the lab's sshd, running `echo text`;
/// asserts the login worked and returns what zeroth said on stderr.
fn zeroth_ssh_echo(lab: &SshLab, config: &Path, text: &str) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zeroth"));
    let out = zeroth_ssh_args(&mut cmd, lab, config, &[], text)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}\n{}", lab.sshd.log());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), text);
    stderr
}

/// Appends to `cmd` (the zeroth binary, or a wrapper running it) the
/// arguments of `zeroth ssh --role ops` into the lab's sshd running
/// `echo text`, with `extra` zeroth options.
fn zeroth_ssh_args<'c>(
    cmd: &'c mut Command,
    lab: &SshLab,
    config: &Path,
    extra: &[&str],
    text: &str,
) -> &'c mut Command {
    cmd.args(["ssh", "--role", "ops", "--principal", &lab.user, "--config"])
        .arg(config)
        .args(extra)
        .args(["--", "-F", "/dev/null", "-o", "BatchMode=yes"])
        .args(["-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "StrictHostKeyChecking=no", "-o", "LogLevel=ERROR"])
        .args(["-o", "IdentitiesOnly=no"])
        .args(["-p", &lab.sshd.port().to_string()])
        .arg(format!("{}@127.0.0.1", lab.user))
        .args(["echo", text])
}

/// agent.toml for the lab's node, with `extra` lines at the end.
fn agent_config(lab: &SshLab, extra: &str) -> std::path::PathBuf {
    let config = lab.agent.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "server = \"{}\"\nca_bundle = \"{}\"\ngroup = \"edge\"\ntcti = \"{}\"\nstate_dir = \"{}\"\n{extra}",
            lab.server.url(),
            lab.server.bundle().display(),
            lab.tpm.tcti(),
            lab.agent.path().display()
        ),
    )
    .unwrap();
    config
}

fn zeroth(args: &[&str], config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_zeroth"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

#[test]
fn the_agent_certifies_the_host_key_and_keeps_sshd_trust_and_krl_current() {
    let lab = lab();
    // The node's sshd host key; the agent has it certified and keeps the
    // user CA keys and the KRL sshd reads.
    let host_key = lab.work.join("ssh_host_ed25519_key");
    zeroth::lab::sshd::generate_host_key(&tools::SSH_KEYGEN.path().unwrap(), &host_key).unwrap();
    let host_pub = host_key.with_extension("pub");
    let user_ca = lab.work.join("zeroth_user_ca.pub");
    let krl = lab.work.join("zeroth_revoked_keys");
    let config = agent_config(
        &lab,
        &format!(
            "[ssh]\nhost_role = \"hosts\"\nhost_keys = [\"{}\"]\ntrusted_user_ca_keys = \"{}\"\nrevoked_keys = \"{}\"\nrefresh = \"1s\"\n",
            host_pub.display(),
            user_ca.display(),
            krl.display()
        ),
    );
    let mut agent =
        zeroth::lab::AgentProcess::start(Path::new(env!("CARGO_BIN_EXE_zeroth")), &config).unwrap();
    let cert_path = zeroth::agent::ssh_host::certificate_path(&host_pub);
    agent
        .expect(std::time::Duration::from_secs(30), |l| {
            l.starts_with("host certificate renewed:")
        })
        .unwrap();
    let cert =
        ssh_key::Certificate::from_openssh(std::fs::read_to_string(&cert_path).unwrap().trim())
            .unwrap();
    assert_eq!(cert.cert_type(), ssh_key::certificate::CertType::Host);
    assert_eq!(
        cert.valid_principals(),
        ["127.0.0.1".to_owned(), format!("node-{}.lab", lab.node_id)]
    );
    assert!(cert.critical_options().is_empty());
    assert!(std::fs::read_to_string(&user_ca)
        .unwrap()
        .starts_with("ssh-ed25519 "));
    assert!(krl.exists());

    // `zeroth ssh sshd-config` names the files the agent keeps.
    let out = zeroth(&["ssh", "sshd-config"], &config);
    assert!(out.status.success());
    let snippet = String::from_utf8_lossy(&out.stdout);
    for line in [
        format!("TrustedUserCAKeys {}", user_ca.display()),
        format!("RevokedKeys {}", krl.display()),
        format!("HostCertificate {}", cert_path.display()),
        format!("HostKey {}", host_key.display()),
        "AuthorizedPrincipalsFile /etc/ssh/zeroth_principals/%u".to_owned(),
    ] {
        assert!(snippet.lines().any(|l| l == line), "{line} in\n{snippet}");
    }
    // An sshd set up that way.
    let sshd = Sshd::start(&SshdOptions {
        trusted_user_ca_keys: Some(user_ca.clone()),
        revoked_keys: Some(krl.clone()),
        host_certificate: Some(cert_path.clone()),
        host_key: Some(host_key.clone()),
        ..Default::default()
    })
    .unwrap();

    // Clients trust the host CA through `zeroth ssh known-hosts`.
    let out = zeroth(&["ssh", "known-hosts"], &config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let known = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        known.starts_with("@cert-authority * ssh-ed25519 "),
        "{known}"
    );
    let known_hosts = lab
        .work
        .write("known_hosts", known.as_bytes(), 0o644)
        .unwrap();
    let strict = |port: u16, command: &str| {
        Command::new(env!("CARGO_BIN_EXE_zeroth"))
            .args(["ssh", "--role", "ops", "--principal", &lab.user, "--config"])
            .arg(&config)
            .args(["--", "-F", "/dev/null", "-o", "BatchMode=yes"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args(["-o", "GlobalKnownHostsFile=/dev/null"])
            .args(["-o", "StrictHostKeyChecking=yes"])
            .args(["-p", &port.to_string()])
            .arg(format!("{}@127.0.0.1", lab.user))
            .arg(command)
            .output()
            .unwrap()
    };
    let out = strict(sshd.port(), "echo certified host");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{}", sshd.log());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "certified host"
    );
    // The lab's other sshd has no host certificate: refused as unknown.
    let out = strict(lab.sshd.port(), "true");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("Host key verification failed"), "{stderr}");

    // The host's certificate is revoked: `zeroth ssh` brings the host KRL
    // to every login, and the client refuses that host.
    let out = Command::new(env!("CARGO_BIN_EXE_zeroth"))
        .args(["lease", "revoke", "--prefix", "hosts/", "--socket"])
        .arg(lab.server.admin_socket())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("1 lease(s) revoked"), "{said}");
    // `zeroth ssh host-krl` writes it for ssh_config's RevokedHostKeys.
    let host_krl = lab.work.join("revoked_host_keys");
    let out = zeroth(
        &["ssh", "host-krl", "--out", host_krl.to_str().unwrap()],
        &config,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (revoked, said) = krl_revokes(&host_krl, &cert_path);
    assert!(revoked, "{said}");

    let out = strict(sshd.port(), "echo should not run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("should not run"));
    assert!(stderr.contains("revoked"), "{stderr}");
    // A user certificate revoked on the server stops working once the
    // agent has fetched the new KRL (within its 1 s refresh).
    let (key_file, held_cert, signed) = certified_key(&lab, "held", None);
    let (ok, err) = login(&sshd, &key_file, &held_cert, None);
    assert!(ok, "{err}");
    assert_eq!(give_back(&lab, &signed.lease_id), 204);
    // The agent's KRL lists the certificate once the agent says it changed.
    while !krl_revokes(&krl, &held_cert).0 {
        agent
            .expect(std::time::Duration::from_secs(30), |l| l == "KRL updated")
            .unwrap();
    }
    let (ok, err) = login(&sshd, &key_file, &held_cert, None);
    assert!(!ok, "a revoked certificate logged in after the KRL refresh");
    assert!(err.contains("Permission denied"), "{err}");
    agent.stop().unwrap();
}

#[test]
fn an_expired_certificate_is_refused_by_sshd() {
    let lab = lab();
    let (key_file, cert_file, signed) = certified_key(&lab, "short", Some(10));
    let (ok, err) = login(&lab.sshd, &key_file, &cert_file, None);
    assert!(ok, "{err}");
    // Time is what is tested: wait past valid_before.
    let left = signed.valid_before + 1 - zeroth::store::now();
    std::thread::sleep(std::time::Duration::from_secs(left.max(0) as u64));
    let (ok, err) = login(&lab.sshd, &key_file, &cert_file, None);
    assert!(!ok, "an expired certificate logged in");
    assert!(err.contains("Permission denied"), "{err}");
    assert!(
        lab.sshd.log().contains("expired") || lab.sshd.log().contains("Certificate invalid"),
        "{}",
        lab.sshd.log()
    );
}

#[test]
fn a_p256_ca_in_the_hsm_signs_certificates_sshd_accepts() {
    let lab = lab_with("ssh_ca_algorithm = \"ecdsa-p256\"");
    let (key_file, cert_file, signed) = certified_key(&lab, "p256-user", None);
    let cert = certificate(&signed);
    assert_eq!(
        cert.signature_key().algorithm(),
        ssh_key::Algorithm::Ecdsa {
            curve: ssh_key::EcdsaCurve::NistP256
        }
    );
    let (ok, err) = login(&lab.sshd, &key_file, &cert_file, None);
    assert!(ok, "{err}\n{}", lab.sshd.log());
    assert!(lab.sshd.log().contains("CA ECDSA"), "{}", lab.sshd.log());
    let host_ca = client(&lab.server.bundle())
        .unwrap()
        .get(format!("{}/v1/ssh/ca/host", lab.server.url()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(host_ca.starts_with("ecdsa-sha2-nistp256 "), "{host_ca}");
    assert_ne!(
        host_ca,
        std::fs::read_to_string(lab.work.join("user_ca.pub")).unwrap()
    );
}

/// A fresh key certified as `ops` for the lab user (for `ttl` seconds, or
/// the role's default): its key file, certificate file and the answer.
fn certified_key(
    lab: &SshLab,
    name: &str,
    ttl: Option<u64>,
) -> (std::path::PathBuf, std::path::PathBuf, SshSignResponse) {
    let key = ssh_key::PrivateKey::random(
        &mut p256::elliptic_curve::rand_core::OsRng,
        ssh_key::Algorithm::Ed25519,
    )
    .unwrap();
    let key_file = lab
        .work
        .write_private(
            name,
            key.to_openssh(ssh_key::LineEnding::LF).unwrap().as_bytes(),
        )
        .unwrap();
    let e = Enrolment::open(&lab.tpm.tcti(), lab.agent.path()).unwrap();
    let svid = std::fs::read_to_string(lab.agent.join("svid.pem")).unwrap();
    let http = e.mtls_client(&lab.server.bundle(), &svid).unwrap();
    let signed: SshSignResponse = post_json(
        &http,
        &format!("{}/v1/ssh/sign/ops", lab.server.url()),
        &SshSignRequest {
            public_key: key.public_key().to_openssh().unwrap(),
            principals: Some(vec![lab.user.clone()]),
            ttl_seconds: ttl,
        },
    )
    .unwrap();
    let cert_file = lab
        .work
        .write(
            &format!("{name}-cert.pub"),
            signed.certificate.as_bytes(),
            0o644,
        )
        .unwrap();
    (key_file, cert_file, signed)
}

/// The node gives the certificate's lease back (mTLS): 204.
fn give_back(lab: &SshLab, lease_id: &str) -> u16 {
    let e = Enrolment::open(&lab.tpm.tcti(), lab.agent.path()).unwrap();
    let svid = std::fs::read_to_string(lab.agent.join("svid.pem")).unwrap();
    let http = e.mtls_client(&lab.server.bundle(), &svid).unwrap();
    http.post(format!("{}/v1/leases/{lease_id}/revoke", lab.server.url()))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn certificate(signed: &SshSignResponse) -> ssh_key::Certificate {
    ssh_key::Certificate::from_openssh(&signed.certificate).unwrap()
}

#[test]
fn the_user_ca_rotates_without_downtime_through_the_agent_kept_trust_file() {
    let lab = lab();
    let trusted = lab.work.join("agent_user_ca.pub");
    let krl = lab.work.join("agent_krl");
    let config = agent_config(
        &lab,
        &format!(
            "[ssh]\ntrusted_user_ca_keys = \"{}\"\nrevoked_keys = \"{}\"\nrefresh = \"1s\"\n",
            trusted.display(),
            krl.display()
        ),
    );
    let mut agent =
        zeroth::lab::AgentProcess::start(Path::new(env!("CARGO_BIN_EXE_zeroth")), &config).unwrap();
    agent
        .expect(std::time::Duration::from_secs(30), |l| {
            l == "trusted user CA keys updated"
        })
        .unwrap();
    let sshd = Sshd::start(&SshdOptions {
        trusted_user_ca_keys: Some(trusted.clone()),
        revoked_keys: Some(krl.clone()),
        ..Default::default()
    })
    .unwrap();
    let lines = |p: &Path| std::fs::read_to_string(p).unwrap().lines().count();
    assert_eq!(lines(&trusted), 1);
    let (old_key, old_cert_file, old) = certified_key(&lab, "old", None);
    let old_cert = certificate(&old);
    assert!(login(&sshd, &old_key, &old_cert_file, None).0);

    let socket = lab.server.admin_socket();
    let step = |s: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_zeroth"))
            .args(["ssh", "ca", s, "--kind", "user", "--socket"])
            .arg(&socket)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ssh ca {s}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Activating before anything was published is refused.
    let out = Command::new(env!("CARGO_BIN_EXE_zeroth"))
        .args(["ssh", "ca", "activate", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no next user CA"));

    // 1. Prepare: the next CA is published; the agent adds it to the file.
    assert!(step("prepare").contains("next user CA published"));
    agent
        .expect(std::time::Duration::from_secs(30), |l| {
            l == "trusted user CA keys updated"
        })
        .unwrap();
    assert_eq!(lines(&trusted), 2);
    let (same_key, same_cert_file, same) = certified_key(&lab, "same", None);
    let same_cert = certificate(&same);
    assert_eq!(
        same_cert.signature_key(),
        old_cert.signature_key(),
        "the old CA signs until activation"
    );
    assert!(login(&sshd, &same_key, &same_cert_file, None).0);

    // 2. Activate: the new CA signs, sshd already trusts it; old certs work.
    step("activate");
    let (new_key, new_cert_file, new) = certified_key(&lab, "new", None);
    let new_cert = certificate(&new);
    assert_ne!(new_cert.signature_key(), old_cert.signature_key());
    let (ok, err) = login(&sshd, &new_key, &new_cert_file, None);
    assert!(ok, "{err}\n{}", sshd.log());
    assert!(login(&sshd, &old_key, &old_cert_file, None).0);
    let list = step("list");
    assert_eq!(
        list.lines()
            .filter(|l| l.starts_with("user  retired"))
            .count(),
        1,
        "{list}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_zeroth"))
        .args(["ssh", "ca", "list", "--json", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let states: Vec<&str> = listed["cas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "user")
        .filter_map(|c| c["state"].as_str())
        .collect();
    assert!(
        states.contains(&"retired") && states.contains(&"active"),
        "{listed}"
    );

    // 3. Retire: the old CA is gone from the file; its certificates stop.
    // (Activation reordered the published keys: the agent rewrote the file
    // once already; wait for the write that drops a key.)
    step("retire");
    while lines(&trusted) != 1 {
        agent
            .expect(std::time::Duration::from_secs(30), |l| {
                l == "trusted user CA keys updated"
            })
            .unwrap();
    }
    assert!(!login(&sshd, &old_key, &old_cert_file, None).0);
    assert!(login(&sshd, &new_key, &new_cert_file, None).0);
    agent.stop().unwrap();
}
