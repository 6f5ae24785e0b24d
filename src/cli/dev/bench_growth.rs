//! `zeroth bench growth`: the server's CPU per SSH certificate and per
//! database user as the leases it has ever issued grow from none to 100 k
//! and 1 M, with the default retention (ended leases swept out of the
//! tables) and without it. Past leases are written straight into the
//! stopped server's store, ended before the retention horizon.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::bench_load::{cpu_seconds, enrolled_node, requests};
use crate::agent::enrol::post_json;
use crate::lab::{Postgres, SoftHsm, Swtpm, ZerothServer};
use crate::wire::db::{CredsRequest, CredsResponse};
use crate::wire::ssh::{SshSignRequest, SshSignResponse};

const CLIENTS: usize = 8;

/// Adds leases `from..to` to the stopped server's store: SSH leases that
/// ended ten days ago.
fn add_past_leases(db: &std::path::Path, from: u64, to: u64) -> Result<()> {
    let conn = rusqlite::Connection::open(db)?;
    let then = crate::store::now() - 10 * 24 * 3600;
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2)
         INSERT INTO leases (id, kind, role, connection, holder, external_name, state,
                             created, expires, max_expires, revoked)
         SELECT 'past-' || i, 'ssh', 'bench', '', 'spiffe://lab.zeroth/node/past',
                'past-' || i, 'revoked', ?3, ?3 + 60, ?3 + 60, ?3 + 30 FROM n",
        rusqlite::params![from as i64, to as i64 - 1, then],
    )?;
    Ok(())
}

fn rows(db: &std::path::Path) -> Result<i64> {
    let conn = rusqlite::Connection::open(db)?;
    Ok(conn.query_row("SELECT COUNT(*) FROM leases", (), |r| r.get(0))?)
}

pub fn run(per_client: usize, rounds: usize) -> Result<()> {
    let tpm = Swtpm::start().context("start a lab TPM")?;
    let hsm = SoftHsm::start().context("start a lab SoftHSM token")?;
    let pg = Postgres::start().context("start a lab PostgreSQL")?;
    let (_trust, group) = crate::lab::groups::trusting("bench", &[&tpm], true)?;
    let groups = format!(
        "{group}\n[[ssh_role]]\nname = \"bench\"\nprincipals = [\"bench\"]\nallow_groups = [\"bench\"]\n\n[[db_role]]\nname = \"growth\"\nconnection = \"pg\"\nschema = \"public\"\naccess = \"read-only\"\nallow_groups = [\"bench\"]\n"
    );
    let exe = std::env::current_exe().context("find the zeroth binary")?;
    let key = ssh_key::PrivateKey::random(
        &mut p256::elliptic_curve::rand_core::OsRng,
        ssh_key::Algorithm::Ed25519,
    )?;
    let sign = SshSignRequest {
        public_key: key.public_key().to_openssh()?,
        principals: None,
        // Nothing issued here expires during the bench: the revoker's work
        // would be counted in the next point's figures.
        ttl_seconds: Some(3600),
    };
    println!(
        "server CPU per request as lifetime leases grow: {CLIENTS} HTTPS clients x {per_client} SSH certificates, then x {per_client} PostgreSQL users, {rounds} rounds per point; past leases ended 10 days ago"
    );
    println!("each figure: the least of the rounds (the spread of the rounds after it)");
    println!(
        "{:<22} {:>15} {:>11} {:>19} {:>19}",
        "store", "lifetime leases", "lease rows", "us/ssh cert", "us/db user"
    );
    for (label, retention) in [("retention 3d (default)", "3d"), ("no retention", "36500d")] {
        let mut server = ZerothServer::start_configured(
            &exe,
            &hsm,
            &format!("retention = \"{retention}\""),
            &groups,
            &[],
        )?;
        server.add_postgres("pg", &pg)?;
        let (_agent, opts, e) = enrolled_node(&server, &tpm)?;
        let mut past = 0u64;
        for target in [0u64, 100_000, 1_000_000] {
            if target > past {
                server.stop();
                add_past_leases(&server.database(), past, target)?;
                past = target;
                server.resume()?;
                if retention == "3d" {
                    // The sweep at start, done (each start logs afresh).
                    let started = Instant::now();
                    while !server.log().contains("retention period swept") {
                        anyhow::ensure!(
                            started.elapsed() < Duration::from_secs(300),
                            "no sweep after 5 minutes"
                        );
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
            let pid = server.pid().context("the server's pid")?;
            let per = |from: f64| -> Result<f64> {
                Ok((cpu_seconds(pid)? - from) * 1e6 / (CLIENTS * (per_client + 1)) as f64)
            };
            let ssh_url = format!("{}/v1/ssh/sign/bench", opts.server);
            let db_url = format!("{}/v1/db/creds/growth", opts.server);
            let (mut ssh_us, mut db_us) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                let before = cpu_seconds(pid)?;
                requests(&e, &opts, CLIENTS, per_client, |h| {
                    let _: SshSignResponse = post_json(h, &ssh_url, &sign)?;
                    Ok(())
                })?;
                ssh_us.push(per(before)?);
                let before = cpu_seconds(pid)?;
                requests(&e, &opts, CLIENTS, per_client, |h| {
                    let _: CredsResponse = post_json(
                        h,
                        &db_url,
                        &CredsRequest {
                            ttl_seconds: Some(3600),
                        },
                    )?;
                    Ok(())
                })?;
                db_us.push(per(before)?);
            }
            println!(
                "{label:<22} {target:>15} {:>11} {:>19} {:>19}",
                rows(&server.database())?,
                least_and_spread(&ssh_us),
                least_and_spread(&db_us),
            );
        }
    }
    Ok(())
}

/// "least (+spread %)": the least of `rounds` and how far the most is above it.
fn least_and_spread(rounds: &[f64]) -> String {
    let least = rounds.iter().copied().fold(f64::INFINITY, f64::min);
    let most = rounds.iter().copied().fold(0.0, f64::max);
    format!("{least:.0} (+{:.0} %)", (most / least - 1.0) * 100.0)
}
