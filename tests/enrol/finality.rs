//! A revoked node stays revoked, and a node enrols only in its own group:
//! the decisions are made in the transaction that records the node.

use std::path::Path;

use zeroth::agent::enrol::{client, post_json, Enrolment};
use zeroth::agent::{enrol, EnrolOptions, Outcome};
use zeroth::lab::{LabDir, SoftHsm, Swtpm, ZerothServer};
use zeroth::wire::enrol::{BeginResponse, FinishResponse};

use super::{bench, group, options, refusal, zeroth_node};

fn node_state(server: &ZerothServer, id: &str) -> String {
    let (ok, out) = zeroth_node(server, &["show", id, "--json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["node"]["state"].as_str().unwrap().to_owned()
}

#[test]
fn a_node_revoked_between_begin_and_finish_stays_revoked() {
    let b = bench("auto_approve = true");
    let Outcome::Approved { node_id, .. } = enrol(&b.options()).unwrap() else {
        panic!("not approved");
    };
    let http = client(&b.server.bundle()).unwrap();
    let url = |p: &str| format!("{}/v1/enroll/{p}", b.server.url());
    let e = Enrolment::open(&b.tpm.tcti(), b.agent_dir.path()).unwrap();
    let begin: BeginResponse = post_json(&http, &url("begin"), &e.begin_request("edge").unwrap())
        .expect("an approved node begins");

    let finish = e.finish_request(&begin).unwrap();
    drop(e); // the TPM holds only a few loaded objects at a time
    let (ok, out) = zeroth_node(&b.server, &["revoke", &node_id]);
    assert!(ok, "{out}");
    let (status, reason) =
        refusal(post_json::<_, FinishResponse>(&http, &url("finish"), &finish).unwrap_err());
    assert_eq!(status, 403, "{reason}");
    assert!(reason.contains("was revoked"), "{reason}");
    assert_eq!(node_state(&b.server, &node_id), "revoked");

    // Approval cannot undo a revocation; only an explicit re-admission can,
    // and then the node's next enrolment follows its group again.
    let (ok, out) = zeroth_node(&b.server, &["approve", &node_id]);
    assert!(!ok && out.contains("re-admit it first"), "{out}");
    let (status, _) = refusal(enrol(&b.options()).unwrap_err());
    assert_eq!(status, 403);
    let (ok, out) = zeroth_node(&b.server, &["readmit", &node_id]);
    assert!(ok, "{out}");
    assert_eq!(node_state(&b.server, &node_id), "pending");
    let Outcome::Approved { node_id: again, .. } = enrol(&b.options()).unwrap() else {
        panic!("a re-admitted node in an auto-approve group is approved");
    };
    assert_eq!(again, node_id);
    let (ok, out) = zeroth_node(&b.server, &["readmit", &node_id]);
    assert!(!ok && out.contains("not revoked"), "{out}");
}

struct TwoGroups {
    tpm: Swtpm,
    _hsm: SoftHsm,
    server: ZerothServer,
    agent_dir: LabDir,
    _roots: LabDir,
}

impl TwoGroups {
    fn options(&self, group: &str) -> EnrolOptions {
        EnrolOptions {
            group: group.into(),
            ..options(&self.server, &self.tpm, &self.agent_dir)
        }
    }
}

/// "strict" needs an operator and PCR 10 at zero; "lax" approves anything
/// its roots trust. Both trust the same TPM manufacturer.
fn two_groups() -> TwoGroups {
    let tpm = Swtpm::start().unwrap();
    let hsm = SoftHsm::start().unwrap();
    let roots = LabDir::new("roots").unwrap();
    let zero = "0".repeat(64);
    let config = format!(
        "{}{}",
        group(
            "strict",
            &tpm,
            &roots,
            &format!(
                "auto_approve = false\npcrs = [10]\npcr_policy = {{ \"sha256:10\" = \"{zero}\" }}"
            )
        ),
        group("lax", &tpm, &roots, "auto_approve = true"),
    );
    let server =
        ZerothServer::start(Path::new(env!("CARGO_BIN_EXE_zeroth")), &hsm, &config).unwrap();
    TwoGroups {
        tpm,
        _hsm: hsm,
        server,
        agent_dir: LabDir::new("agent").unwrap(),
        _roots: roots,
    }
}

#[test]
fn a_node_cannot_enrol_through_a_laxer_group_than_its_own() {
    let g = two_groups();
    let Outcome::Pending { node_id } = enrol(&g.options("strict")).unwrap() else {
        panic!("strict needs an operator");
    };
    // Naming the auto-approve group does not approve the pending node.
    let (status, reason) = refusal(enrol(&g.options("lax")).unwrap_err());
    assert_eq!(status, 403, "{reason}");
    assert!(
        reason.contains(&format!("node {node_id} of group \"strict\"")),
        "{reason}"
    );
    assert_eq!(node_state(&g.server, &node_id), "pending");

    // Approved, then drifted: refused in its group, and still refused
    // through the group that has no PCR policy.
    let (ok, out) = zeroth_node(&g.server, &["approve", &node_id]);
    assert!(ok, "{out}");
    assert!(matches!(
        enrol(&g.options("strict")).unwrap(),
        Outcome::Approved { .. }
    ));
    super::extend_pcr(&g.tpm, 10, &[0xab; 32]);
    let (status, reason) = refusal(enrol(&g.options("strict")).unwrap_err());
    assert_eq!(status, 403);
    assert!(reason.contains("PCR sha256:10"), "{reason}");
    let (status, reason) = refusal(enrol(&g.options("lax")).unwrap_err());
    assert_eq!(status, 403);
    assert!(reason.contains("enrols only in its own group"), "{reason}");
}

#[test]
fn a_challenge_begun_in_another_group_cannot_finish_once_the_node_exists() {
    let g = two_groups();
    let http = client(&g.server.bundle()).unwrap();
    let url = |p: &str| format!("{}/v1/enroll/{p}", g.server.url());
    let e = Enrolment::open(&g.tpm.tcti(), g.agent_dir.path()).unwrap();
    // A new TPM begins in "lax"; before it finishes, it enrols in "strict".
    let lax: BeginResponse = post_json(&http, &url("begin"), &e.begin_request("lax").unwrap())
        .expect("a new TPM may begin in any group that trusts it");
    let finish = e.finish_request(&lax).unwrap();
    drop(e); // the TPM holds only a few loaded objects at a time
    let Outcome::Pending { node_id } = enrol(&g.options("strict")).unwrap() else {
        panic!("strict needs an operator");
    };
    let (status, reason) =
        refusal(post_json::<_, FinishResponse>(&http, &url("finish"), &finish).unwrap_err());
    assert_eq!(status, 403, "{reason}");
    assert!(reason.contains("of group \"strict\""), "{reason}");
    assert_eq!(node_state(&g.server, &node_id), "pending");
}

#[test]
fn enrolment_begins_are_metered_per_address_and_per_tpm_with_retry_after() {
    let b = super::bench("auto_approve = true");
    let http = client(&b.server.bundle()).unwrap();
    let url = format!("{}/v1/enroll/begin", b.server.url());
    let e = Enrolment::open(&b.tpm.tcti(), b.agent_dir.path()).unwrap();
    let request = e.begin_request("edge").unwrap();
    drop(e);
    // One TPM may hold three challenges open at once.
    for _ in 0..3 {
        let _: BeginResponse = post_json(&http, &url, &request).unwrap();
    }
    let resp = http.post(&url).json(&request).send().unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let v: serde_json::Value = resp.json().unwrap();
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("holds 3 open challenges"),
        "{v}"
    );
    // One address may make 20 begins at once (10 a second), malformed or
    // not; then it waits, and is told for how long.
    let statuses: Vec<u16> = (0..30)
        .map(|_| {
            http.post(&url)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .unwrap()
                .status()
                .as_u16()
        })
        .collect();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(limited >= 10, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| [400, 429].contains(s)),
        "{statuses:?}"
    );
    let resp = http.post(&url).json(&request).send().unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
}
