//! `zeroth server`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::config::ServerConfig;

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Configuration file.
    #[arg(long, default_value = "/etc/zeroth/server.toml")]
    config: PathBuf,
    /// Development only: keep keys in process memory instead of the HSM.
    /// Logs a warning; every key (and so every identity) is lost at exit.
    #[arg(long)]
    dev: bool,
}

pub fn run(args: &ServerArgs) -> Result<()> {
    let config = ServerConfig::load(&args.config)?;
    crate::server::run(config, args.dev)
}
