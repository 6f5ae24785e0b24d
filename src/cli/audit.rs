//! `zeroth audit`: verify the hash chain and its HSM-signed checkpoints; show
//! recent events.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use zeroth_hsm::{KeyName, KeyStore, Pkcs11KeyStore};

use crate::audit;
use crate::config::ServerConfig;
use crate::store::Store;

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The server's configuration (for the database and the HSM).
    #[arg(long, default_value = "/etc/zeroth/server.toml", global = true)]
    config: PathBuf,
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check every event's hash and every checkpoint's HSM signature; exit 1
    /// naming the first event that was edited, deleted or reordered.
    Verify,
    /// The most recent events.
    Tail {
        /// How many of the latest events.
        #[arg(short, default_value_t = 20)]
        n: i64,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: &AuditArgs) -> Result<()> {
    let config = ServerConfig::load(&args.config)?;
    let store = Store::open_at(&config.store_location()?)?;
    match &args.command {
        AuditCommand::Verify => {
            let keys = Pkcs11KeyStore::open(&config.hsm.pkcs11()).context("open the HSM")?;
            let key = keys.public_key(&KeyName::new(audit::CHECKPOINT_KEY)?)?;
            let report = audit::verify(&store.lock(), &key)?;
            println!(
                "audit chain intact: {} events, {} signed checkpoints, {} events after the last checkpoint",
                report.events, report.checkpoints, report.unsigned_tail
            );
        }
        AuditCommand::Tail { n, json } => {
            let events = audit::tail(&store.lock(), *n)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&events)?);
            } else {
                for e in events {
                    println!(
                        "{:>6} {} {:<16} {:<24} {}",
                        e.seq,
                        e.time,
                        e.kind,
                        super::printable::printable(&e.subject),
                        super::printable::printable(&e.detail)
                    );
                }
            }
        }
    }
    Ok(())
}
