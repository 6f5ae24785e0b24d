//! `zeroth db creds ROLE`: dynamic credentials for a person at a node,
//! asked for with the node's identity. With `--exec`, the client gets the
//! password in its environment only, and the lease is given back when the
//! client exits.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::agent::enrol::{post_json, Enrolment};
use crate::server::api::db::{CredsRequest, CredsResponse};

pub fn run(role: &str, config: &Path, ttl: Option<Duration>, exec: &[String]) -> Result<()> {
    let c = crate::config::AgentConfig::load(config)?;
    anyhow::ensure!(
        c.group.is_some(),
        "database credentials go to TPM nodes; this agent runs on a token (`token_file`)"
    );
    let svid_path = c.state_dir.join("svid.pem");
    let svid = std::fs::read_to_string(&svid_path).with_context(|| {
        format!(
            "no X.509-SVID at {}: run `zeroth agent run` first",
            svid_path.display()
        )
    })?;
    let e = Enrolment::open(&c.tcti, &c.state_dir)?;
    let http = e.mtls_client(&c.ca_bundle, &svid)?;
    let base = c.server.trim_end_matches('/');
    let creds: CredsResponse = post_json(
        &http,
        &format!("{base}/v1/db/creds/{role}"),
        &CredsRequest {
            ttl_seconds: ttl.map(|t| t.as_secs()),
        },
    )?;
    let Some((program, args)) = exec.split_first() else {
        let scheme = if creds.engine == "postgres" {
            "postgresql"
        } else {
            "mysql"
        };
        println!(
            "{scheme}://{}:{}@{}:{}/{}",
            creds.username, creds.password, creds.host, creds.port, creds.database
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
            .env("PGPASSWORD", &creds.password);
    } else {
        cmd.arg(format!("--host={}", creds.host))
            .arg(format!("--port={}", creds.port))
            .arg(format!("--user={}", creds.username))
            .arg("--protocol=TCP")
            .args(args)
            .env("MYSQL_PWD", &creds.password);
    }
    let status = cmd.status().with_context(|| format!("run {program}"))?;
    // The session is over: give the lease back now rather than at expiry.
    let given_back = http
        .post(format!("{base}/v1/leases/{}/revoke", creds.lease_id))
        .send()
        .map(|r| r.status().is_success())
        .unwrap_or(false);
    if !given_back {
        eprintln!(
            "lease {} could not be given back; it expires on its own",
            creds.lease_id
        );
    }
    // Release the TPM (flushing its handles) before exiting with the
    // client's status.
    drop((http, e));
    std::process::exit(status.code().unwrap_or(1));
}
