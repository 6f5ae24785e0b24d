//! `zeroth ssh`: log in with a certificate made for this session. The key
//! is generated in memory, certified for the node's identity, and served
//! to the system `ssh` by a private in-memory agent; the lease is given
//! back when ssh exits. `known-hosts` and `sshd-config` print what clients
//! and sshd need to trust zeroth's CAs.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::asker::Asker;
use crate::agent::ssh_agent::SshAgent;
use crate::agent::workload_api::WorkloadRequest;
use crate::wire::ssh::SshSignResponse;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SshArgs {
    #[command(subcommand)]
    command: Option<SshCommand>,
    #[command(flatten)]
    login: LoginArgs,
}

#[derive(Debug, clap::Subcommand)]
enum SshCommand {
    /// Print the `@cert-authority` line for ~/.ssh/known_hosts (or
    /// /etc/ssh/ssh_known_hosts) that trusts hosts certified by zeroth.
    KnownHosts {
        /// The agent configuration (server, CA bundle).
        #[arg(long, default_value = "/etc/zeroth/agent.toml")]
        config: PathBuf,
        /// Host name pattern the CA is trusted for, e.g. "*.edge.example".
        #[arg(long, default_value = "*")]
        hosts: String,
    },
    /// Write the KRL of revoked host certificates, for ssh_config's
    /// `RevokedHostKeys` (`zeroth ssh` fetches it by itself at each login).
    HostKrl {
        /// The agent configuration (server, CA bundle).
        #[arg(long, default_value = "/etc/zeroth/agent.toml")]
        config: PathBuf,
        /// Where to write it (replaced atomically).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the sshd_config lines for a node whose agent keeps the CA
    /// keys, the KRL and the host certificates current.
    SshdConfig {
        /// The agent configuration (server, CA bundle).
        #[arg(long, default_value = "/etc/zeroth/agent.toml")]
        config: PathBuf,
    },
    /// The SSH CAs and their rotation without downtime (admin socket):
    /// `prepare` publishes a new CA key (agents and known_hosts pick it
    /// up), `activate` makes it sign, `retire` drops the old one once what
    /// it signed has expired.
    Ca {
        #[command(subcommand)]
        step: CaStep,
        /// "user" or "host".
        #[arg(long, default_value = "user", global = true)]
        kind: String,
        /// The server's admin socket.
        #[arg(long, default_value_os_t = crate::cli::admin_socket::default(), global = true)]
        socket: PathBuf,
        /// Print the server's answer as JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
enum CaStep {
    /// Every CA key, its kind and rotation state.
    List,
    /// A new CA key in the HSM, published but not signing yet.
    Prepare,
    /// The published next CA signs from now on; the old one is retired.
    Activate,
    /// Retired CAs are no longer published; their keys leave the HSM.
    Retire,
}

#[derive(Debug, Args)]
struct LoginArgs {
    /// The SSH role to ask a certificate of (required to log in).
    #[arg(long)]
    role: Option<String>,
    /// The agent configuration whose identity asks.
    #[arg(long, default_value = "/etc/zeroth/agent.toml")]
    config: PathBuf,
    /// Ask through this agent workload socket instead of reading the agent
    /// configuration (a program's user may not read it; without either,
    /// the packaged agent's socket is used when the configuration is closed).
    #[arg(long = "socket", value_name = "PATH")]
    agent_socket: Option<PathBuf>,
    /// Certificate lifetime, e.g. "5m" (the role's default otherwise).
    #[arg(long, value_parser = humantime::parse_duration)]
    ttl: Option<std::time::Duration>,
    /// Principals wanted (default: all the role allows); repeatable.
    #[arg(long = "principal")]
    principals: Vec<String>,
    /// `[user@]host` to log in to (or give it among the ssh arguments).
    destination: Option<String>,
    /// The remote command, or arguments for ssh when no destination is
    /// given, e.g. `-- -p 2222 deploy@db1 uptime`.
    #[arg(last = true)]
    ssh: Vec<String>,
}

pub fn run(args: &SshArgs) -> Result<()> {
    match &args.command {
        Some(SshCommand::KnownHosts { config, hosts }) => known_hosts(config, hosts),
        Some(SshCommand::SshdConfig { config }) => sshd_config(config),
        Some(SshCommand::HostKrl { config, out }) => {
            let c = crate::config::AgentConfig::load(config)?;
            let krl = host_krl(&c)?;
            crate::agent::enrol::write(out, "write the host KRL", &krl)?;
            eprintln!("{} bytes of host KRL in {}", krl.len(), out.display());
            Ok(())
        }
        Some(SshCommand::Ca {
            step,
            kind,
            socket,
            json,
        }) => ca(step, kind, socket, *json),
        None => login(&args.login),
    }
}

fn ca(step: &CaStep, kind: &str, socket: &std::path::Path, json: bool) -> Result<()> {
    let op = match step {
        CaStep::List => "ssh.ca.list",
        CaStep::Prepare => "ssh.ca.prepare",
        CaStep::Activate => "ssh.ca.activate",
        CaStep::Retire => "ssh.ca.retire",
    };
    let answer = crate::server::admin::call(
        socket,
        &crate::server::admin::AdminRequest {
            op: op.into(),
            params: serde_json::json!({ "kind": kind }),
            ..Default::default()
        },
    )
    .map_err(anyhow::Error::msg)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    match step {
        CaStep::List => {
            for ca in answer["cas"].as_array().into_iter().flatten() {
                println!(
                    "{:<5} {:<8} {:<40} {}",
                    ca["kind"].as_str().unwrap_or(""),
                    ca["state"].as_str().unwrap_or(""),
                    ca["key_name"].as_str().unwrap_or(""),
                    ca["public_key"].as_str().unwrap_or("")
                );
            }
        }
        CaStep::Prepare => println!(
            "next {kind} CA published: {}\nactivate it once agents and known_hosts files trust it",
            answer["ca"]["public_key"].as_str().unwrap_or("")
        ),
        CaStep::Activate => println!(
            "{kind} CA {} signs from now on; the previous one stays published until `retire`",
            answer["active"].as_str().unwrap_or("")
        ),
        CaStep::Retire => println!("retired {kind} CAs removed: {}", answer["removed"]),
    }
    Ok(())
}

/// The server's KRL of revoked host certificates.
fn host_krl(c: &crate::config::AgentConfig) -> Result<Vec<u8>> {
    fetch(c, "/v1/ssh/krl/host")
}

/// GETs `path` from the first of the agent's servers that answers.
fn fetch(c: &crate::config::AgentConfig, path: &str) -> Result<Vec<u8>> {
    let http = crate::agent::enrol::client(&c.ca_bundle)?;
    crate::agent::servers::first_answer(&c.server, |base| {
        crate::agent::ssh_host::get(&http, &format!("{base}{path}"))
    })
    .map_err(anyhow::Error::from)
}

fn known_hosts(config: &std::path::Path, hosts: &str) -> Result<()> {
    let c = crate::config::AgentConfig::load(config)?;
    let keys = String::from_utf8(fetch(&c, "/v1/ssh/ca/host")?)?;
    for key in keys.lines().filter(|l| !l.trim().is_empty()) {
        println!("@cert-authority {hosts} {key}");
    }
    Ok(())
}

fn sshd_config(config: &std::path::Path) -> Result<()> {
    let c = crate::config::AgentConfig::load(config)?;
    let or = |p: &Option<PathBuf>, default: &str, key: &str| match p {
        Some(p) => p.display().to_string(),
        None => {
            eprintln!(
                "note: agent.toml has no ssh.{key}; the agent will not keep {default} current"
            );
            default.to_owned()
        }
    };
    let ca = or(
        &c.ssh.trusted_user_ca_keys,
        "/etc/ssh/zeroth_user_ca.pub",
        "trusted_user_ca_keys",
    );
    let krl = or(
        &c.ssh.revoked_keys,
        "/etc/ssh/zeroth_revoked_keys",
        "revoked_keys",
    );
    println!("# zeroth: logins with certificates from the zeroth user CA, checked");
    println!("# against its KRL; both files are kept current by `zeroth agent run`.");
    println!("TrustedUserCAKeys {ca}");
    println!("RevokedKeys {krl}");
    println!("# The principals each account accepts, one per line (e.g. node-<id>).");
    println!("AuthorizedPrincipalsFile /etc/ssh/zeroth_principals/%u");
    if c.ssh.host_keys.is_empty() {
        eprintln!("note: agent.toml lists no ssh.host_keys; no host certificate will be kept");
    }
    for key in &c.ssh.host_keys {
        let private = key.to_string_lossy();
        let private = private.strip_suffix(".pub").unwrap_or(&private);
        println!("HostKey {private}");
        println!("HostCertificate {}", c.ssh.certificate_path(key).display());
    }
    Ok(())
}

fn login(args: &LoginArgs) -> Result<()> {
    let Some(role) = &args.role else {
        anyhow::bail!("--role is required to log in, e.g. `zeroth ssh --role ops deploy@db1`");
    };
    anyhow::ensure!(
        args.destination.is_some() || !args.ssh.is_empty(),
        "give a destination, e.g. `zeroth ssh --role ops deploy@db1 -- uptime`"
    );
    let asker = Asker::for_command(&args.config, args.agent_socket.as_deref())?;
    let key = ssh_key::PrivateKey::random(
        &mut p256::elliptic_curve::rand_core::OsRng,
        ssh_key::Algorithm::Ed25519,
    )
    .context("generate the session key")?;
    let signed: SshSignResponse = asker.ask(&WorkloadRequest {
        op: "ssh.sign".into(),
        role: Some(role.clone()),
        public_key: Some(key.public_key().to_openssh()?),
        principals: (!args.principals.is_empty()).then(|| args.principals.clone()),
        ttl_seconds: args.ttl.map(|t| t.as_secs()),
        ..Default::default()
    })?;
    let cert = ssh_key::Certificate::from_openssh(&signed.certificate)?;
    eprintln!(
        "certificate {} for {} valid {}s (lease {})",
        signed.serial,
        signed.principals.join(","),
        signed.valid_before - crate::store::now(),
        signed.lease_id
    );
    let agent = SshAgent::start(key, &cert).context("start the in-memory ssh agent")?;
    // Hosts whose certificates were revoked are refused: the current host
    // KRL, kept next to the agent's socket for this session only.
    let revoked_hosts = agent.dir().join("revoked_host_keys");
    crate::agent::enrol::write(&revoked_hosts, "write the host KRL", &asker.host_krl()?)?;
    let status = std::process::Command::new("ssh")
        .arg("-o")
        .arg(format!("IdentityAgent={}", agent.socket().display()))
        .arg("-o")
        .arg(format!("RevokedHostKeys={}", revoked_hosts.display()))
        .args(&args.destination)
        .args(&args.ssh)
        .status()
        .context("run ssh")?;
    drop(agent);
    if !asker.give_back(&signed.lease_id) {
        eprintln!(
            "lease {} could not be given back; the certificate expires on its own",
            signed.lease_id
        );
    }
    drop(asker);
    std::process::exit(status.code().unwrap_or(1));
}
