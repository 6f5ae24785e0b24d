//! `zeroth bench server`: enrolments and renewals per second a real zeroth
//! server sustains (TPM evidence checked in pure Rust, SVIDs signed in
//! SoftHSM, every decision audited and fsync'd), with p50/p99 latency and
//! the server's resident memory idle and after each run.
//!
//! Each lab TPM is one node. Its evidence is produced ahead of time: the
//! client asks for all its challenges, lets its TPM answer them, and only
//! then replays the answers in order, so the measured phase costs the
//! server's work and the HTTPS round trip, not the TPM's.

use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::agent::enrol::{client, post_json, Enrolment};
use crate::lab::{LabDir, Postgres, SoftHsm, Swtpm, ZerothServer};
use crate::wire::enrol::{BeginResponse, FinishRequest, FinishResponse};
use crate::wire::enrol::{RenewChallenge, RenewRequest, RenewResponse};

/// Latencies of one phase, and how long the phase took overall.
struct Phase {
    latencies: Vec<Duration>,
    wall: Duration,
}

impl Phase {
    fn merge(parts: Vec<(Vec<Duration>, Instant, Instant)>) -> Self {
        let start = parts.iter().map(|p| p.1).min().unwrap_or_else(Instant::now);
        let end = parts.iter().map(|p| p.2).max().unwrap_or(start);
        let mut latencies: Vec<Duration> = parts.into_iter().flat_map(|p| p.0).collect();
        latencies.sort();
        Self {
            latencies,
            wall: end - start,
        }
    }

    fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[i - 1].as_secs_f64() * 1000.0
    }

    fn print(&self, what: &str) {
        println!(
            "{what:<11} {:>6} in {:>6.2}s  {:>8.1}/s  p50 {:>6.1} ms  p99 {:>6.1} ms",
            self.latencies.len(),
            self.wall.as_secs_f64(),
            self.latencies.len() as f64 / self.wall.as_secs_f64().max(1e-9),
            self.percentile(0.50),
            self.percentile(0.99)
        );
    }
}

pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

/// One node: its TPM, its agent state and the server it talks to.
struct Node {
    tpm: Swtpm,
    dir: LabDir,
}

fn timed<T>(
    barrier: &Barrier,
    items: Vec<T>,
    mut each: impl FnMut(T) -> Result<()>,
) -> Result<(Vec<Duration>, Instant, Instant)> {
    barrier.wait();
    let start = Instant::now();
    let mut latencies = Vec::with_capacity(items.len());
    for item in items {
        let t = Instant::now();
        each(item)?;
        latencies.push(t.elapsed());
    }
    Ok((latencies, start, Instant::now()))
}

fn enrol_node(
    node: &Node,
    url: &str,
    bundle: &Path,
    per_node: usize,
    barrier: &Barrier,
) -> Result<(Vec<Duration>, Instant, Instant)> {
    let http = client(bundle)?;
    let e = Enrolment::open(&node.tpm.tcti(), node.dir.path())?;
    let begin = e.begin_request("bench")?;
    let mut answers: Vec<FinishRequest> = Vec::with_capacity(per_node);
    for _ in 0..per_node {
        let challenge: BeginResponse = post_json(&http, &format!("{url}/v1/enroll/begin"), &begin)?;
        answers.push(e.finish_request(&challenge)?);
    }
    let finish = format!("{url}/v1/enroll/finish");
    let phase = timed(barrier, answers, |a| {
        let done: FinishResponse = post_json(&http, &finish, &a)?;
        let svid = done
            .svid
            .context("the bench group approves automatically")?;
        crate::agent::enrol::write(&node.dir.join("svid.pem"), "write", svid.as_bytes())?;
        Ok(())
    })?;
    Ok(phase)
}

fn renew_node(
    node: &Node,
    url: &str,
    bundle: &Path,
    per_node: usize,
    barrier: &Barrier,
) -> Result<(Vec<Duration>, Instant, Instant)> {
    let e = Enrolment::open(&node.tpm.tcti(), node.dir.path())?;
    let svid = std::fs::read_to_string(node.dir.join("svid.pem"))?;
    let http = e.mtls_client(bundle, &svid)?;
    let mut answers: Vec<RenewRequest> = Vec::with_capacity(per_node);
    for _ in 0..per_node {
        let ch: RenewChallenge = post_json(
            &http,
            &format!("{url}/v1/identity/challenge"),
            &serde_json::json!({}),
        )?;
        answers.push(e.renew_request(&ch)?);
    }
    let renew = format!("{url}/v1/identity/renew");
    timed(barrier, answers, |a| {
        let _: RenewResponse = post_json(&http, &renew, &a)?;
        Ok(())
    })
}

