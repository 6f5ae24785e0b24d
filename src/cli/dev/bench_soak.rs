//! `zeroth bench soak --minutes N`: one server under a steady mix of
//! everything it does (enrolment, renewal, database users, SSH
//! certificates, revocation of leases and of nodes) for N minutes, with its
//! resident memory, open file descriptors, threads and store size sampled
//! every 10 s. Flat memory and descriptors is the goal.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::bench_load::enrolled_node;
use super::bench_server::rss_kib;
use crate::agent::enrol::{post_json, Enrolment};
use crate::agent::{enrol, EnrolOptions, Outcome};
use crate::lab::{LabDir, Postgres, SoftHsm, Swtpm, ZerothServer};
use crate::server::admin::{call, AdminRequest};
use crate::wire::db::{CredsRequest, CredsResponse};
use crate::wire::enrol::{RenewChallenge, RenewResponse};
use crate::wire::ssh::{SshSignRequest, SshSignResponse};

/// How often the server is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// What one kind of work did.
#[derive(Default)]
struct Count {
    done: AtomicU64,
    failed: AtomicU64,
}

impl Count {
    fn record<T>(&self, r: Result<T>) -> Option<T> {
        match r {
            Ok(v) => {
                self.done.fetch_add(1, Ordering::Relaxed);
                Some(v)
            }
            Err(e) => {
                if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    eprintln!("           first failure: {e:#}");
                }
                None
            }
        }
    }
}

#[derive(Default)]
struct Counts {
    enrolments: Count,
    renewals: Count,
    db_users: Count,
    db_revocations: Count,
    ssh_certs: Count,
    node_revocations: Count,
}

/// The server's figures at one moment.
struct Sample {
    at: Duration,
    rss_kib: u64,
    /// The anonymous part of RSS: the heaps and stacks, without the
    /// binary's and libraries' pages mapped from their files.
    anon_kib: u64,
    fds: usize,
    threads: u64,
    store_kib: u64,
}

fn sample(server: &ZerothServer, pid: u32, at: Duration) -> Result<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no Threads in /proc/PID/status")?;
    let anon_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no RssAnon in /proc/PID/status")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    let db = server.database();
    let store_kib = ["", "-wal"]
        .iter()
        .map(|s| {
            let mut p = db.clone().into_os_string();
            p.push(s);
            std::fs::metadata(p).map_or(0, |m| m.len())
        })
        .sum::<u64>()
        / 1024;
    Ok(Sample {
        at,
        rss_kib: rss_kib(pid)?,
        anon_kib,
        fds,
        threads,
        store_kib,
    })
}

fn admin(server: &ZerothServer, op: &str, id: &str) -> Result<()> {
    call(
        &server.admin_socket(),
        &AdminRequest {
            op: op.into(),
            id: Some(id.into()),
            ..Default::default()
        },
    )
    .map(drop)
    .map_err(anyhow::Error::msg)
}

