//! `zeroth store migrate`: moves a single server's SQLite store into an
//! empty PostgreSQL database, so it can become one of several servers.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use zeroth_hsm::{KeyName, KeyStore, Pkcs11KeyStore};

use crate::config::{ServerConfig, StoreConfig};
use crate::store::{Location, Store};

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The server's configuration (its SQLite store and its HSM).
    #[arg(long, default_value = "/etc/zeroth/server.toml", global = true)]
    config: PathBuf,
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Copy every node, lease, token, SSH CA record and audit event into an
    /// empty PostgreSQL store, then verify its audit chain there. Stop the
    /// server first; the SQLite file is left as it was.
    Migrate {
        /// `postgres://USER@HOST[:PORT][,HOST2…]/DB[?…]`, without a password.
        #[arg(long)]
        to: String,
        /// A file holding the database password…
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// …or the name of a systemd credential holding it.
        #[arg(long)]
        password_credential: Option<String>,
        /// PEM CA for TLS to the database (verify-full).
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
}

pub fn run(args: &StoreArgs) -> Result<()> {
    let config = ServerConfig::load(&args.config)?;
    match &args.command {
        StoreCommand::Migrate {
            to,
            password_file,
            password_credential,
            ca_file,
        } => {
            if config.store.is_some() {
                anyhow::bail!(
                    "{} already uses a PostgreSQL store ([store]); migrate moves a SQLite store",
                    args.config.display()
                );
            }
            let target_config = StoreConfig {
                url: to.clone(),
                password_file: password_file.clone(),
                password_credential: password_credential.clone(),
                ca_file: ca_file.clone(),
            };
            if let Some((key, problem)) = target_config.problem() {
                anyhow::bail!(
                    "--{}: {problem}",
                    key.trim_start_matches("store.").replace('_', "-")
                );
            }
            let source_path = config.state_dir.join("zeroth.db");
            anyhow::ensure!(
                source_path.exists(),
                "no SQLite store at {}",
                source_path.display()
            );
            let source = Store::open(&source_path)?;
            let target = Store::open_at(&Location::Postgres(target_config.target()?))
                .context("open the PostgreSQL store")?;
            let moved = crate::store::copy::copy_all(&source, &target)?;
            let rows: i64 = moved.iter().map(|(_, n)| n).sum();
            for (table, n) in &moved {
                println!("{table:<24} {n:>9} rows");
            }
            println!("moved {rows} rows of {} tables to {to}", moved.len());
            let keys = Pkcs11KeyStore::open(&config.hsm.pkcs11()).context("open the HSM")?;
            let key = keys.public_key(&KeyName::new(crate::audit::CHECKPOINT_KEY)?)?;
            let report = crate::audit::verify(&target.lock(), &key)?;
            println!(
                "audit chain intact in PostgreSQL: {} events, {} signed checkpoints",
                report.events, report.checkpoints
            );
            println!(
                "now add to {}:\n\n[store]\nurl = {to:?}",
                args.config.display()
            );
            if let Some(f) = password_file {
                println!("password_file = {:?}", f.display().to_string());
            }
            if let Some(c) = password_credential {
                println!("password_credential = {c:?}");
            }
            if let Some(f) = ca_file {
                println!("ca_file = {:?}", f.display().to_string());
            }
            Ok(())
        }
    }
}