/// Runs one phase on every node at once.
fn phase(
    nodes: &[Node],
    f: impl Fn(&Node, &Barrier) -> Result<(Vec<Duration>, Instant, Instant)> + Sync,
) -> Result<Phase> {
    let barrier = Barrier::new(nodes.len());
    let parts = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|n| {
                let (f, barrier) = (&f, &barrier);
                s.spawn(move || f(n, barrier))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a bench thread panicked"))
            .collect::<Result<Vec<_>>>()
    })?;
    Ok(Phase::merge(parts))
}

pub fn run(
    nodes: usize,
    per_node: usize,
    runs: usize,
    postgres: bool,
    servers: usize,
) -> Result<()> {
    let nodes = nodes.max(1);
    let servers = servers.max(1);
    anyhow::ensure!(
        postgres || servers == 1,
        "several servers share a PostgreSQL store: add --store postgres"
    );
    let hsm = SoftHsm::start().context("start a lab SoftHSM token")?;
    let tpms = (0..nodes)
        .map(|_| Swtpm::start())
        .collect::<Result<Vec<_>, _>>()
        .context("start the lab TPMs")?;
    let roots = LabDir::new("bench-roots")?;
    let mut intermediates = Vec::new();
    for (i, t) in tpms.iter().enumerate() {
        std::fs::copy(t.ca_root_pem(), roots.join(format!("root-{i}.pem")))?;
        intermediates.extend(std::fs::read(t.ca_intermediate_pem())?);
    }
    let intermediates_file = roots.write("intermediates.pem", &intermediates, 0o600)?;
    let group = format!(
        "[[group]]\nname = \"bench\"\nek_roots = \"{}\"\nek_intermediates = \"{}\"\nauto_approve = true\n",
        roots.path().display(),
        intermediates_file.display()
    );
    let exe = std::env::current_exe().context("find the zeroth binary")?;
    // The load generator is one address replaying many challenges per TPM:
    // the enrolment meters would measure themselves, so they are lifted.
    let unmetered =
        "[enrolment_limits]\nper_address = 1e9\nper_ek_per_minute = 1e9\nopen_per_ek = 1000000\n";
    // A PostgreSQL store replicates synchronously to a standby, so an
    // acknowledged enrolment survives the loss of its primary.
    let store_db = if postgres {
        let (primary, standby) = Postgres::start_replicated()?;
        let dir = LabDir::new("bench-store")?;
        let db = primary.zeroth_store(&dir, "zeroth")?;
        Some((primary, standby, dir, db))
    } else {
        None
    };
    let settings = match &store_db {
        Some((_, _, _, db)) => format!("{unmetered}\n{}", db.toml()),
        None => unmetered.to_owned(),
    };
    let cluster = (0..servers)
        .map(|_| ZerothServer::start_configured(&exe, &hsm, &settings, &group, &[]))
        .collect::<Result<Vec<_>, _>>()?;
    let pids: Vec<u32> = cluster.iter().filter_map(ZerothServer::pid).collect();
    let rss = || -> Result<f64> {
        Ok(pids.iter().map(|p| rss_kib(*p)).sum::<Result<u64>>()? as f64 / 1024.0)
    };
    let nodes: Vec<Node> = tpms
        .into_iter()
        .map(|tpm| {
            Ok(Node {
                tpm,
                dir: LabDir::new("bench-node")?,
            })
        })
        .collect::<Result<_>>()?;
    // Node i talks to server i mod N.
    let urls: Vec<String> = cluster.iter().map(|s| s.url().to_owned()).collect();
    let url_of = |n: &Node| -> &str {
        let i = nodes.iter().position(|m| std::ptr::eq(m, n)).unwrap_or(0);
        &urls[i % urls.len()]
    };
    let bundle = cluster[0].bundle();
    let store = if postgres {
        "a PostgreSQL store with a synchronous standby"
    } else {
        "SQLite WAL + synchronous=FULL"
    };
    println!(
        "{servers} zeroth server(s) (SoftHSM, {store}, audit on), {} nodes (one swtpm each) in parallel, {per_node} requests per node per phase",
        nodes.len()
    );
    println!("server RSS idle: {:.1} MiB", rss()?);
    for run in 1..=runs.max(1) {
        let enrolments = phase(&nodes, |n, b| {
            enrol_node(n, url_of(n), &bundle, per_node, b)
        })?;
        let renewals = phase(&nodes, |n, b| {
            renew_node(n, url_of(n), &bundle, per_node, b)
        })?;
        println!("run {run}:");
        enrolments.print("  enrolments");
        renewals.print("  renewals");
        println!("  server RSS after run {run}: {:.1} MiB", rss()?);
    }
    Ok(())
}