pub fn run(minutes: u64, ssh_ca: &str, retention: Option<Duration>) -> Result<()> {
    let tpm = Swtpm::start().context("start a lab TPM")?;
    let churn_tpm = Swtpm::start().context("start a second lab TPM")?;
    let hsm = SoftHsm::start().context("start a lab SoftHSM token")?;
    let pg = Postgres::start().context("start a lab PostgreSQL")?;
    let (_trust, group) = crate::lab::groups::trusting("bench", &[&tpm, &churn_tpm], true)?;
    let groups = format!(
        "{group}\n[[ssh_role]]\nname = \"bench\"\nprincipals = [\"bench\"]\nallow_groups = [\"bench\"]\n\n[[db_role]]\nname = \"soak\"\nconnection = \"pg\"\nschema = \"public\"\naccess = \"read-only\"\ndefault_ttl = \"1m\"\nmax_ttl = \"10m\"\nallow_groups = [\"bench\"]\n"
    );
    let exe = std::env::current_exe().context("find the zeroth binary")?;
    // The server runs as its systemd unit runs it (the lab's servers
    // inherit this process's environment).
    std::env::set_var("MALLOC_ARENA_MAX", "2");
    // One address enrols the same TPM again and again: the enrolment
    // meters would only measure themselves, so they are lifted.
    let unmetered =
        "[enrolment_limits]\nper_address = 1e9\nper_ek_per_minute = 1e9\nopen_per_ek = 1000000\n";
    let retention = retention
        .map(|r| format!("\nretention = \"{}s\"", r.as_secs().max(1)))
        .unwrap_or_default();
    let server = ZerothServer::start_configured(
        &exe,
        &hsm,
        &format!("ssh_ca_algorithm = \"{ssh_ca}\"{retention}"),
        &format!("{unmetered}\n{groups}"),
        &[],
    )?;
    server.add_postgres("pg", &pg)?;
    let (_agent, opts, e) = enrolled_node(&server, &tpm)?;
    let svid = std::fs::read_to_string(opts.state_dir.join("svid.pem"))?;
    // One TPM context for the node's clients: the TPM takes one at a time.
    let clients = (0..3)
        .map(|_| e.mtls_client(&opts.ca_bundle, &svid))
        .collect::<Result<Vec<_>, _>>()?;
    let pid = server.pid().context("the server's pid")?;
    let counts = Counts::default();
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let until = started + Duration::from_secs(minutes * 60);
    println!(
        "soak: one server (SQLite store, SoftHSM, {ssh_ca} SSH CA, PostgreSQL; MALLOC_ARENA_MAX=2 as in its unit) for {minutes} min under a steady mix: database users given back or left to expire, SSH certificates, renewals, and a second node enrolled, given a user, revoked and readmitted in a loop; sampled every {} s",
        SAMPLE_EVERY.as_secs()
    );
    println!(
        "{:>6} {:>9} {:>9} {:>5} {:>7} {:>9} {:>8} {:>8} {:>6} {:>7}",
        "min",
        "RSS KiB",
        "anon KiB",
        "fds",
        "threads",
        "store KiB",
        "db users",
        "ssh",
        "enrol",
        "renew"
    );
    let mut samples = Vec::new();
    std::thread::scope(|s| -> Result<()> {
        let (counts, stop, opts, e) = (&counts, &stop, &opts, &e);
        let [db_http, ssh_http, renew_http] = &clients[..] else {
            unreachable!("three clients were made")
        };
        let creds_url = format!("{}/v1/db/creds/soak", opts.server);
        // Database users: half given back at once, half left to expire.
        s.spawn({
            let creds_url = creds_url.clone();
            move || -> Result<()> {
                let http = db_http;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let ttl = Some(if n % 2 == 0 { 60 } else { 10 });
                    let made = counts.db_users.record(
                        post_json::<_, CredsResponse>(
                            http,
                            &creds_url,
                            &CredsRequest { ttl_seconds: ttl },
                        )
                        .map_err(anyhow::Error::from),
                    );
                    if let (Some(c), 0) = (made, n % 2) {
                        let url = format!("{}/v1/leases/{}/revoke", opts.server, c.lease_id);
                        counts.db_revocations.record(
                            http.post(url)
                                .send()
                                .and_then(|r| r.error_for_status())
                                .map_err(anyhow::Error::from),
                        );
                    }
                    n += 1;
                }
                Ok(())
            }
        });
        // SSH certificates.
        s.spawn(move || -> Result<()> {
            let http = ssh_http;
            let key = ssh_key::PrivateKey::random(
                &mut p256::elliptic_curve::rand_core::OsRng,
                ssh_key::Algorithm::Ed25519,
            )?;
            let body = SshSignRequest {
                public_key: key.public_key().to_openssh()?,
                principals: None,
                ttl_seconds: Some(60),
            };
            let url = format!("{}/v1/ssh/sign/bench", opts.server);
            while !stop.load(Ordering::Relaxed) {
                counts.ssh_certs.record(
                    post_json::<_, SshSignResponse>(http, &url, &body).map_err(anyhow::Error::from),
                );
            }
            Ok(())
        });
        // Renewals, a few a second.
        s.spawn(move || {
            let (challenge, renew) = (
                format!("{}/v1/identity/challenge", opts.server),
                format!("{}/v1/identity/renew", opts.server),
            );
            while !stop.load(Ordering::Relaxed) {
                counts.renewals.record((|| -> Result<()> {
                    let ch: RenewChallenge =
                        post_json(renew_http, &challenge, &serde_json::json!({}))?;
                    let _: RenewResponse = post_json(renew_http, &renew, &e.renew_request(&ch)?)?;
                    Ok(())
                })());
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        // A second node: enrolled, given a user, revoked, readmitted.
        s.spawn({
            let (server, churn_tpm) = (&server, &churn_tpm);
            move || -> Result<()> {
                let dir = LabDir::new("soak-churn")?;
                let churn = EnrolOptions {
                    tcti: churn_tpm.tcti(),
                    state_dir: dir.path().to_owned(),
                    ..opts.clone()
                };
                while !stop.load(Ordering::Relaxed) {
                    let Some(Outcome::Approved {
                        node_id, svid_pem, ..
                    }) = counts
                        .enrolments
                        .record(enrol(&churn).map_err(anyhow::Error::from))
                    else {
                        continue;
                    };
                    let e = Enrolment::open(&churn.tcti, &churn.state_dir)?;
                    let http = e.mtls_client(&churn.ca_bundle, &svid_pem)?;
                    counts.db_users.record(
                        post_json::<_, CredsResponse>(
                            &http,
                            &format!("{}/v1/db/creds/soak", churn.server),
                            &CredsRequest {
                                ttl_seconds: Some(60),
                            },
                        )
                        .map_err(anyhow::Error::from),
                    );
                    counts
                        .node_revocations
                        .record(admin(server, "node.revoke", &node_id));
                    admin(server, "node.readmit", &node_id)?;
                }
                Ok(())
            }
        });
        // The sampler, on this thread.
        loop {
            let now = Instant::now();
            let row = sample(&server, pid, now - started)?;
            println!(
                "{:>6.1} {:>9} {:>9} {:>5} {:>7} {:>9} {:>8} {:>8} {:>6} {:>7}",
                row.at.as_secs_f64() / 60.0,
                row.rss_kib,
                row.anon_kib,
                row.fds,
                row.threads,
                row.store_kib,
                counts.db_users.done.load(Ordering::Relaxed),
                counts.ssh_certs.done.load(Ordering::Relaxed),
                counts.enrolments.done.load(Ordering::Relaxed),
                counts.renewals.done.load(Ordering::Relaxed),
            );
            samples.push(row);
            if now >= until {
                stop.store(true, Ordering::Relaxed);
                break;
            }
            std::thread::sleep(SAMPLE_EVERY.min(until - now));
        }
        Ok(())
    })?;
    summarise(&samples, &counts, started.elapsed());
    drop(server);
    Ok(())
}

fn summarise(samples: &[Sample], counts: &Counts, took: Duration) {
    let secs = took.as_secs_f64();
    let per = |c: &Count| {
        format!(
            "{} ({:.1}/s, {} failed)",
            c.done.load(Ordering::Relaxed),
            c.done.load(Ordering::Relaxed) as f64 / secs,
            c.failed.load(Ordering::Relaxed)
        )
    };
    println!(
        "done in {:.1} min: db users {}, given back {}, ssh certificates {}, renewals {}, enrolments {}, node revocations {}",
        secs / 60.0,
        per(&counts.db_users),
        per(&counts.db_revocations),
        per(&counts.ssh_certs),
        per(&counts.renewals),
        per(&counts.enrolments),
        per(&counts.node_revocations)
    );
    // Warm-up excluded: the first minute fills caches and pools.
    let warm: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= Duration::from_secs(60))
        .collect();
    if let (Some(first), Some(last)) = (warm.first(), warm.last()) {
        let range = |of: fn(&Sample) -> u64| {
            warm.iter()
                .fold((u64::MAX, 0), |(lo, hi), s| (lo.min(of(s)), hi.max(of(s))))
        };
        let (lo, hi) = range(|s| s.rss_kib);
        let (alo, ahi) = range(|s| s.anon_kib);
        println!(
            "after the first minute: RSS {} -> {} KiB (min {lo}, max {hi}), of it anonymous {} -> {} KiB (min {alo}, max {ahi}), fds {} -> {}, threads {} -> {}, store {} -> {} KiB",
            first.rss_kib, last.rss_kib, first.anon_kib, last.anon_kib, first.fds, last.fds, first.threads, last.threads, first.store_kib, last.store_kib
        );
    }
    let windows = least_per_window(samples, WINDOW);
    if !windows.is_empty() {
        println!(
            "least memory per {}-minute window (what a trim leaves: growth shows here, not in the peaks):",
            WINDOW.as_secs() / 60
        );
        for w in &windows {
            println!(
                "  {:>3}-{:<3} min  RSS {:>7} KiB  anonymous {:>7} KiB  store {:>8} KiB",
                w.from_min, w.to_min, w.rss_kib, w.anon_kib, w.store_kib
            );
        }
    }
    if let Some(slope) = slope_kib_per_hour(&windows) {
        println!("slope of the least anonymous memory after the first window: {slope:+.0} KiB/h");
    }
}

/// The window the least memory is taken over.
const WINDOW: Duration = Duration::from_secs(600);

/// The least of each measure within one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Least {
    from_min: u64,
    to_min: u64,
    rss_kib: u64,
    anon_kib: u64,
    store_kib: u64,
}

