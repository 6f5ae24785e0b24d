//! The demo's SSH step: certificates from the HSM-held CA that sshd
//! accepts within their principals, and refuses once revoked.

use anyhow::Result;

use crate::lab::{self, Sshd};

use super::demo::admin_call;

pub(super) fn show_ssh(
    options: &crate::agent::EnrolOptions,
    server: &crate::lab::ZerothServer,
) -> Result<()> {
    use crate::wire::ssh::{SshSignRequest, SshSignResponse};
    let anyone = crate::agent::enrol::client(&server.bundle())?;
    let get = |path: &str| -> Result<Vec<u8>> {
        Ok(anyone
            .get(format!("{}{path}", server.url()))
            .send()?
            .error_for_status()?
            .bytes()?
            .to_vec())
    };
    let dir = lab::LabDir::new("demo-ssh")?;
    // The node's agent keeps what its sshd needs: the user CA keys, the KRL
    // and a certificate for the host key.
    let host_key = dir.join("ssh_host_ed25519_key");
    lab::sshd::generate_host_key(&lab::tools::SSH_KEYGEN.path()?, &host_key)?;
    let ssh_cfg = crate::config::AgentSshConfig {
        host_role: Some("hosts".into()),
        host_keys: vec![host_key.with_extension("pub")],
        trusted_user_ca_keys: Some(dir.join("user_ca.pub")),
        revoked_keys: Some(dir.join("revoked_keys")),
        ..Default::default()
    };
    let synced = crate::agent::ssh_host::sync(&ssh_cfg, options)?;
    let host_cert = ssh_cfg.certificate_path(&host_key.with_extension("pub"));
    let krl = dir.join("revoked_keys");
    let sshd = Sshd::start(&lab::sshd::SshdOptions {
        trusted_user_ca_keys: ssh_cfg.trusted_user_ca_keys.clone(),
        revoked_keys: Some(krl.clone()),
        host_key: Some(host_key.clone()),
        host_certificate: Some(host_cert.clone()),
        ..Default::default()
    })?;
    let known = format!(
        "@cert-authority * {}",
        String::from_utf8_lossy(&get("/v1/ssh/ca/host")?).trim()
    );
    let known_hosts = dir.write("known_hosts", format!("{known}\n").as_bytes(), 0o644)?;
    anyhow::ensure!(
        synced.certified.len() == 1,
        "the host key was not certified"
    );
    println!("$ zeroth agent run   # with [ssh]: sshd's host certificate (127.0.0.1), user CA keys and KRL kept current");
    println!("$ zeroth ssh known-hosts >> ~/.ssh/known_hosts");
    println!("           {}…", &known[..known.len().min(60)]);
    println!("$ zeroth ssh --role ops -- {}@127.0.0.1 -p {} whoami   # session key in memory, served by a private agent", sshd.login_user(), sshd.port());
    let key = ssh_key::PrivateKey::random(
        &mut p256::elliptic_curve::rand_core::OsRng,
        ssh_key::Algorithm::Ed25519,
    )?;
    let svid = std::fs::read_to_string(options.state_dir.join("svid.pem"))?;
    let e = crate::agent::enrol::Enrolment::open(&options.tcti, &options.state_dir)?;
    let http = e.mtls_client(&options.ca_bundle, &svid)?;
    let signed: SshSignResponse = crate::agent::enrol::post_json(
        &http,
        &format!("{}/v1/ssh/sign/ops", options.server),
        &SshSignRequest {
            public_key: key.public_key().to_openssh()?,
            principals: None,
            ttl_seconds: None,
        },
    )?;
    drop((http, e));
    let cert = ssh_key::Certificate::from_openssh(&signed.certificate)?;
    let agent = crate::agent::ssh_agent::SshAgent::start(key, &cert)?;
    // What `zeroth ssh` runs: the system ssh, pointed at the agent and at
    // the host KRL.
    let revoked_hosts = dir.write("revoked_host_keys", &get("/v1/ssh/krl/host")?, 0o644)?;
    let ssh = |what: &str| -> Result<std::process::Output> {
        Ok(std::process::Command::new(lab::tools::SSH.path()?)
            .args(["-F", "/dev/null", "-o", "BatchMode=yes"])
            .arg("-o")
            .arg(format!("RevokedHostKeys={}", revoked_hosts.display()))
            .arg("-o")
            .arg(format!("IdentityAgent={}", agent.socket().display()))
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args([
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "StrictHostKeyChecking=yes",
            ])
            .args(["-o", "LogLevel=ERROR", "-p", &sshd.port().to_string()])
            .arg(format!("{}@127.0.0.1", sshd.login_user()))
            .arg(what)
            .output()?)
    };
    let out = ssh("whoami")?;
    let who = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    anyhow::ensure!(
        out.status.success(),
        "ssh with the certificate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "           host verified by its zeroth host certificate; logged in as {who} with certificate {} (key id \"{}\", source-address {}, valid {}s)",
        signed.serial,
        cert.key_id(),
        cert.critical_options().get("source-address").map(String::as_str).unwrap_or("-"),
        signed.valid_before - crate::store::now()
    );
    println!(
        "$ zeroth lease revoke {}; the node fetches /v1/ssh/krl into RevokedKeys",
        signed.lease_id
    );
    admin_call(
        server,
        crate::server::admin::AdminRequest {
            op: "lease.revoke".into(),
            id: Some(signed.lease_id.clone()),
            ..Default::default()
        },
    )?;
    std::fs::write(&krl, get("/v1/ssh/krl")?)?;
    let out = ssh("whoami")?;
    anyhow::ensure!(
        !out.status.success(),
        "the revoked certificate still logs in"
    );
    println!(
        "           login refused: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    println!("$ zeroth lease revoke --prefix hosts/   # the host's certificate; zeroth ssh brings /v1/ssh/krl/host to every login");
    admin_call(
        server,
        crate::server::admin::AdminRequest {
            op: "lease.revoke".into(),
            params: serde_json::json!({"prefix": "hosts/"}),
            ..Default::default()
        },
    )?;
    std::fs::write(&revoked_hosts, get("/v1/ssh/krl/host")?)?;
    let out = ssh("whoami")?;
    let said = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        !out.status.success() && said.contains("revoked"),
        "the host with a revoked certificate was trusted: {said}"
    );
    println!(
        "           host refused: {}",
        said.lines().next().unwrap_or_default().trim()
    );
    Ok(())
}
