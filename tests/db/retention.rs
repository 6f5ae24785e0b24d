//! The retention sweep of a large store gives the store back between its
//! batches: issuance goes on beside it, each request waiting at most about
//! one batch, not the whole sweep.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use zeroth::agent::enrol::post_json;
use zeroth::wire::db::{CredsRequest, CredsResponse};

use super::lab;

/// Adds `n` SSH leases that ended ten days ago (past the default 3-day
/// retention) to a stopped server's store.
fn add_past_leases(db: &std::path::Path, n: i64) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let then = zeroth::store::now() - 10 * 24 * 3600;
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
         INSERT INTO leases (id, kind, role, connection, holder, external_name, state,
                             created, expires, max_expires, revoked)
         SELECT 'past-' || i, 'ssh', 'old', '', 'spiffe://lab.zeroth/node/past',
                'past-' || i, 'revoked', ?2, ?2 + 60, ?2 + 60, ?2 + 30 FROM n",
        rusqlite::params![n, then],
    )
    .unwrap();
}

#[test]
fn issuance_goes_on_while_a_million_old_leases_are_swept() {
    let mut lab = lab();
    lab.add_connections();
    lab.server.stop();
    add_past_leases(&lab.server.database(), 1_000_000);
    lab.server.resume().unwrap();
    let clients = lab.node_clients(4);
    let url = format!("{}/v1/db/creds/app-ro", lab.server.url());
    let waits: Mutex<Vec<Duration>> = Mutex::new(Vec::new());
    let started = Instant::now();
    let swept = || lab.server.log().contains("retention period swept");
    std::thread::scope(|s| {
        for http in &clients {
            let (url, waits, swept) = (&url, &waits, &swept);
            s.spawn(move || {
                while !swept() && started.elapsed() < Duration::from_secs(120) {
                    let t = Instant::now();
                    post_json::<_, CredsResponse>(
                        http,
                        url,
                        &CredsRequest {
                            ttl_seconds: Some(60),
                        },
                    )
                    .unwrap();
                    waits.lock().unwrap().push(t.elapsed());
                }
            });
        }
    });
    let took = started.elapsed();
    assert!(
        swept(),
        "the sweep did not end within 120 s:\n{}",
        lab.server.log()
    );
    let mut waits = waits.into_inner().unwrap();
    waits.sort();
    let p99 = waits[waits.len() * 99 / 100];
    let worst = *waits.last().unwrap();
    println!(
        "{} users made during a {:.1} s sweep of 1 M leases: p50 {:?}, p99 {p99:?}, worst {worst:?}",
        waits.len(),
        took.as_secs_f64(),
        waits[waits.len() / 2]
    );
    // Holding the store across the whole sweep kept every writer waiting
    // for all of it; one batch at a time, no request waits seconds.
    assert!(
        waits.len() >= 20,
        "only {} users made during the sweep",
        waits.len()
    );
    assert!(
        worst < Duration::from_secs(3),
        "a request waited {worst:?} during the sweep (p99 {p99:?})"
    );
}
