//! `zeroth agent`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use std::sync::Arc;

use crate::agent::attest::Access;
use crate::agent::proxy::events::EventQueue;
use crate::agent::proxy::Proxies;
use crate::agent::spiffe::Identities;
use crate::agent::upstream::Upstream;
use crate::agent::workload_api::WorkloadApi;
use crate::agent::{enrol, EnrolOptions, Outcome};

#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(subcommand)]
    command: AgentCommand,
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Keep this host's identity fresh until SIGTERM. With a TPM (`group`):
    /// enrol, then renew over mTLS with a fresh quote at half the SVID's
    /// lifetime. Without (`token_file`): rotate the identity token.
    Run {
        /// Configuration file.
        #[arg(long, default_value = "/etc/zeroth/agent.toml")]
        config: PathBuf,
    },
    /// Print a JWT-SVID for an audience (the node must be enrolled; the
    /// request is authenticated with its X.509-SVID over mTLS).
    Jwt {
        /// Configuration file.
        #[arg(long, default_value = "/etc/zeroth/agent.toml")]
        config: PathBuf,
        /// The `aud` claim; repeat for several.
        #[arg(long, required = true)]
        audience: Vec<String>,
        /// Lifetime, e.g. "2m" (default: the server's maximum).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
    },
    /// Enrol this machine through its TPM and obtain its X.509-SVID.
    Enroll {
        /// The zeroth server, e.g. https://zeroth.example.org:8443.
        #[arg(long)]
        server: String,
        /// The zeroth CA certificate (PEM) the server's certificate chains to.
        #[arg(long, value_name = "FILE")]
        ca_bundle: PathBuf,
        /// The node group whose policy admits this machine.
        #[arg(long)]
        group: String,
        /// TCTI of the TPM.
        #[arg(long, default_value = "device:/dev/tpmrm0")]
        tcti: String,
        /// Where the agent keeps its TPM-wrapped keys and certificates.
        #[arg(long, default_value = "/var/lib/zeroth-agent")]
        state_dir: PathBuf,
    },
}

fn options(c: &crate::config::AgentConfig) -> EnrolOptions {
    EnrolOptions {
        server: c.server.clone(),
        ca_bundle: c.ca_bundle.clone(),
        group: c.group.clone().unwrap_or_default(),
        tcti: c.tcti.clone(),
        state_dir: c.state_dir.clone(),
        event_log: c.event_log.clone(),
    }
}

pub fn run(args: &AgentArgs) -> Result<()> {
    match &args.command {
        AgentCommand::Run { config } => {
            let c = crate::config::AgentConfig::load(config)?;
            let (tx, rx) = std::sync::mpsc::channel();
            let mut signals = signal_hook::iterator::Signals::new([
                signal_hook::consts::SIGINT,
                signal_hook::consts::SIGTERM,
            ])?;
            std::thread::spawn(move || {
                if signals.forever().next().is_some() {
                    let _ = tx.send(());
                }
            });
            let retry_max = c.retry_max.max(std::time::Duration::from_secs(1));
            let upstream = match &c.token_file {
                Some(_) => Upstream::default(),
                None => Upstream::tpm(&options(&c)),
            };
            let ids = match &c.workload_api {
                Some(w) => {
                    let ids = Identities::new(upstream.clone());
                    ids.start(w.entry_refresh)?;
                    Some(ids)
                }
                None => None,
            };
            let _api = match (&c.workload_api, &ids) {
                (Some(w), Some(ids)) => {
                    let api = WorkloadApi::serve(
                        &w.socket,
                        Access {
                            allow_uids: w.allow_uids.clone(),
                            operators: true,
                            roles: w
                                .roles
                                .iter()
                                .filter_map(|(uid, roles)| Some((uid.parse().ok()?, roles.clone())))
                                .collect(),
                            units: w.units.clone(),
                        },
                        upstream.clone(),
                        ids.clone(),
                    )?;
                    println!("workload API on {}", w.socket.display());
                    Some(api)
                }
                _ => None,
            };
            let _proxies = if c.proxies.is_empty() {
                None
            } else {
                let queue =
                    EventQueue::start(&c.state_dir.join("session-events"), upstream.clone())
                        .map_err(|e| {
                            anyhow::anyhow!(
                                "cannot keep session events in {}: {e}",
                                c.state_dir.join("session-events").display()
                            )
                        })?;
                let queue = Arc::new(queue);
                Some((
                    Proxies::serve(&c.proxies, &upstream, &queue, ids.clone())?,
                    queue,
                ))
            };
            match &c.token_file {
                Some(bootstrap) => crate::agent::token::run(
                    &crate::agent::token::TokenOptions {
                        server: c.server.clone(),
                        ca_bundle: c.ca_bundle.clone(),
                        bootstrap: bootstrap.clone(),
                        state_dir: c.state_dir.clone(),
                    },
                    &upstream,
                    retry_max,
                    &rx,
                ),
                None => crate::agent::run::run(&options(&c), &c.ssh, retry_max, &rx),
            }
            // Session events being written as the stop came are finished.
            if let Some((_, queue)) = &_proxies {
                if !queue.settle(std::time::Duration::from_secs(5)) {
                    tracing::warn!("a session event was still being written at the stop");
                }
            }
            println!("agent stopped");
            Ok(())
        }
        AgentCommand::Jwt {
            config,
            audience,
            ttl,
        } => {
            let c = crate::config::AgentConfig::load(config)?;
            anyhow::ensure!(
                c.group.is_some(),
                "JWT-SVIDs are issued to TPM nodes; this agent runs on a token (`token_file`)"
            );
            let svid_path = c.state_dir.join("svid.pem");
            let svid = std::fs::read_to_string(&svid_path).map_err(|e| {
                anyhow::anyhow!(
                    "no X.509-SVID at {} ({e}): run `zeroth agent run` or `zeroth agent enroll` first",
                    svid_path.display()
                )
            })?;
            let jwt = crate::agent::jwt(&options(&c), &svid, audience, ttl.map(|t| t.as_secs()))?;
            println!("{}", jwt.token);
            Ok(())
        }
        AgentCommand::Enroll {
            server,
            ca_bundle,
            group,
            tcti,
            state_dir,
        } => {
            let outcome = enrol(&EnrolOptions {
                server: server.clone(),
                ca_bundle: ca_bundle.clone(),
                group: group.clone(),
                tcti: tcti.clone(),
                state_dir: state_dir.clone(),
                event_log: None,
            })?;
            match outcome {
                Outcome::Approved {
                    node_id, spiffe_id, ..
                } => {
                    println!(
                        "enrolled: node {node_id} is {spiffe_id}; SVID in {}",
                        state_dir.join("svid.pem").display()
                    )
                }
                Outcome::Pending { node_id } => {
                    println!("pending: node {node_id} awaits an operator's `zeroth node approve {node_id}`")
                }
            }
            Ok(())
        }
    }
}
