//! `zeroth node`: the node registry, over the admin socket.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::printable::field;
use crate::server::admin::{call, AdminRequest};

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The server's admin socket.
    #[arg(long, default_value_os_t = crate::cli::admin_socket::default(), global = true)]
    socket: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: NodeCommand,
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Every node: id, group, state, hostname.
    List,
    /// One node in full.
    Show {
        /// The node's id (`zeroth node list`).
        id: String,
    },
    /// Approve a pending node: its next enrolment gets an SVID.
    Approve {
        /// The node's id (`zeroth node list`).
        id: String,
    },
    /// Turn down a pending node.
    Reject {
        /// The node's id (`zeroth node list`).
        id: String,
    },
    /// Revoke a node: no further SVIDs, enrolment refused until re-admitted.
    Revoke {
        /// The node's id (`zeroth node list`).
        id: String,
    },
    /// Re-admit a revoked node: it is pending again, and its next enrolment
    /// follows its group's policy.
    Readmit {
        /// The node's id (`zeroth node list`).
        id: String,
    },
}

pub fn run(args: &NodeArgs) -> Result<()> {
    let (op, id) = match &args.command {
        NodeCommand::List => ("node.list", None),
        NodeCommand::Show { id } => ("node.show", Some(id.clone())),
        NodeCommand::Approve { id } => ("node.approve", Some(id.clone())),
        NodeCommand::Reject { id } => ("node.reject", Some(id.clone())),
        NodeCommand::Revoke { id } => ("node.revoke", Some(id.clone())),
        NodeCommand::Readmit { id } => ("node.readmit", Some(id.clone())),
    };
    let request = AdminRequest {
        op: op.into(),
        id,
        group: None,
        ttl_secs: None,
        ..Default::default()
    };
    let answer = call(&args.socket, &request).map_err(anyhow::Error::msg)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    match &args.command {
        NodeCommand::List => {
            println!("{:<18} {:<12} {:<9} HOSTNAME", "ID", "GROUP", "STATE");
            for n in answer["nodes"].as_array().into_iter().flatten() {
                println!(
                    "{:<18} {:<12} {:<9} {}",
                    field(n, "id"),
                    field(n, "group"),
                    field(n, "state"),
                    field(n, "hostname")
                );
            }
        }
        NodeCommand::Show { .. } => println!("{}", serde_json::to_string_pretty(&answer["node"])?),
        _ => println!(
            "node {} is now {}",
            answer["id"].as_str().unwrap_or(""),
            answer["state"].as_str().unwrap_or("")
        ),
    }
    Ok(())
}
