//! `zeroth token`: rotating identity tokens for hosts without a TPM.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::server::admin::{call, AdminRequest};

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The server's admin socket.
    #[arg(long, default_value = "/var/lib/zeroth/admin.sock", global = true)]
    socket: PathBuf,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token chain for a node group; prints the first token once.
    Create {
        #[arg(long)]
        group: String,
        /// How long each token of the chain stays valid, e.g. "10m".
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        ttl: Duration,
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
        TokenCommand::Create { group, ttl } => {
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