fn least_per_window(samples: &[Sample], window: Duration) -> Vec<Least> {
    let mut out: Vec<Least> = Vec::new();
    for s in samples {
        let i = s.at.as_secs() / window.as_secs();
        let (from_min, to_min) = (i * window.as_secs() / 60, (i + 1) * window.as_secs() / 60);
        match out.last_mut() {
            Some(w) if w.from_min == from_min => {
                w.rss_kib = w.rss_kib.min(s.rss_kib);
                w.anon_kib = w.anon_kib.min(s.anon_kib);
                w.store_kib = w.store_kib.min(s.store_kib);
            }
            _ => out.push(Least {
                from_min,
                to_min,
                rss_kib: s.rss_kib,
                anon_kib: s.anon_kib,
                store_kib: s.store_kib,
            }),
        }
    }
    out
}

/// The least-squares slope, in KiB per hour, of the windows' least
/// anonymous memory, the first window (warm-up) left out; None with fewer
/// than two windows left.
fn slope_kib_per_hour(windows: &[Least]) -> Option<f64> {
    let points: Vec<(f64, f64)> = windows
        .iter()
        .skip(1)
        .map(|w| {
            (
                (w.from_min + w.to_min) as f64 / 2.0 / 60.0,
                w.anon_kib as f64,
            )
        })
        .collect();
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let num: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    (den > 0.0).then(|| num / den)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(secs: u64, anon: u64) -> Sample {
        Sample {
            at: Duration::from_secs(secs),
            rss_kib: anon + 20_000,
            anon_kib: anon,
            fds: 30,
            threads: 10,
            store_kib: 1000,
        }
    }

    #[test]
    fn the_least_of_each_window_and_its_slope_per_hour() {
        // Three 10-minute windows whose least anonymous memory grows by
        // 600 KiB a window: 3,600 KiB an hour.
        let samples = [
            sample(0, 9000),
            sample(300, 5000),
            sample(600, 8000),
            sample(900, 6000),
            sample(1200, 9000),
            sample(1500, 6600),
        ];
        let w = least_per_window(&samples, WINDOW);
        assert_eq!(
            w.iter()
                .map(|w| (w.from_min, w.anon_kib))
                .collect::<Vec<_>>(),
            [(0, 5000), (10, 6000), (20, 6600)]
        );
        let slope = slope_kib_per_hour(&w).unwrap();
        assert!((slope - 3600.0).abs() < 1e-6, "{slope}");
        assert_eq!(slope_kib_per_hour(&w[..2]), None);
    }
}
