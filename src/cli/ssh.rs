//! `zeroth ssh`: log in with a certificate made for this session. The key
//! is generated in memory, certified for the node's identity, and served
//! to the system `ssh` by a private in-memory agent; the lease is given
//! back when ssh exits.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::agent::enrol::{post_json, Enrolment};
use crate::agent::ssh_agent::SshAgent;
use crate::server::api::ssh::{SshSignRequest, SshSignResponse};

#[derive(Debug, Args)]
pub struct SshArgs {
    /// The SSH role to ask a certificate of.
    #[arg(long)]
    role: String,
    /// The agent configuration whose identity asks.
    #[arg(long, default_value = "/etc/zeroth/agent.toml")]
    config: PathBuf,
    /// Certificate lifetime, e.g. "5m" (the role's default otherwise).
    #[arg(long, value_parser = humantime::parse_duration)]
    ttl: Option<std::time::Duration>,
    /// Principals wanted (default: all the role allows); repeatable.
    #[arg(long = "principal")]
    principals: Vec<String>,
    /// Arguments for ssh, e.g. `-- -p 2222 deploy@db1 uptime`.
    #[arg(last = true, required = true)]
    ssh: Vec<String>,
}

pub fn run(args: &SshArgs) -> Result<()> {
    let c = crate::config::AgentConfig::load(&args.config)?;
    anyhow::ensure!(
        c.group.is_some(),
        "SSH certificates go to TPM nodes; this agent runs on a token (`token_file`)"
    );
    let svid = std::fs::read_to_string(c.state_dir.join("svid.pem"))
        .context("no X.509-SVID: run `zeroth agent run` first")?;
    let e = Enrolment::open(&c.tcti, &c.state_dir)?;
    let http = e.mtls_client(&c.ca_bundle, &svid)?;
    let base = c.server.trim_end_matches('/');
    let key = ssh_key::PrivateKey::random(
        &mut p256::elliptic_curve::rand_core::OsRng,
        ssh_key::Algorithm::Ed25519,
    )
    .context("generate the session key")?;
    let signed: SshSignResponse = post_json(
        &http,
        &format!("{base}/v1/ssh/sign/{}", args.role),
        &SshSignRequest {
            public_key: key.public_key().to_openssh()?,
            principals: (!args.principals.is_empty()).then(|| args.principals.clone()),
            ttl_seconds: args.ttl.map(|t| t.as_secs()),
        },
    )?;
    let cert = ssh_key::Certificate::from_openssh(&signed.certificate)?;
    eprintln!(
        "certificate {} for {} valid {}s (lease {})",
        signed.serial,
        signed.principals.join(","),
        signed.valid_before - crate::store::now(),
        signed.lease_id
    );
    let agent = SshAgent::start(key, &cert).context("start the in-memory ssh agent")?;
    let status = std::process::Command::new("ssh")
        .arg("-o")
        .arg(format!("IdentityAgent={}", agent.socket().display()))
        .args(&args.ssh)
        .status()
        .context("run ssh")?;
    drop(agent);
    let given_back = http
        .post(format!("{base}/v1/leases/{}/revoke", signed.lease_id))
        .send()
        .map(|r| r.status().is_success())
        .unwrap_or(false);
    if !given_back {
        eprintln!(
            "lease {} could not be given back; the certificate expires on its own",
            signed.lease_id
        );
    }
    drop((http, e));
    std::process::exit(status.code().unwrap_or(1));
}
