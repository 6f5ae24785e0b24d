//! Load from N concurrent mTLS clients of one enrolled node, for the
//! benchmarks that measure zeroth's issuance against a physical limit.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::agent::enrol::{post_json, Enrolment};
use crate::agent::{enrol, EnrolOptions, Outcome};
use crate::lab::{LabDir, Swtpm, ZerothServer};

/// The bench's node: enrolled in group "bench" of `server` through `tpm`,
/// with its state directory (keep it alive) and its TPM-held identity.
pub fn enrolled_node(
    server: &ZerothServer,
    tpm: &Swtpm,
) -> Result<(LabDir, EnrolOptions, Enrolment)> {
    let dir = LabDir::new("bench-agent")?;
    let opts = EnrolOptions {
        server: server.url().to_owned(),
        ca_bundle: server.bundle(),
        group: "bench".into(),
        tcti: tpm.tcti(),
        state_dir: dir.path().to_owned(),
        event_log: None,
    };
    anyhow::ensure!(
        matches!(enrol(&opts)?, Outcome::Approved { .. }),
        "the bench node was not approved"
    );
    let e = Enrolment::open(&opts.tcti, &opts.state_dir)?;
    Ok((dir, opts, e))
}

/// The `p` quantile of sorted latencies, in milliseconds.
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[i - 1].as_secs_f64() * 1000.0
}

/// `clients` threads, each with its own mTLS connection, posting `body` to
/// `url` `per_client` times; rate and sorted latencies.
pub fn through_zeroth<Req, Resp>(
    e: &Enrolment,
    opts: &EnrolOptions,
    url: &str,
    body: &Req,
    clients: usize,
    per_client: usize,
) -> Result<(f64, Vec<Duration>)>
where
    Req: serde::Serialize + Sync,
    Resp: serde::de::DeserializeOwned,
{
    requests(e, opts, clients, per_client, |h| {
        let _: Resp = post_json(h, url, body)?;
        Ok(())
    })
}

/// `clients` threads, each with its own mTLS connection, making `request`
/// `per_client` times (after one untimed request each, so that the TLS
/// handshakes, signed by the TPM, are not what is measured); rate and
/// sorted latencies.
pub fn requests(
    e: &Enrolment,
    opts: &EnrolOptions,
    clients: usize,
    per_client: usize,
    request: impl Fn(&reqwest::blocking::Client) -> Result<()> + Sync,
) -> Result<(f64, Vec<Duration>)> {
    let svid = std::fs::read_to_string(opts.state_dir.join("svid.pem"))?;
    let https = (0..clients)
        .map(|_| e.mtls_client(&opts.ca_bundle, &svid))
        .collect::<Result<Vec<_>, _>>()?;
    for h in &https {
        request(h)?;
    }
    let barrier = Barrier::new(clients);
    let started = Instant::now();
    let mut latencies = std::thread::scope(|s| {
        let handles: Vec<_> = https
            .iter()
            .map(|h| {
                let (barrier, request) = (&barrier, &request);
                s.spawn(move || -> Result<Vec<Duration>> {
                    barrier.wait();
                    let mut l = Vec::with_capacity(per_client);
                    for _ in 0..per_client {
                        let t = Instant::now();
                        request(h)?;
                        l.push(t.elapsed());
                    }
                    Ok(l)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a bench client panicked"))
            .collect::<Result<Vec<_>>>()
    })?
    .concat();
    let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    Ok((rate, latencies))
}

/// CPU time (user + system) the process `pid` has used so far, from
/// /proc/PID/stat in clock ticks of 1/100 s (Linux's USER_HZ).
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which ends at the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow::anyhow!("malformed /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?
            .parse::<f64>()?)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after ')'.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}
