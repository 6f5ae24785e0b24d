//! Registration entries on the server: operators create, list and delete
//! them (`zeroth entry`); a node's agent reads only the entries meant for
//! it and gets X.509-SVIDs (for keys it made, proven by a CSR) and
//! JWT-SVIDs naming an entry's SPIFFE ID; a revoked node gets nothing.

use std::path::Path;

use zeroth::agent::enrol::{post_json, Enrolment};
use zeroth::agent::{enrol, Outcome};
use zeroth::lab::{LabDir, SoftHsm, Swtpm, ZerothServer};
use zeroth::wire::entry::{EntriesResponse, WorkloadSvidResponse};
use zeroth::wire::jwt::JwtResponse;

use super::{group, options, refusal, run_zeroth, zeroth_audit, zeroth_node};

fn zeroth_entry(server: &ZerothServer, args: &[&str]) -> (bool, String) {
    run_zeroth(
        std::process::Command::new(env!("CARGO_BIN_EXE_zeroth"))
            .arg("entry")
            .args(args)
            .arg("--socket")
            .arg(server.admin_socket()),
    )
}

fn created_id(out: &str) -> String {
    out.strip_prefix("created ")
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no entry id in {out}"))
        .to_owned()
}

fn csr_for(key: &rcgen::KeyPair) -> String {
    use base64::Engine;
    let der = rcgen::CertificateParams::new(vec!["asked-for.example".to_owned()])
        .unwrap()
        .serialize_request(key)
        .unwrap();
    base64::engine::general_purpose::STANDARD.encode(der.der())
}

