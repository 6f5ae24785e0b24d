//! A store belongs to one trust: servers starting together on a fresh token
//! make each key once, and a server with another token or another trust
//! domain is refused before it writes anything.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use zeroth::lab::{LabDir, Postgres, SoftHsm, Swtpm, ZerothServer};

use super::{audit_verifies, groups};

/// A fresh token and an empty PostgreSQL store, and the groups a server
/// of them is configured with.
struct Fresh {
    hsm: SoftHsm,
    pg: Postgres,
    store: String,
    groups: String,
    _kept: (Swtpm, LabDir, LabDir),
}

impl Fresh {
    fn new() -> Self {
        let tpm = Swtpm::start().unwrap();
        let hsm = SoftHsm::start().unwrap();
        let pg = Postgres::start().unwrap();
        let dir = LabDir::new("cluster").unwrap();
        let store = pg.zeroth_store(&dir, "zeroth").unwrap().toml();
        let (trust, groups) = groups(&tpm);
        Self {
            hsm,
            pg,
            store,
            groups,
            _kept: (tpm, dir, trust),
        }
    }
}

/// How many private or secret key objects carry each zeroth label.
fn keys_per_label(hsm: &SoftHsm) -> BTreeMap<String, usize> {
    let out = Command::new(env!("CARGO_BIN_EXE_zeroth"))
        .env("SOFTHSM2_CONF", hsm.conf())
        .args(["hsm", "status", "--json"])
        .args(hsm.zeroth_args())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut counts = BTreeMap::new();
    for k in v["keys"].as_array().unwrap() {
        *counts
            .entry(k["name"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    counts
}

/// The number of rows in the store's `table`.
fn rows(pg: &Postgres, table: &str) -> String {
    pg.run_sql(&format!("\\c zeroth\nSELECT count(*) FROM {table}"))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn three_servers_started_together_on_a_fresh_token_make_each_key_once() {
    let f = Fresh::new();
    let (hsm, pg, store, groups) = (&f.hsm, &f.pg, f.store.as_str(), f.groups.as_str());
    let exe = Path::new(env!("CARGO_BIN_EXE_zeroth"));
    let mut servers: Vec<ZerothServer> = std::thread::scope(|s| {
        let starting: Vec<_> = (0..3)
            .map(|_| s.spawn(|| ZerothServer::start_configured(exe, hsm, store, groups, &[])))
            .collect();
        starting
            .into_iter()
            .map(|t| t.join().unwrap().unwrap())
            .collect()
    });
    let counts = keys_per_label(hsm);
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "keys made more than once: {twice:?}");
    for k in [
        "x509-ca",
        "jwt-signing",
        "audit-checkpoint",
        "store-kek",
        "tls-server",
    ] {
        assert_eq!(counts.get(k), Some(&1), "{k} in {counts:?}");
    }
    // One CA: each server's TLS certificate verifies against each bundle.
    let bundle = std::fs::read(servers[0].bundle()).unwrap();
    for s in &servers {
        assert_eq!(std::fs::read(s.bundle()).unwrap(), bundle);
        let client = zeroth::agent::enrol::client(&servers[0].bundle()).unwrap();
        let status = client
            .get(format!("{}/readyz", s.url()))
            .send()
            .unwrap()
            .status();
        assert!(status.is_success(), "{status}");
    }
    // One audit chain, checkpointed by one key, before and after restarts.
    audit_verifies(&servers[0], hsm);
    for s in &mut servers {
        s.restart().unwrap();
    }
    audit_verifies(&servers[2], hsm);
    assert_eq!(rows(pg, "trust"), "1");
}

#[test]
fn a_server_with_another_token_or_trust_domain_is_refused_before_it_writes() {
    let f = Fresh::new();
    let (hsm, pg, store, groups) = (&f.hsm, &f.pg, f.store.as_str(), f.groups.as_str());
    let exe = Path::new(env!("CARGO_BIN_EXE_zeroth"));
    let first = ZerothServer::start_configured(exe, hsm, store, groups, &[]).unwrap();
    let audit_before = rows(pg, "audit");

    // Another token, with the same label and its own keys.
    let other = SoftHsm::start().unwrap();
    let refused = ZerothServer::start_configured(exe, &other, store, groups, &[])
        .expect_err("a server with another token must not start")
        .to_string();
    assert!(
        refused.contains("this store was made with another HSM token")
            && refused.contains("it has no key x509-ca"),
        "{refused}"
    );
    assert_eq!(counts_of(&other), 0, "the refused server made no key");

    // The same token but another trust domain.
    let refused = ZerothServer::start_in_domain(exe, hsm, "elsewhere.test", store, groups)
        .expect_err("a server of another trust domain must not start")
        .to_string();
    assert!(
        refused.contains("trust domain \"lab.zeroth\"")
            && refused.contains("trust_domain = \"elsewhere.test\""),
        "{refused}"
    );

    // Nothing was written by either; the first server still serves, and
    // the chain it keeps verifies.
    assert_eq!(rows(pg, "audit"), audit_before);
    assert_eq!(rows(pg, "trust"), "1");
    let client = zeroth::agent::enrol::client(&first.bundle()).unwrap();
    let status = client
        .get(format!("{}/readyz", first.url()))
        .send()
        .unwrap()
        .status();
    assert!(status.is_success(), "{status}");
    audit_verifies(&first, hsm);
}

fn counts_of(hsm: &SoftHsm) -> usize {
    keys_per_label(hsm).values().sum()
}
