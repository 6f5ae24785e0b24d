//! `zeroth bench ssh`: SSH certificate signings per second through zeroth
//! (HTTPS keep-alive, mTLS, serial + lease + audit committed before the
//! reply) against the raw PKCS#11 sign rate of the CA's key type, measured
//! on the same token in the same run.

use std::time::Duration;

use anyhow::{Context, Result};
use zeroth_hsm::{bench, KeyKind, KeyName, Pkcs11KeyStore};

use super::bench_load::{cpu_seconds, enrolled_node, percentile, requests, through_zeroth};
use crate::lab::{LabDir, SoftHsm, Swtpm, ZerothServer};
use crate::wire::ssh::{SshSignRequest, SshSignResponse};

pub fn run(clients: usize, per_client: usize, seconds: u64) -> Result<()> {
    let clients = clients.max(1);
    let tpm = Swtpm::start().context("start a lab TPM")?;
    let hsm = SoftHsm::start().context("start a lab SoftHSM token")?;
    hsm.export_conf();
    let roots = LabDir::new("bench-roots")?;
    std::fs::copy(tpm.ca_root_pem(), roots.join("root.pem"))?;
    let groups = format!(
        "[[group]]\nname = \"bench\"\nek_roots = \"{}\"\nek_intermediates = \"{}\"\nauto_approve = true\n\n[[ssh_role]]\nname = \"bench\"\nprincipals = [\"bench\"]\nallow_groups = [\"bench\"]\n",
        roots.path().display(),
        tpm.ca_intermediate_pem().display()
    );
    let exe = std::env::current_exe().context("find the zeroth binary")?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let subject = ssh_key::PrivateKey::random(
        &mut p256::elliptic_curve::rand_core::OsRng,
        ssh_key::Algorithm::Ed25519,
    )?;
    let body = SshSignRequest {
        public_key: subject.public_key().to_openssh()?,
        principals: None,
        ttl_seconds: None,
    };
    println!(
        "SSH certificates: {clients} HTTPS clients (keep-alive, mTLS) x {per_client} signings through zeroth (serial, lease and audit event committed before each reply) vs raw C_Sign on {cores} threads for {seconds} s, same SoftHSM token"
    );
    println!(
        "{:<10} {:>12} {:>12} {:>7} {:>9} {:>9}",
        "CA key", "raw/s", "zeroth/s", "ratio", "p50 ms", "p99 ms"
    );
    for (label, setting, kind) in [
        ("ed25519", "ed25519", KeyKind::Ed25519),
        ("p-256", "ecdsa-p256", KeyKind::EcdsaP256),
    ] {
        // The physical limit first, while nothing else runs.
        let raw = {
            let store = Pkcs11KeyStore::open(&hsm.pkcs11_config()).context("open the HSM")?;
            let name = KeyName::new(&format!("bench-ssh-{setting}"))?;
            let rate = bench::raw(&store, &name, kind, cores, Duration::from_secs(seconds))?;
            zeroth_hsm::KeyStore::destroy(&store, &name)?;
            rate.per_second()
        };
        let server = ZerothServer::start_configured(
            &exe,
            &hsm,
            &format!("ssh_ca_algorithm = \"{setting}\""),
            &groups,
            &[],
        )?;
        let (_agent, opts, e) = enrolled_node(&server, &tpm)?;
        let url = format!("{}/v1/ssh/sign/bench", opts.server);
        let pid = server.pid().context("the server's pid")?;
        let cpu_before = cpu_seconds(pid)?;
        let own_before = cpu_seconds(std::process::id())?;
        let (rate, lat) =
            through_zeroth::<_, SshSignResponse>(&e, &opts, &url, &body, clients, per_client)?;
        println!(
            "{label:<10} {raw:>12.0} {rate:>12.0} {:>7.3} {:>9.1} {:>9.1}",
            rate / raw,
            percentile(&lat, 0.50),
            percentile(&lat, 0.99)
        );
        // The load generator shares the machine's cores with the server, so
        // also compare CPU per certificate with CPU per raw signature.
        let server_us =
            (cpu_seconds(pid)? - cpu_before) * 1e6 / (clients * (per_client + 1)) as f64;
        let client_us = (cpu_seconds(std::process::id())? - own_before) * 1e6
            / (clients * (per_client + 1)) as f64;
        let raw_us = cores as f64 * 1e6 / raw;
        println!(
            "           server CPU {server_us:.0} us per certificate (the clients {client_us:.0} us), raw C_Sign {raw_us:.0} us: signing is {:.0}% of the server's work",
            100.0 * raw_us / server_us
        );
        // The HSM here is the same CPU: the clients' own HTTPS work per
        // certificate bounds any server's ratio on these cores.
        println!(
            "           bound on these {cores} cores: a server that only signed would reach {:.2} of raw beside these clients; this server with the cores to itself {:.2}",
            raw_us / (raw_us + client_us),
            raw_us / server_us
        );
        // What the transport alone costs on these connections: the
        // cheapest request there is, a CA key read from memory.
        let ca_url = format!("{}/v1/ssh/ca/user", opts.server);
        let (server0, own0) = (cpu_seconds(pid)?, cpu_seconds(std::process::id())?);
        requests(&e, &opts, clients, per_client, |h| {
            let r = h.get(&ca_url).send()?.error_for_status()?;
            anyhow::ensure!(!r.text()?.is_empty(), "no CA key at {ca_url}");
            Ok(())
        })?;
        let per = |t: f64| t * 1e6 / (clients * (per_client + 1)) as f64;
        println!(
            "           HTTPS alone (GET /v1/ssh/ca/user, same clients): server {:.0} us, clients {:.0} us per request",
            per(cpu_seconds(pid)? - server0),
            per(cpu_seconds(std::process::id())? - own0)
        );
        // Every reply stood for a durable lease.
        drop(e);
        let store = crate::store::Store::open(&server.database())?;
        let live = crate::store::leases::live(&store.lock(), None, None)?.len();
        anyhow::ensure!(
            live == clients * (per_client + 1),
            "{live} leases for {} replies",
            clients * (per_client + 1)
        );
    }
    Ok(())
}
