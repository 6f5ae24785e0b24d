//! `zeroth db creds ROLE`: dynamic credentials for a person at a node,
//! asked for with the host's identity (a TPM node's own key, or a token host's
//! agent through its workload API). With `--exec`, the client gets the
//! password in its environment only, and the lease is given back when the
//! client exits.

use secrecy::ExposeSecret;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use super::asker::Asker;
use crate::agent::workload_api::WorkloadRequest;
use crate::wire::db::CredsResponse;

pub fn run(
    role: &str,
    config: &Path,
    socket: Option<&Path>,
    ttl: Option<Duration>,
    exec: &[String],
    json: bool,
) -> Result<()> {
    let asker = Asker::for_command(config, socket)?;
    let creds: CredsResponse = asker.ask(&WorkloadRequest {
        op: "db.creds".into(),
        role: Some(role.to_owned()),
        ttl_seconds: ttl.map(|t| t.as_secs()),
        ..Default::default()
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&creds)?);
        return Ok(());
    }
    let Some((program, args)) = exec.split_first() else {
        let scheme = if creds.engine == "postgres" {
            "postgresql"
        } else {
            "mysql"
        };
        println!(
            "{scheme}://{}:{}@{}:{}/{}",
            creds.username,
            creds.password.expose_secret(),
            creds.host,
            creds.port,
            creds.database
        );
        eprintln!(
            "lease {} expires in {}s",
            creds.lease_id,
            creds.expires - crate::store::now()
        );
        return Ok(());
    };
    let mut cmd = std::process::Command::new(program);
    if creds.engine == "postgres" {
        cmd.args(args)
            .env("PGHOST", &creds.host)
            .env("PGPORT", creds.port.to_string())
            .env("PGUSER", &creds.username)
            .env("PGDATABASE", &creds.database)
            .env("PGPASSWORD", creds.password.expose_secret());
    } else {
        cmd.arg(format!("--host={}", creds.host))
            .arg(format!("--port={}", creds.port))
            .arg(format!("--user={}", creds.username))
            .arg("--protocol=TCP")
            .args(args)
            .env("MYSQL_PWD", creds.password.expose_secret());
    }
    let status = cmd.status().with_context(|| format!("run {program}"))?;
    // The session is over: give the lease back now rather than at expiry.
    if !asker.give_back(&creds.lease_id) {
        eprintln!(
            "lease {} could not be given back; it expires on its own",
            creds.lease_id
        );
    }
    // Release the TPM (flushing its handles) before exiting with the
    // client's status.
    drop(asker);
    std::process::exit(status.code().unwrap_or(1));
}
