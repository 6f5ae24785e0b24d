//! Upgrades: a state directory written by the previous release (kept in
//! `tests/fixtures/previous-release`, made as its README says) opens with
//! this binary. Its store is migrated forward in one transaction, every
//! node, lease, token chain, SSH CA record and audit event is still there,
//! the audit chain verifies with the token's key, and a server runs on it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use zeroth::lab::groups::{self, PG_READ_ONLY_ROLE};
use zeroth::lab::{LabDir, SoftHsm, Swtpm, ZerothServer};
use zeroth::store::{leases, nodes, Store, LATEST_SCHEMA};
use zeroth_hsm::{KeyName, KeyStore, Pkcs11KeyStore};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/previous-release")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn rows(v: &Value) -> Vec<Vec<Value>> {
    serde_json::from_value(v.clone()).unwrap()
}

/// The store as this binary opens it: migrated, and holding exactly what
/// the previous release wrote.
#[test]
fn the_previous_releases_store_is_migrated_with_everything_in_it() {
    let want = expected();
    assert!(
        want["schema"].as_i64().unwrap() < LATEST_SCHEMA,
        "the fixture should predate this schema: {want}"
    );
    let dir = LabDir::new("upgrade").unwrap();
    let db = dir.join("zeroth.db");
    std::fs::copy(fixture().join("zeroth.db"), &db).unwrap();
    let store = Store::open(&db).unwrap();
    assert_eq!(store.schema_version().unwrap(), LATEST_SCHEMA);
    let conn = store.lock();

    let mut found: Vec<(String, String)> = nodes::nodes(&conn)
        .unwrap()
        .into_iter()
        .map(|n| (n.id, n.state.as_str().to_owned()))
        .collect();
    found.sort();
    let want_nodes: Vec<(String, String)> = rows(&want["nodes"])
        .into_iter()
        .map(|r| (r[0].as_str().unwrap().into(), r[1].as_str().unwrap().into()))
        .collect();
    assert_eq!(found, want_nodes);

    for r in rows(&want["leases"]) {
        let id = r[0].as_str().unwrap();
        let lease = leases::get(&conn, id)
            .unwrap()
            .expect("a lease of the fixture");
        assert_eq!(lease.state.as_str(), r[1].as_str().unwrap(), "{id}");
        assert_eq!(lease.expires, r[2].as_i64().unwrap(), "{id}");
    }
    for r in rows(&want["token_chains"]) {
        let chain = zeroth::store::tokens::chain(&conn, r[0].as_str().unwrap())
            .unwrap()
            .expect("a token chain of the fixture");
        assert_eq!(chain.revoked, r[1] == "revoked");
    }
    for kind in ["user", "host"] {
        let cas = zeroth::store::ssh_cas::list(&conn, kind).unwrap();
        for r in rows(&want["ssh_cas"]).iter().filter(|r| r[1] == kind) {
            assert!(
                cas.iter()
                    .any(|c| c.key_name == r[0].as_str().unwrap()
                        && c.state == r[2].as_str().unwrap()),
                "{r:?} not in {cas:?}"
            );
        }
    }

    // The chain, every event of it, verified with the token's key.
    let hsm = SoftHsm::from_saved(&fixture().join("hsm")).unwrap();
    hsm.export_conf();
    let keys = Pkcs11KeyStore::open(&hsm.pkcs11_config()).unwrap();
    let key = keys
        .public_key(&KeyName::new(zeroth::audit::CHECKPOINT_KEY).unwrap())
        .unwrap();
    let report = zeroth::audit::verify(&conn, &key).unwrap();
    assert_eq!(report.events as i64, want["audit"][0].as_i64().unwrap());
    assert_eq!(
        report.checkpoints as i64,
        want["checkpoints"].as_i64().unwrap()
    );
    let head: Vec<u8> = conn
        .query_row(
            "SELECT hash FROM audit ORDER BY seq DESC LIMIT 1",
            (),
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(hex::encode(head), want["audit_head"].as_str().unwrap());
}

/// A server of this version starts on the previous release's state
/// directory and token, and answers for what it holds.
#[test]
fn a_server_of_this_version_runs_on_the_previous_releases_state() {
    let want = expected();
    let hsm = SoftHsm::from_saved(&fixture().join("hsm")).unwrap();
    let tpm = Swtpm::start().unwrap();
    let (_trust, group) = groups::trusting("edge", &[&tpm], false).unwrap();
    let groups = format!("{group}{PG_READ_ONLY_ROLE}");
    let exe = Path::new(env!("CARGO_BIN_EXE_zeroth"));
    let mut server =
        ZerothServer::start_on_store(exe, &hsm, &groups, &fixture().join("zeroth.db")).unwrap();
    assert!(
        server.log().contains("applied database migration"),
        "{}",
        server.log()
    );
    let (ok, out) = server.cli(&["node", "list", "--json"], "").unwrap();
    assert!(ok, "{out}");
    for r in rows(&want["nodes"]) {
        assert!(out.contains(r[0].as_str().unwrap()), "{out}");
    }
    let (ok, out) = server.cli(&["lease", "list", "--json"], "").unwrap();
    assert!(ok, "{out}");
    for r in rows(&want["leases"]).iter().filter(|r| r[1] != "revoked") {
        assert!(out.contains(r[0].as_str().unwrap()), "{out}");
    }
    server.stop();
    let verified = Command::new(exe)
        .args(["audit", "verify", "--config"])
        .arg(server.config())
        .env("SOFTHSM2_CONF", hsm.conf())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verified.stdout);
    assert!(
        verified.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(said.contains("audit chain intact"), "{said}");
}
