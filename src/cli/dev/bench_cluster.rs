//! `zeroth bench cluster`: dynamic PostgreSQL users per second (mTLS, the
//! lease durable before the reply, audited) from one server on SQLite, one
//! server on a PostgreSQL store, and two servers on that store sharing the
//! load, with the servers' CPU per user; then how long a SIGKILLed leader
//! leaves the cluster's jobs without a runner, and what workloads see when
//! the store's primary stops and its synchronous standby is promoted.
//!
//! Everything shares this machine's cores: the store, the target database,
//! the HSM, the clients and the servers.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use secrecy::ExposeSecret;

use super::bench_load::{cpu_seconds, enrolled_node, percentile, requests};
use crate::agent::enrol::{post_json, Enrolment};
use crate::agent::EnrolOptions;
use crate::lab::{LabDir, Postgres, SoftHsm, Swtpm, ZerothServer};
use crate::wire::db::{CredsRequest, CredsResponse};

fn add_connection(server: &ZerothServer, pg: &Postgres) -> Result<()> {
    crate::server::admin::call(
        &server.admin_socket(),
        &crate::server::admin::AdminRequest {
            op: "db.connection.add".into(),
            params: serde_json::json!({"name": "pg", "engine": "postgres", "host": "127.0.0.1", "port": pg.port(), "dbname": "postgres", "admin_user": "postgres"}),
            secret: Some(pg.password().expose_secret().into()),
            ..Default::default()
        },
    )
    .map_err(anyhow::Error::msg)?;
    Ok(())
}

struct Row {
    store: &'static str,
    servers: usize,
    rate: f64,
    latencies: Vec<Duration>,
    cpu_per_user: f64,
}

/// Users through `servers` (requests alternate between them), with the
/// servers' CPU per user.
fn measure(
    servers: &[&ZerothServer],
    node: &(LabDir, EnrolOptions, Enrolment),
    clients: usize,
    per_client: usize,
) -> Result<(f64, Vec<Duration>, f64)> {
    let (_, opts, e) = node;
    let urls: Vec<String> = servers
        .iter()
        .map(|s| format!("{}/v1/db/creds/pg", s.url()))
        .collect();
    let pids: Vec<u32> = servers.iter().filter_map(|s| s.pid()).collect();
    let cpu = || -> Result<f64> { pids.iter().map(|p| cpu_seconds(*p)).sum() };
    let before = cpu()?;
    let next = AtomicUsize::new(0);
    let (rate, latencies) = requests(e, opts, clients, per_client, |h| {
        let url = &urls[next.fetch_add(1, Ordering::Relaxed) % urls.len()];
        let _: CredsResponse = post_json(h, url, &CredsRequest::default())?;
        Ok(())
    })?;
    let users = (clients * (per_client + 1)) as f64;
    Ok((rate, latencies, (cpu()? - before) / users))
}

