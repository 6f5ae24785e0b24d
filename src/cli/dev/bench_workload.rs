//! `zeroth bench workload`: workload X.509-SVIDs per second for many
//! registration entries on one agent (a key and CSR each, signed by the CA
//! key in the HSM, recorded and audited), against the raw PKCS#11 P-256
//! sign rate of the same token; p50/p99 of a first FetchX509SVID on a warm
//! agent (a new connection each); the agent's memory with the entries and
//! with open streams.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use zeroth_hsm::{bench, KeyKind, KeyName, Pkcs11KeyStore};

use super::bench_load::{cpu_seconds, percentile};
use crate::lab::{AgentProcess, LabDir, SoftHsm, ZerothServer};
use crate::server::admin::{call, AdminRequest};

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

/// A gRPC FetchX509SVID over a new connection, as a stock client makes it
/// (h2 directly, so the client's own cost is small): the time to the first
/// message, and the stream kept open.
async fn first_svid(
    socket: &std::path::Path,
) -> Result<(
    Duration,
    h2::RecvStream,
    h2::client::SendRequest<bytes::Bytes>,
)> {
    let started = Instant::now();
    let io = tokio::net::UnixStream::connect(socket).await?;
    let (mut client, conn) = h2::client::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = http::Request::builder()
        .method("POST")
        .uri("http://localhost/SpiffeWorkloadAPI/FetchX509SVID")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("workload.spiffe.io", "true")
        .body(())?;
    let (response, mut send) = client.send_request(request, false)?;
    // An empty X509SVIDRequest: uncompressed, length 0.
    send.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)?;
    let response = response.await?;
    anyhow::ensure!(
        response.status() == 200,
        "FetchX509SVID answered HTTP {}",
        response.status()
    );
    let mut body = response.into_body();
    let first = body
        .data()
        .await
        .context("the stream ended before its first message")??;
    anyhow::ensure!(
        first.len() > 5,
        "FetchX509SVID sent no SVID: {:?}",
        body.trailers().await
    );
    let _ = body.flow_control().release_capacity(first.len());
    Ok((started.elapsed(), body, client))
}

pub fn run(entries: usize, streams: usize, fetches: usize) -> Result<()> {
    let entries = entries.max(1);
    let hsm = SoftHsm::start().context("start a lab SoftHSM token")?;
    hsm.export_conf();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let raw = {
        let store = Pkcs11KeyStore::open(&hsm.pkcs11_config()).context("open the HSM")?;
        let name = KeyName::new("bench-workload-p256")?;
        let rate = bench::raw(
            &store,
            &name,
            KeyKind::EcdsaP256,
            cores,
            Duration::from_secs(3),
        )?;
        zeroth_hsm::KeyStore::destroy(&store, &name)?;
        rate.per_second()
    };
    let exe = std::env::current_exe().context("find the zeroth binary")?;
    let server = ZerothServer::start(
        &exe,
        &hsm,
        &format!(
            "[[group]]\nname = \"edge\"\nek_allow = [\"{}\"]\n",
            "0".repeat(64)
        ),
    )?;
    let admin = server.admin_socket();
    // Entries for programs of other uids, and one for this process (uid 0).
    let made = Instant::now();
    for i in 0..entries {
        let uid = if i == 0 { 0 } else { 100_000 + i };
        call(
            &admin,
            &AdminRequest {
                op: "entry.create".into(),
                ttl_secs: Some(3600),
                params: serde_json::json!({
                    "spiffe_id": format!("spiffe://lab.zeroth/bench/w{i}"),
                    "group": "edge",
                    "selectors": [format!("unix:uid:{uid}")],
                }),
                ..Default::default()
            },
        )
        .map_err(anyhow::Error::msg)?;
    }
    let made = made.elapsed();
    let sockets = LabDir::new("bench-workload-socket")?;
    let socket = sockets.join("api.sock");
    let (_host, config, _) = super::demo_db::token_host(
        &server,
        "bench-workload-host",
        &format!(
            "[workload_api]\nsocket = \"{}\"\nentry_refresh = \"2s\"\n",
            socket.display()
        ),
    )?;
    let mut agent = AgentProcess::start(&exe, &config)?;
    agent.expect(Duration::from_secs(30), |l| {
        l.starts_with("token rotated: ")
    })?;
    let idle_kib = rss_kib(agent.pid())?;
    let server_pid = server.pid().context("the server's pid")?;
    let cpu_before = (cpu_seconds(server_pid)?, cpu_seconds(agent.pid())?);
    // The agent times its own pass over the due entries: "workload SVIDs:
    // N of M issued in T ms".
    let summary = agent.expect(Duration::from_secs(600), |l| {
        l.starts_with("workload SVIDs: ")
    })?;
    let (issued, ms) = summary
        .strip_prefix("workload SVIDs: ")
        .and_then(|rest| {
            let (n, rest) = rest.split_once(" of ")?;
            let ms = rest.split(" issued in ").nth(1)?.strip_suffix(" ms")?;
            Some((n.parse::<usize>().ok()?, ms.parse::<u64>().ok()?))
        })
        .with_context(|| format!("the agent said {summary:?}"))?;
    anyhow::ensure!(issued == entries, "the agent said {summary:?}");
    let minting = Duration::from_millis(ms.max(1));
    let with_entries_kib = rss_kib(agent.pid())?;
    let server_cpu = cpu_seconds(server_pid)? - cpu_before.0;
    let agent_cpu = cpu_seconds(agent.pid())? - cpu_before.1;
    let rate = entries as f64 / minting.as_secs_f64();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (latencies, held) = rt.block_on(async {
        let mut latencies = Vec::with_capacity(fetches);
        for _ in 0..fetches {
            let (took, _, _) = first_svid(&socket).await?;
            latencies.push(took);
        }
        let mut held = Vec::with_capacity(streams);
        for _ in 0..streams {
            held.push(first_svid(&socket).await?);
        }
        anyhow::Ok((latencies, held))
    })?;
    let with_streams_kib = rss_kib(agent.pid())?;
    let mut sorted = latencies.clone();
    sorted.sort();
    drop(held);
    drop(rt);
    agent.stop()?;

    println!(
        "workload SVIDs: {entries} registration entries ({:.1} s to create over the admin socket) on one agent; each SVID a P-256 key made in the agent, a CSR, an HSM signature, a row and an audit event",
        made.as_secs_f64()
    );
    println!(
        "{:<34} {:>12}",
        "raw C_Sign P-256/s (all cores)",
        format!("{raw:.0}")
    );
    println!(
        "{:<34} {:>12}   ({issued} SVIDs in {:.2} s; ratio to raw {:.3})",
        "SVIDs issued/s (agent to server)",
        format!("{rate:.0}"),
        minting.as_secs_f64(),
        rate / raw
    );
    println!(
        "{:<34} {:>12}   agent {:.0} us; HSM signature alone at the raw rate on one core {:.0} us",
        "CPU per SVID, server incl. HSM (us)",
        format!("{:.0}", server_cpu * 1e6 / entries as f64),
        agent_cpu * 1e6 / entries as f64,
        1e6 * cores as f64 / raw
    );
    println!(
        "{:<34} {:>12}   p99 {:.2} ms over {fetches} new connections",
        "first FetchX509SVID p50 ms",
        format!("{:.2}", percentile(&sorted, 0.50)),
        percentile(&sorted, 0.99)
    );
    println!(
        "{:<34} {:>12}   with {entries} SVIDs {} KiB; with {streams} open streams {} KiB",
        "agent RSS KiB (no entries)", idle_kib, with_entries_kib, with_streams_kib
    );
    Ok(())
}