#[test]
fn entries_give_programs_their_own_svids_and_only_on_their_node() {
    let tpm = Swtpm::start().unwrap();
    let hsm = SoftHsm::start().unwrap();
    let roots = LabDir::new("roots").unwrap();
    let groups = format!(
        "{}{}",
        group("edge", &tpm, &roots, "auto_approve = true"),
        group("far", &tpm, &roots, "auto_approve = true")
    );
    let server =
        ZerothServer::start(Path::new(env!("CARGO_BIN_EXE_zeroth")), &hsm, &groups).unwrap();
    let agent = LabDir::new("agent").unwrap();
    let opts = options(&server, &tpm, &agent);
    let Outcome::Approved {
        node_id, svid_pem, ..
    } = enrol(&opts).unwrap()
    else {
        panic!("not approved");
    };

    // What operators are told when an entry makes no sense.
    for (args, says) in [
        (
            vec![
                "--spiffe-id",
                "spiffe://lab.zeroth/node/x",
                "--group",
                "edge",
                "--selector",
                "unix:uid:0",
            ],
            "name machines",
        ),
        (
            vec![
                "--spiffe-id",
                "spiffe://elsewhere/app",
                "--group",
                "edge",
                "--selector",
                "unix:uid:0",
            ],
            "trust domain",
        ),
        (
            vec![
                "--spiffe-id",
                "spiffe://lab.zeroth/app",
                "--group",
                "nowhere",
                "--selector",
                "unix:uid:0",
            ],
            "no node group",
        ),
        (
            vec![
                "--spiffe-id",
                "spiffe://lab.zeroth/app",
                "--node",
                "0000",
                "--selector",
                "unix:uid:0",
            ],
            "no node 0000",
        ),
        (
            vec![
                "--spiffe-id",
                "spiffe://lab.zeroth/app",
                "--group",
                "edge",
                "--selector",
                "uid:0",
            ],
            "TYPE:KEY:VALUE",
        ),
        (
            vec![
                "--spiffe-id",
                "spiffe://lab.zeroth/app",
                "--group",
                "edge",
                "--selector",
                "unix:uid:0",
                "--role",
                "nope",
            ],
            "no database or SSH role",
        ),
        // A path or a hash names a file, not the process: alone (or with
        // a group id only) it is no boundary.
        (
            vec![
                "--spiffe-id",
                "spiffe://lab.zeroth/app/by-path",
                "--group",
                "edge",
                "--selector",
                "unix:path:/usr/bin/python3",
            ],
            "Add unix:uid:N or systemd:unit:NAME",
        ),
        (
            vec![
                "--spiffe-id",
                "spiffe://lab.zeroth/app/by-hash",
                "--group",
                "edge",
                "--selector",
                "unix:gid:0",
                "--selector",
                "unix:sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            ],
            "exec another",
        ),
    ] {
        let mut full = vec!["create"];
        full.extend(args);
        let (ok, out) = zeroth_entry(&server, &full);
        assert!(!ok && out.contains(says), "{full:?}: {out}");
    }

    let (ok, out) = zeroth_entry(
        &server,
        &[
            "create",
            "--spiffe-id",
            "spiffe://lab.zeroth/app/shop",
            "--node",
            &node_id,
            "--selector",
            "systemd:unit:shop.service",
            "--selector",
            "unix:uid:1001",
            "--dns-name",
            "shop.internal",
            "--ttl",
            "10m",
        ],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("spiffe://lab.zeroth/app/shop on node ")
            && out.contains("unix:uid:1001 + systemd:unit:shop.service"),
        "{out}"
    );
    let shop = created_id(&out);
    let (ok, out) = zeroth_entry(
        &server,
        &[
            "create",
            "--spiffe-id",
            "spiffe://lab.zeroth/app/metrics",
            "--group",
            "edge",
            "--selector",
            "unix:uid:65534",
        ],
    );
    assert!(ok, "{out}");
    let metrics = created_id(&out);
    let (ok, out) = zeroth_entry(
        &server,
        &[
            "create",
            "--spiffe-id",
            "spiffe://lab.zeroth/app/far",
            "--group",
            "far",
            "--selector",
            "unix:uid:0",
        ],
    );
    assert!(ok, "{out}");
    let far = created_id(&out);
    let (ok, out) = zeroth_entry(
        &server,
        &[
            "create",
            "--spiffe-id",
            "spiffe://lab.zeroth/app/far",
            "--group",
            "far",
            "--selector",
            "unix:uid:0",
        ],
    );
    assert!(!ok && out.contains("exists already"), "{out}");

    // The node reads its own entry and its group's, never another group's.
    let e = Enrolment::open(&tpm.tcti(), agent.path()).unwrap();
    let http = e.mtls_client(&server.bundle(), &svid_pem).unwrap();
    let list = |http: &reqwest::blocking::Client| -> EntriesResponse {
        let r = http
            .get(format!("{}/v1/entries", server.url()))
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{:?}", r.text());
        r.json().unwrap()
    };
    let seen = list(&http);
    let ids: Vec<&str> = seen.entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [shop.as_str(), metrics.as_str()]);
    assert_eq!(
        list(&http).revision,
        seen.revision,
        "the revision is stable"
    );

    // An SVID for a key made here: the entry decides its names, not the CSR.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let url = format!("{}/v1/workload/x509", server.url());
    let svid: WorkloadSvidResponse = post_json(
        &http,
        &url,
        &serde_json::json!({"entry_id": shop, "csr": csr_for(&key)}),
    )
    .unwrap();
    assert_eq!(svid.spiffe_id, "spiffe://lab.zeroth/app/shop");
    {
        use x509_parser::prelude::*;
        let (_, pem) = parse_x509_pem(svid.svid.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "URI(spiffe://lab.zeroth/app/shop)",
                "DNSName(shop.internal)"
            ]
        );
        let lifetime =
            cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(lifetime, 600 + 60, "ten minutes, backdated one");
        let (_, ca) = parse_x509_pem(svid.bundle.as_bytes()).unwrap();
        let ca = ca.parse_x509().unwrap();
        cert.verify_signature(Some(ca.public_key())).unwrap();
    }

    // Another group's entry, a malformed CSR: refused with the reason.
    let (status, reason) = refusal(
        post_json::<_, WorkloadSvidResponse>(
            &http,
            &url,
            &serde_json::json!({"entry_id": far, "csr": csr_for(&key)}),
        )
        .unwrap_err(),
    );
    assert_eq!(status, 404, "{reason}");
    let (status, reason) = refusal(
        post_json::<_, WorkloadSvidResponse>(
            &http,
            &url,
            &serde_json::json!({"entry_id": shop, "csr": "AAAA"}),
        )
        .unwrap_err(),
    );
    assert_eq!(status, 400);
    assert!(
        reason.contains("`csr`: the CSR is not DER PKCS#10"),
        "{reason}"
    );

    let jwt: JwtResponse = post_json(
        &http,
        &format!("{}/v1/workload/jwt", server.url()),
        &serde_json::json!({"entry_id": metrics, "audience": ["payments"]}),
    )
    .unwrap();
    assert_eq!(jwt.spiffe_id, "spiffe://lab.zeroth/app/metrics");

    // Deleting an entry removes it from what the node reads.
    let (ok, out) = zeroth_entry(&server, &["delete", &metrics]);
    assert!(ok && out.starts_with("deleted "), "{out}");
    let after = list(&http);
    assert_ne!(after.revision, seen.revision);
    assert_eq!(after.entries.len(), 1);
    let (ok, out) = zeroth_entry(&server, &["list"]);
    assert!(ok, "{out}");
    assert_eq!(out.lines().count(), 2, "{out}");

    // A revoked node gets no workload identity.
    let (ok, out) = zeroth_node(&server, &["revoke", &node_id]);
    assert!(ok, "{out}");
    let (status, reason) = refusal(
        post_json::<_, WorkloadSvidResponse>(
            &http,
            &url,
            &serde_json::json!({"entry_id": shop, "csr": csr_for(&key)}),
        )
        .unwrap_err(),
    );
    assert_eq!(status, 403);
    assert!(reason.contains("not approved"), "{reason}");

    let (ok, out) = zeroth_audit(&server, hsm.conf(), &["tail", "--json"]);
    assert!(ok, "{out}");
    let kinds: Vec<String> = serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    for kind in [
        "entry.created",
        "workload.svid.issued",
        "workload.jwt.issued",
        "entry.deleted",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "{kind} missing from {kinds:?}"
        );
    }
}
