//! `zeroth bench`: throughput against the physical limit of the hardware.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use zeroth_hsm::{bench, KeyKind, KeyName, Pkcs11KeyStore};

use crate::lab::SoftHsm;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Ed25519 signatures per second: raw PKCS#11 against zeroth's KeyStore,
    /// at one thread and at one thread per core.
    ///
    /// Without --module, runs on a private SoftHSM2 token from the lab.
    Hsm {
        #[command(flatten)]
        token: crate::cli::hsm::TokenArgs,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
    },
    /// Quote verifications per second in pure Rust, against running
    /// `tpm2_checkquote` per quote, on quotes from a lab TPM.
    Quote {
        /// Seconds per pure-Rust measurement.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        /// Quotes checked with tpm2_checkquote.
        #[arg(long, default_value_t = 50)]
        reference_quotes: usize,
    },
    /// Enrolments and renewals per second a real zeroth server sustains,
    /// p50/p99 latency, and its resident memory idle and after each run.
    Server {
        /// Nodes (one lab swtpm each) enrolling and renewing in parallel.
        #[arg(long, default_value_t = 4)]
        nodes: usize,
        /// Enrolments, then renewals, per node per run.
        #[arg(long, default_value_t = 50)]
        per_node: usize,
        /// Runs, to see whether memory grows run over run.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Where the servers keep their state: "sqlite" or "postgres".
        #[arg(long, default_value = "sqlite", value_parser = ["sqlite", "postgres"])]
        store: String,
        /// Servers on the (PostgreSQL) store; nodes are spread over them.
        #[arg(long, default_value_t = 1)]
        servers: usize,
    },
    /// Dynamic database users per second through zeroth at N concurrent
    /// HTTPS clients, against CREATE ROLE/USER + grant on one raw connection.
    Db {
        /// Concurrent HTTPS clients, each with its own mTLS connection.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Requests per client (after one untimed request each).
        #[arg(long, default_value_t = 100)]
        per_client: usize,
        /// Users created on the raw connection (default: as many as zeroth
        /// makes, since a database's cost per user grows with its users).
        #[arg(long)]
        raw: Option<usize>,
    },
    /// Several servers on one PostgreSQL store: users per second from one
    /// server on SQLite, one and two on PostgreSQL; leader takeover time;
    /// what workloads see when the store fails over to its standby.
    Cluster {
        /// Concurrent HTTPS clients, each with its own mTLS connection.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Requests per client (after one untimed request each).
        #[arg(long, default_value_t = 50)]
        per_client: usize,
    },
    /// The agent's database proxies against direct connections with a
    /// static password: pgbench -S and sysbench oltp_read_only throughput,
    /// connection set-up p50/p99, agent CPU per transaction and memory per
    /// open session.
    Proxy {
        /// Seconds per throughput run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Concurrent clients (pgbench -c, sysbench --threads).
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Connections set up one after another, per side.
        #[arg(long, default_value_t = 200)]
        setups: usize,
        /// Proxied sessions held open for the memory figure.
        #[arg(long, default_value_t = 50)]
        sessions: usize,
    },
    /// Workload X.509-SVIDs per second for many registration entries on
    /// one agent (CSR signed in the HSM) against the raw P-256 sign rate;
    /// p50/p99 of a first FetchX509SVID on a warm agent; agent memory with
    /// the entries and with open streams.
    Workload {
        /// Registration entries the agent serves.
        #[arg(long, default_value_t = 1000)]
        entries: usize,
        /// FetchX509SVID streams held open for the memory figure.
        #[arg(long, default_value_t = 100)]
        streams: usize,
        /// First fetches on new connections, for p50/p99.
        #[arg(long, default_value_t = 200)]
        fetches: usize,
    },
    /// Server CPU per SSH certificate and per database user at 0, 100 k
    /// and 1 M lifetime leases, with the default retention and without.
    Growth {
        /// Requests per client (after one untimed request each).
        #[arg(long, default_value_t = 50)]
        per_client: usize,
        /// Rounds per point: each figure is the least CPU per request of
        /// its rounds (noise from the shared cores only ever adds).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// One server under a steady mix of enrolment, renewal, database
    /// users, SSH certificates and revocations for N minutes, with its
    /// memory, file descriptors, threads and store size every 10 s.
    Soak {
        /// How long the load runs.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// The SSH CA's key type: `ed25519` or `ecdsa-p256`.
        #[arg(long, default_value = "ed25519")]
        ssh_ca: String,
        /// The server's `retention` (e.g. "2m"), so the sweep holds the
        /// store's size steady; the server's default (3 days) otherwise.
        #[arg(long, value_parser = humantime::parse_duration)]
        retention: Option<Duration>,
    },
    /// SSH certificate signings per second through zeroth at N concurrent
    /// HTTPS clients, for an Ed25519 and a P-256 CA, against the raw
    /// PKCS#11 sign rate of each key type on the same token.
    Ssh {
        /// Concurrent HTTPS clients, each with its own mTLS connection.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Requests per client (after one untimed request each).
        #[arg(long, default_value_t = 100)]
        per_client: usize,
        /// Seconds of raw signing per key type.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
    },
}

