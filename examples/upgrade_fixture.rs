//! Writes the upgrade fixture kept in `tests/fixtures/previous-release`: the
//! store an earlier zeroth binary wrote on the lab (a node enrolled through
//! swtpm, a PostgreSQL connection, leases live and revoked, a token chain,
//! audit events with a signed checkpoint), the lab HSM token holding its
//! keys, and what the store held (`expected.json`) for the test to compare.
//!
//! ```text
//! git worktree add /tmp/previous <commit> && (cd /tmp/previous && cargo build --bin zeroth)
//! cargo run --example upgrade_fixture -- /tmp/previous/target/debug/zeroth tests/fixtures/previous-release
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use zeroth::agent::enrol::{post_json, Enrolment};
use zeroth::agent::{enrol, EnrolOptions, Outcome};
use zeroth::lab::groups::{self, PG_READ_ONLY_ROLE};
use zeroth::lab::{LabDir, Postgres, SoftHsm, Swtpm, ZerothServer};
use zeroth::wire::db::{CredsRequest, CredsResponse};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, old, out] = args.as_slice() else {
        bail!("usage: upgrade_fixture OLD_ZEROTH_BINARY OUT_DIR");
    };
    let (old, out) = (PathBuf::from(old), PathBuf::from(out));
    let tpm = Swtpm::start()?;
    let hsm = SoftHsm::start()?;
    let pg = Postgres::start()?;
    let (_trust, group) = groups::trusting("edge", &[&tpm], true)?;
    let groups = format!("{group}{PG_READ_ONLY_ROLE}");
    let mut server = ZerothServer::start(&old, &hsm, &groups)?;
    let agent = LabDir::new("agent")?;
    let options = EnrolOptions {
        server: server.url().to_owned(),
        ca_bundle: server.bundle(),
        group: "edge".into(),
        tcti: tpm.tcti(),
        state_dir: agent.path().to_owned(),
        event_log: None,
    };
    let Outcome::Approved { .. } = enrol(&options)? else {
        bail!("the node was not approved");
    };
    let cli = |args: &[&str], stdin: &str| -> Result<String> {
        let (ok, out) = server.cli(args, stdin)?;
        if !ok {
            bail!("zeroth {}: {out}", args.join(" "));
        }
        Ok(out)
    };
    server.add_postgres("pg", &pg)?;
    let http = {
        let e = Enrolment::open(&tpm.tcti(), agent.path())?;
        let svid = std::fs::read_to_string(agent.join("svid.pem"))?;
        e.mtls_client(&server.bundle(), &svid)?
    };
    let mut leases = Vec::new();
    for _ in 0..3 {
        let c: CredsResponse = post_json(
            &http,
            &format!("{}/v1/db/creds/app-ro", server.url()),
            &CredsRequest {
                ttl_seconds: Some(3600),
            },
        )?;
        leases.push(c.lease_id);
    }
    cli(&["lease", "revoke", &leases[0]], "")?;
    cli(&["token", "create", "--group", "edge", "--ttl", "1h"], "")?;
    server.stop();

    std::fs::create_dir_all(&out)?;
    // Whatever the stopped server left in its write-ahead log goes into
    // the file first: the fixture is one file.
    rusqlite::Connection::open(server.database())?.query_row(
        "PRAGMA wal_checkpoint(TRUNCATE)",
        (),
        |_| Ok(()),
    )?;
    let db = out.join("zeroth.db");
    std::fs::copy(server.database(), &db).context("copy the store")?;
    hsm.save(&out.join("hsm"))?;
    let expected = describe(&db)?;
    // Reading a WAL-mode file leaves its side files; the fixture is the file.
    for side in ["zeroth.db-wal", "zeroth.db-shm"] {
        let _ = std::fs::remove_file(out.join(side));
    }
    std::fs::write(
        out.join("expected.json"),
        serde_json::to_string_pretty(&expected)? + "\n",
    )?;
    println!("fixture written to {}: {expected}", out.display());
    Ok(())
}

/// What the store holds, read with plain SQL (no migration).
fn describe(db: &Path) -> Result<serde_json::Value> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let rows = |sql: &str, n: usize| -> Result<Vec<Vec<serde_json::Value>>> {
        let mut stmt = conn.prepare(sql)?;
        let mapped = stmt.query_map((), |r| {
            (0..n)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        rusqlite::types::ValueRef::Integer(v) => v.into(),
                        rusqlite::types::ValueRef::Text(t) => {
                            String::from_utf8_lossy(t).into_owned().into()
                        }
                        rusqlite::types::ValueRef::Blob(b) => hex::encode(b).into(),
                        _ => serde_json::Value::Null,
                    })
                })
                .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(mapped.collect::<rusqlite::Result<_>>()?)
    };
    Ok(serde_json::json!({
        "schema": rows("SELECT version FROM schema_version", 1)?[0][0],
        "nodes": rows("SELECT id, state FROM nodes ORDER BY id", 2)?,
        "leases": rows("SELECT id, state, expires FROM leases ORDER BY id", 3)?,
        "token_chains": rows("SELECT id, state FROM token_chains ORDER BY id", 2)?,
        "ssh_cas": rows("SELECT key_name, kind, state FROM ssh_cas ORDER BY key_name", 3)?,
        "audit": rows("SELECT COUNT(*), MAX(seq) FROM audit", 2)?[0],
        "audit_head": rows("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1", 1)?[0][0],
        "checkpoints": rows("SELECT COUNT(*) FROM audit_checkpoints", 1)?[0][0],
    }))
}
