//! `zeroth workload list`: what this node's agent serves on its workload
//! socket: each registration entry, its X.509-SVID and the programs it
//! served lately.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::agent::workload_api::{call, WorkloadRequest};
use crate::config::AgentConfig;
use crate::wire::entry::Entry;

#[derive(Debug, Args)]
pub struct WorkloadArgs {
    /// The agent's configuration (for its workload socket).
    #[arg(long, default_value = "/etc/zeroth/agent.toml", global = true)]
    config: PathBuf,
    /// The workload socket, instead of the one agent.toml names.
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: WorkloadCommand,
}

#[derive(Debug, Subcommand)]
enum WorkloadCommand {
    /// The entries this node serves, their SVIDs' expiry and the programs
    /// they served lately.
    List,
}

fn at(secs: u64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    let left = t
        .duration_since(SystemTime::now())
        .map(|d| format!("in {}s", d.as_secs()))
        .unwrap_or_else(|_| "expired".into());
    format!("{} ({left})", humantime::format_rfc3339_seconds(t))
}

pub fn run(args: &WorkloadArgs) -> Result<()> {
    let socket = match &args.socket {
        Some(s) => s.clone(),
        None => AgentConfig::load(&args.config)?
            .workload_api
            .map(|w| w.socket)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{} has no [workload_api]: this agent serves no workloads",
                    args.config.display()
                )
            })?,
    };
    let WorkloadCommand::List = args.command;
    let answer = call(
        &socket,
        &WorkloadRequest {
            op: "workload.list".into(),
            ..Default::default()
        },
    )
    .map_err(|(status, e)| anyhow::anyhow!("{e} ({status})"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let items = answer["entries"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        println!("no registration entries for this node (zeroth entry create on the server)");
    }
    for item in &items {
        let e: Entry = serde_json::from_value(item["entry"].clone())?;
        let selectors: Vec<String> = e.selectors.iter().map(|s| s.to_string()).collect();
        let svid = match item["svid_expires"].as_u64() {
            Some(t) => format!("SVID until {}", at(t)),
            None => "no SVID yet".into(),
        };
        let line = format!(
            "{} {} for {}: {svid}",
            e.id,
            e.spiffe_id,
            selectors.join(" + ")
        );
        println!("{}", super::printable::printable(&line));
        for w in item["workloads"].as_array().into_iter().flatten() {
            println!(
                "    served {}",
                super::printable::printable(w["who"].as_str().unwrap_or_default())
            );
        }
    }
    Ok(())
}