pub fn run(args: &BenchArgs) -> Result<()> {
    match &args.command {
        BenchCommand::Soak {
            minutes,
            ssh_ca,
            retention,
        } => super::bench_soak::run(*minutes, ssh_ca, *retention),
        BenchCommand::Growth { per_client, rounds } => {
            super::bench_growth::run(*per_client, (*rounds).max(1))
        }
        BenchCommand::Hsm { token, seconds } => hsm(token, Duration::from_secs(*seconds)),
        BenchCommand::Quote {
            seconds,
            reference_quotes,
        } => super::bench_quote::run(Duration::from_secs(*seconds), *reference_quotes),
        BenchCommand::Server {
            nodes,
            per_node,
            runs,
            store,
            servers,
        } => super::bench_server::run(*nodes, *per_node, *runs, store == "postgres", *servers),
        BenchCommand::Db {
            clients,
            per_client,
            raw,
        } => super::bench_db::run(*clients, *per_client, *raw),
        BenchCommand::Cluster {
            clients,
            per_client,
        } => super::bench_cluster::run(*clients, *per_client),
        BenchCommand::Ssh {
            clients,
            per_client,
            seconds,
        } => super::bench_ssh::run(*clients, *per_client, *seconds),
        BenchCommand::Workload {
            entries,
            streams,
            fetches,
        } => super::bench_workload::run(*entries, *streams, *fetches),
        BenchCommand::Proxy {
            seconds,
            clients,
            setups,
            sessions,
        } => super::bench_proxy::run(*seconds, *clients, *setups, *sessions),
    }
}

fn hsm(token: &crate::cli::hsm::TokenArgs, duration: Duration) -> Result<()> {
    let (_lab, config) = match token.module {
        Some(_) => (None, token.config()?),
        None => {
            let lab = SoftHsm::start().context("start a lab SoftHSM token")?;
            lab.export_conf();
            let config = lab.pkcs11_config();
            (Some(lab), config)
        }
    };
    let store = Pkcs11KeyStore::open(&config).context("open the HSM")?;
    let name = KeyName::new("bench-ed25519")?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "Ed25519 signing on {} ({} s per run)",
        store.module().path().display(),
        duration.as_secs()
    );
    println!(
        "{:>8} {:>14} {:>14} {:>7}",
        "threads", "raw signs/s", "KeyStore/s", "ratio"
    );
    for threads in [1, cores] {
        let raw = bench::raw(&store, &name, KeyKind::Ed25519, threads, duration)?;
        let ks = bench::keystore(&store, &name, KeyKind::Ed25519, threads, duration)?;
        println!(
            "{:>8} {:>14.0} {:>14.0} {:>7.3}",
            threads,
            raw.per_second(),
            ks.per_second(),
            ks.per_second() / raw.per_second()
        );
    }
    if token.module.is_none() {
        zeroth_hsm::KeyStore::destroy(&store, &name)?;
    }
    Ok(())
}