pub fn run(clients: usize, per_client: usize) -> Result<()> {
    let clients = clients.max(1);
    let tpm = Swtpm::start().context("start a lab TPM")?;
    let hsm = SoftHsm::start().context("start a lab SoftHSM token")?;
    let target = Postgres::start().context("start the target PostgreSQL")?;
    let (mut primary, standby) =
        Postgres::start_replicated().context("start the store's PostgreSQL and its standby")?;
    let dir = LabDir::new("bench-cluster")?;
    let roots = dir.subdir("roots", 0o755)?;
    std::fs::copy(tpm.ca_root_pem(), roots.join("root.pem"))?;
    let groups = format!(
        "[[group]]\nname = \"bench\"\nek_roots = \"{}\"\nek_intermediates = \"{}\"\nauto_approve = true\n\n[[db_role]]\nname = \"pg\"\nconnection = \"pg\"\nschema = \"public\"\nallow_groups = [\"bench\"]\n",
        roots.display(),
        tpm.ca_intermediate_pem().display()
    );
    let exe = std::env::current_exe().context("find the zeroth binary")?;
    println!(
        "dynamic PostgreSQL users, {clients} HTTPS clients x {per_client} requests (mTLS, lease durable before the reply, audited); the store's PostgreSQL replicates synchronously to a standby; everything on this machine's cores"
    );
    let mut rows = Vec::new();

    let mut single = ZerothServer::start(&exe, &hsm, &groups)?;
    add_connection(&single, &target)?;
    let node = enrolled_node(&single, &tpm)?;
    let (rate, latencies, cpu_per_user) = measure(&[&single], &node, clients, per_client)?;
    drop(node);
    rows.push(Row {
        store: "SQLite (state_dir)",
        servers: 1,
        rate,
        latencies,
        cpu_per_user,
    });
    single.stop();

    let db = primary.zeroth_store(&dir, "zeroth")?;
    let store = format!(
        "[store]\nurl = \"postgres://zeroth@127.0.0.1:{},127.0.0.1:{}/zeroth?target_session_attrs=read-write\"\npassword_file = \"{}\"\n",
        primary.port(),
        standby.port(),
        db.password_file.display()
    );
    let mut a = ZerothServer::start_configured(&exe, &hsm, &store, &groups, &[])?;
    add_connection(&a, &target)?;
    // One node for the PostgreSQL store, whichever server it asks.
    let node = enrolled_node(&a, &tpm)?;
    let (rate, latencies, cpu_per_user) = measure(&[&a], &node, clients, per_client)?;
    rows.push(Row {
        store: "PostgreSQL",
        servers: 1,
        rate,
        latencies,
        cpu_per_user,
    });
    let mut b = ZerothServer::start_configured(&exe, &hsm, &store, &groups, &[])?;
    let (rate, latencies, cpu_per_user) = measure(&[&a, &b], &node, clients, per_client)?;
    rows.push(Row {
        store: "PostgreSQL",
        servers: 2,
        rate,
        latencies,
        cpu_per_user,
    });
    println!(
        "{:<20} {:>7} {:>9} {:>8} {:>8} {:>16}",
        "store", "servers", "users/s", "p50 ms", "p99 ms", "server CPU/user"
    );
    for r in &rows {
        println!(
            "{:<20} {:>7} {:>9.0} {:>8.1} {:>8.1} {:>13.0} µs",
            r.store,
            r.servers,
            r.rate,
            percentile(&r.latencies, 0.50),
            percentile(&r.latencies, 0.99),
            r.cpu_per_user * 1e6
        );
    }

    // The leader dies: how long until the other server runs the jobs.
    let (dead, heir) = if a.runs_cluster_jobs() {
        (&mut a, &b)
    } else {
        (&mut b, &a)
    };
    let took = dead.kill_and_wait_for(heir, Duration::from_secs(30))?;
    println!(
        "leader SIGKILLed: the other server runs the cluster's jobs {:.1} s later",
        took.as_secs_f64()
    );

    // The store's primary stops and its standby is promoted while a
    // workload keeps asking the surviving server for users.
    let (_, opts, e) = &node;
    let svid = std::fs::read_to_string(opts.state_dir.join("svid.pem"))?;
    let http = e.mtls_client(&opts.ca_bundle, &svid)?;
    let url = format!("{}/v1/db/creds/pg", heir.url());
    let answered: Mutex<Vec<Instant>> = Mutex::new(Vec::new());
    let failed = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| -> Result<()> {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let r: Result<CredsResponse, _> = post_json(&http, &url, &CredsRequest::default());
                match r {
                    Ok(_) => answered
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(Instant::now()),
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        let started = Instant::now();
        while answered.lock().unwrap_or_else(|p| p.into_inner()).len() < 20 {
            if started.elapsed() > Duration::from_secs(30) {
                stop.store(true, Ordering::Relaxed);
                anyhow::bail!("no user issued before the failover");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        primary.stop();
        standby.promote()?;
        let promoted = Instant::now();
        while answered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|t| **t > promoted)
            .count()
            < 20
        {
            if promoted.elapsed() > Duration::from_secs(30) {
                stop.store(true, Ordering::Relaxed);
                anyhow::bail!("no user issued after the promotion");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        Ok(())
    })?;
    let answered = answered.into_inner().unwrap_or_else(|p| p.into_inner());
    let gap = answered
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    println!(
        "store primary stopped, standby promoted: the longest time a workload got no user was {:.0} ms; {} requests failed, {} succeeded",
        gap.as_secs_f64() * 1e3,
        failed.load(Ordering::Relaxed),
        answered.len()
    );
    Ok(())
}
