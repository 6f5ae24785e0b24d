//! `zeroth token`: rotating identity tokens for hosts without a TPM.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::server::admin::{call, AdminRequest};

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The server's admin socket.
    #[arg(long, default_value_os_t = crate::cli::admin_socket::default(), global = true)]
    socket: PathBuf,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token chain for a node group; prints the first token once
    /// (standard output) and the chain's id (standard error, or both as
    /// JSON with --json).
    Create {
        /// The node group the chain's host joins.
        #[arg(long)]
        group: String,
        /// How long each token of the chain stays valid, e.g. "10m".
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Print {"chain", "token", "group", "expires"} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every token chain: id, group, state, tokens handed out, and when the
    /// newest expires (a lost chain id is found here).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token chain: its host gets no new token or SVID, and its
    /// database users and SSH certificates are revoked.
    Revoke {
        /// The chain id `token create` printed.
        chain: String,
    },
}

pub fn run(args: &TokenArgs) -> Result<()> {
    match &args.command {
        TokenCommand::List { json } => {
            let answer = call(
                &args.socket,
                &AdminRequest {
                    op: "token.list".into(),
                    ..Default::default()
                },
            )
            .map_err(anyhow::Error::msg)?;
            let chains = answer["chains"].as_array().cloned().unwrap_or_default();
            if *json {
                println!("{}", serde_json::to_string_pretty(&chains)?);
                return Ok(());
            }
            println!(
                "{:<18} {:<12} {:<8} {:>6}  newest token expires",
                "chain", "group", "state", "tokens"
            );
            for c in chains {
                let expires = c["expires"].as_i64().unwrap_or(0);
                let when = match expires {
                    0 => "-".to_owned(),
                    t => humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + Duration::from_secs(t as u64),
                    )
                    .to_string(),
                };
                println!(
                    "{:<18} {:<12} {:<8} {:>6}  {when}",
                    c["chain"].as_str().unwrap_or(""),
                    c["group"].as_str().unwrap_or(""),
                    c["state"].as_str().unwrap_or(""),
                    c["tokens"].as_i64().unwrap_or(0)
                );
            }
            Ok(())
        }
        TokenCommand::Create { group, ttl, json } => {
            let answer = call(
                &args.socket,
                &AdminRequest {
                    op: "token.create".into(),
                    id: None,
                    group: Some(group.clone()),
                    ttl_secs: Some(ttl.as_secs() as i64),
                    ..Default::default()
                },
            )
            .map_err(anyhow::Error::msg)?;
            if *json {
                println!(
                    "{}",
                    serde_json::json!({
                        "chain": answer["chain"],
                        "token": answer["token"],
                        "group": group,
                        "expires": answer["expires"],
                    })
                );
                return Ok(());
            }
            eprintln!(
                "token chain {} for group {group}; each token works once and within {}",
                answer["chain"].as_str().unwrap_or(""),
                humantime::format_duration(*ttl)
            );
            println!("{}", answer["token"].as_str().unwrap_or(""));
            Ok(())
        }
        TokenCommand::Revoke { chain } => {
            let answer = call(
                &args.socket,
                &AdminRequest {
                    op: "token.revoke".into(),
                    id: Some(chain.clone()),
                    ..Default::default()
                },
            )
            .map_err(anyhow::Error::msg)?;
            if answer["was_revoked"].as_bool() == Some(true) {
                println!("token chain {chain} was already revoked");
            } else {
                println!("token chain {chain} revoked; its leases are being revoked");
            }
            Ok(())
        }
    }
}
