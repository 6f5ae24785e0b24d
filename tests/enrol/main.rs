//! TPM enrolment end to end: a real `zeroth server` (HSM: SoftHSM), the agent
//! driving a real swtpm, and the lab CA as the TPM manufacturer.

use secrecy::ExposeSecret;
use std::path::Path;

mod entries;
mod event_log_policy;
mod finality;
mod impostors;
mod renewal;
mod token_agent;
mod workload_api;

use zeroth::agent::enrol::{client, post_json, Enrolment};
use zeroth::agent::{enrol, EnrolOptions, Outcome};
use zeroth::lab::{LabDir, SoftHsm, Swtpm, ZerothServer};
use zeroth::wire::enrol::{BeginResponse, FinishResponse};

/// A group trusting the EK certificates of `tpm`'s manufacturer (the lab CA).
fn group(name: &str, tpm: &Swtpm, roots: &LabDir, extra: &str) -> String {
    std::fs::copy(tpm.ca_root_pem(), roots.join("root.pem")).unwrap();
    format!(
        "[[group]]\nname = \"{name}\"\nek_roots = \"{}\"\nek_intermediates = \"{}\"\n{extra}\n",
        roots.path().display(),
        tpm.ca_intermediate_pem().display()
    )
}

pub struct Bench {
    tpm: Swtpm,
    _hsm: SoftHsm,
    server: ZerothServer,
    agent_dir: LabDir,
    _roots: LabDir,
}

fn bench(extra: &str) -> Bench {
    let tpm = Swtpm::start().unwrap();
    let hsm = SoftHsm::start().unwrap();
    let roots = LabDir::new("roots").unwrap();
    let server = ZerothServer::start(
        Path::new(env!("CARGO_BIN_EXE_zeroth")),
        &hsm,
        &group("edge", &tpm, &roots, extra),
    )
    .unwrap();
    Bench {
        tpm,
        _hsm: hsm,
        server,
        agent_dir: LabDir::new("agent").unwrap(),
        _roots: roots,
    }
}

/// How an agent with its state in `agent` enrols `tpm` at `server`.
fn options(server: &ZerothServer, tpm: &Swtpm, agent: &LabDir) -> EnrolOptions {
    EnrolOptions {
        server: server.url().to_owned(),
        ca_bundle: server.bundle(),
        group: "edge".into(),
        tcti: tpm.tcti(),
        state_dir: agent.path().to_owned(),
        event_log: None,
    }
}

impl Bench {
    fn options(&self) -> EnrolOptions {
        options(&self.server, &self.tpm, &self.agent_dir)
    }
}

fn refusal(err: zeroth::agent::enrol::AgentError) -> (u16, String) {
    match err {
        zeroth::agent::enrol::AgentError::Refused { status, reason } => (status, reason),
        other => panic!("expected a refusal, got {other}"),
    }
}

#[test]
fn an_approved_node_gets_an_svid_for_its_tpm_key() {
    let b = bench("auto_approve = true");
    let Outcome::Approved {
        node_id,
        spiffe_id,
        svid_pem,
    } = enrol(&b.options()).unwrap()
    else {
        panic!("not approved:\n{}", b.server.log());
    };
    assert_eq!(spiffe_id, format!("spiffe://lab.zeroth/node/{node_id}"));

    use x509_parser::prelude::*;
    let (_, pem) = parse_x509_pem(svid_pem.as_bytes()).unwrap();
    let svid = pem.parse_x509().unwrap();
    let bundle = std::fs::read(b.server.bundle()).unwrap();
    let (_, ca_pem) = parse_x509_pem(&bundle).unwrap();
    let ca = ca_pem.parse_x509().unwrap();
    svid.verify_signature(Some(ca.public_key())).unwrap();
    let uris: Vec<String> = svid
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .filter_map(|g| match g {
            GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(uris, vec![spiffe_id.clone()]);
    // The certified key is the TPM-resident identity key.
    let key = zeroth_attest::verify::public::Public::from_tpm2b(
        &std::fs::read(b.agent_dir.join("key.pub")).unwrap(),
    )
    .unwrap();
    let zeroth_attest::verify::public::KeyMaterial::Ecc { x, y, .. } = key.key else {
        panic!("an ECC key");
    };
    assert_eq!(
        svid.public_key().subject_public_key.data.as_ref(),
        [&[4u8][..], &x, &y].concat().as_slice()
    );
    // Only public and TPM-wrapped material on disk.
    let mut files: Vec<String> = std::fs::read_dir(b.agent_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "ak.priv",
            "ak.pub",
            "bundle.pem",
            "key.priv",
            "key.pub",
            "svid.pem"
        ]
    );

    // Enrolling again re-attests the same node.
    let Outcome::Approved { node_id: again, .. } = enrol(&b.options()).unwrap() else {
        panic!("re-attestation not approved");
    };
    assert_eq!(again, node_id);

    // Operators see it in the metrics.
    let metrics = client(&b.server.bundle())
        .unwrap()
        .get(format!("{}/metrics", b.server.url()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for line in [
        "zeroth_enrolments_total{outcome=\"approved\"} 2",
        "zeroth_svids_issued_total{for=\"node\"} 2",
        "zeroth_nodes{state=\"approved\"} 1",
        "zeroth_nodes{state=\"pending\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in:\n{metrics}"
        );
    }
}

#[test]
fn without_auto_approval_a_node_waits_for_an_operator() {
    let b = bench("auto_approve = false");
    let outcome = enrol(&b.options()).unwrap();
    assert!(matches!(outcome, Outcome::Pending { .. }), "{outcome:?}");
    assert!(!b.agent_dir.join("svid.pem").exists());
}

#[test]
fn a_tpm_from_an_untrusted_manufacturer_is_rejected_with_the_reason() {
    let tpm = Swtpm::start().unwrap();
    let other = Swtpm::start().unwrap();
    let hsm = SoftHsm::start().unwrap();
    let roots = LabDir::new("roots").unwrap();
    // The group trusts the other lab's CA: same names, different keys.
    let server = ZerothServer::start(
        Path::new(env!("CARGO_BIN_EXE_zeroth")),
        &hsm,
        &group("edge", &other, &roots, "auto_approve = true"),
    )
    .unwrap();
    let agent = LabDir::new("agent").unwrap();
    let err = enrol(&options(&server, &tpm, &agent)).unwrap_err();
    let (status, reason) = refusal(err);
    assert_eq!(status, 403);
    assert!(
        reason.contains("no trusted root or intermediate signed"),
        "{reason}"
    );
}

#[test]
fn replayed_or_forged_finishes_are_refused() {
    let b = bench("auto_approve = true");
    let http = client(&b.server.bundle()).unwrap();
    let begin_url = format!("{}/v1/enroll/begin", b.server.url());
    let finish_url = format!("{}/v1/enroll/finish", b.server.url());
    let e = Enrolment::open(&b.tpm.tcti(), b.agent_dir.path()).unwrap();

    // A wrong activation secret: the AK is not beside the EK.
    let begin: BeginResponse =
        post_json(&http, &begin_url, &e.begin_request("edge").unwrap()).unwrap();
    let mut forged = e.finish_request(&begin).unwrap();
    forged.secret = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
    let (status, reason) =
        refusal(post_json::<_, FinishResponse>(&http, &finish_url, &forged).unwrap_err());
    assert_eq!(status, 403);
    assert!(reason.contains("wrong activation secret"), "{reason}");

    // A quote with one byte flipped.
    let begin: BeginResponse =
        post_json(&http, &begin_url, &e.begin_request("edge").unwrap()).unwrap();
    let mut forged = e.finish_request(&begin).unwrap();
    forged.quote_attest = flip_b64(&forged.quote_attest);
    let (status, reason) =
        refusal(post_json::<_, FinishResponse>(&http, &finish_url, &forged).unwrap_err());
    assert_eq!(status, 403);
    assert!(
        reason.contains("quote: the signature does not verify"),
        "{reason}"
    );

    // A genuine finish works once; its replay is refused.
    let begin: BeginResponse =
        post_json(&http, &begin_url, &e.begin_request("edge").unwrap()).unwrap();
    let finish = e.finish_request(&begin).unwrap();
    let done: FinishResponse = post_json(&http, &finish_url, &finish).unwrap();
    assert!(done.svid.is_some());
    let (status, reason) =
        refusal(post_json::<_, FinishResponse>(&http, &finish_url, &finish).unwrap_err());
    assert_eq!(status, 409);
    assert!(reason.contains("already used"), "{reason}");
}

fn flip_b64(s: &str) -> String {
    use base64::Engine;
    let e = base64::engine::general_purpose::STANDARD;
    let mut b = e.decode(s).unwrap();
    let last = b.len() - 1;
    b[last] ^= 1;
    e.encode(b)
}

#[test]
fn the_same_tpm_with_another_ak_is_refused() {
    let b = bench("auto_approve = true");
    assert!(matches!(
        enrol(&b.options()).unwrap(),
        Outcome::Approved { .. }
    ));
    // The agent loses its AK and makes a new one in the same TPM.
    std::fs::remove_file(b.agent_dir.join("ak.pub")).unwrap();
    std::fs::remove_file(b.agent_dir.join("ak.priv")).unwrap();
    let (status, reason) = refusal(enrol(&b.options()).unwrap_err());
    assert_eq!(status, 403);
    assert!(reason.contains("with another AK"), "{reason}");
}

#[test]
fn pcr_drift_after_enrolment_fails_the_policy() {
    let zero = "0".repeat(64);
    let b = bench(&format!(
        "auto_approve = true\npcrs = [0, 10]\npcr_policy = {{ \"sha256:10\" = \"{zero}\" }}"
    ));
    assert!(matches!(
        enrol(&b.options()).unwrap(),
        Outcome::Approved { .. }
    ));
    extend_pcr(&b.tpm, 10, &[0xab; 32]);
    let (status, reason) = refusal(enrol(&b.options()).unwrap_err());
    assert_eq!(status, 403);
    assert!(reason.contains("PCR sha256:10"), "{reason}");
}

#[test]
fn malformed_requests_are_answered_400_naming_the_field() {
    let b = bench("auto_approve = true");
    let http = client(&b.server.bundle()).unwrap();
    let url = format!("{}/v1/enroll/begin", b.server.url());
    let cases = [
        (r#"{"group":"edge"}"#, "missing field"),
        (
            r#"{"group":"edge","hostname":"h","ek_public":"!!","ak_public":"AAAA"}"#,
            "`ek_public` is not base64",
        ),
        (
            r#"{"group":"edge","hostname":"h","ek_public":"AAAA","ak_public":"AAAA"}"#,
            "`ek_public`: malformed TPM2B_PUBLIC",
        ),
        (r#"not json"#, "expected"),
        (
            r#"{"group":"edge","hostname":"a\u001b[2J\nb","ek_public":"AAAA","ak_public":"AAAA"}"#,
            "`hostname` must be 1 to 253 letters",
        ),
    ];
    for (body, want) in cases {
        let resp = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{body}");
        let v: serde_json::Value = resp.json().unwrap();
        assert_eq!(v["error"], "bad_request");
        assert!(v["reason"].as_str().unwrap().contains(want), "{body}: {v}");
    }
    let nuls = format!(
        r#"{{"group":"edge","hostname":"{}","ek_public":"AAAA","ak_public":"AAAA"}}"#,
        "\\u0000".repeat(10_000)
    );
    let resp = http
        .post(&url)
        .header("content-type", "application/json")
        .body(nuls)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400, "a hostname of 10,000 NULs");
    let huge = format!(r#"{{"group":"{}"}}"#, "x".repeat(100_000));
    let resp = http
        .post(&url)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let resp = http.post(&url).body("{}").send().unwrap();
    assert_eq!(resp.status().as_u16(), 400, "no content type");
}

/// Runs `zeroth <args>`; (success, stdout + stderr).
fn run_zeroth(cmd: &mut std::process::Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn zeroth_audit(server: &ZerothServer, hsm_conf: &Path, args: &[&str]) -> (bool, String) {
    run_zeroth(
        std::process::Command::new(env!("CARGO_BIN_EXE_zeroth"))
            .arg("audit")
            .args(args)
            .arg("--config")
            .arg(server.config())
            .env("SOFTHSM2_CONF", hsm_conf),
    )
}

#[test]
fn every_decision_is_audited_and_tampering_is_detected() {
    let mut b = bench("auto_approve = true");
    let Outcome::Approved { node_id, .. } = enrol(&b.options()).unwrap() else {
        panic!("not approved");
    };
    // A refusal is audited too: the same TPM comes back with a new AK.
    std::fs::remove_file(b.agent_dir.join("ak.pub")).unwrap();
    assert!(enrol(&b.options()).is_err());
    b.server.stop();
    let conf = b._hsm.conf().to_owned();

    let (ok, out) = zeroth_audit(&b.server, &conf, &["tail", "--json"]);
    assert!(ok, "{out}");
    let events: serde_json::Value = serde_json::from_str(&out).unwrap();
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["node.enrolled", "svid.issued", "enrol.rejected"],
        "{out}"
    );
    assert_eq!(events[0]["subject"], format!("node/{node_id}"));

    let (ok, out) = zeroth_audit(&b.server, &conf, &["verify"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("audit chain intact: 3 events, 1 signed checkpoints, 0 events after"),
        "{out}"
    );

    let db = rusqlite::Connection::open(b.server.database()).unwrap();
    db.execute("UPDATE audit SET detail = '{}' WHERE seq = 2", [])
        .unwrap();
    let (ok, out) = zeroth_audit(&b.server, &conf, &["verify"]);
    assert!(!ok);
    assert!(
        out.contains("audit chain broken at event 2") && out.contains("edited"),
        "{out}"
    );
    // Tampering has an exit code of its own (3), apart from any failure (1).
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_zeroth"))
        .args(["audit", "verify", "--config"])
        .arg(b.server.config())
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap()
        .status;
    assert_eq!(status.code(), Some(3));
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_zeroth"))
        .args(["audit", "verify", "--config", "/nonexistent/server.toml"])
        .output()
        .unwrap()
        .status;
    assert_eq!(status.code(), Some(1));
}

fn zeroth_node(server: &ZerothServer, args: &[&str]) -> (bool, String) {
    run_zeroth(
        std::process::Command::new(env!("CARGO_BIN_EXE_zeroth"))
            .arg("node")
            .args(args)
            .arg("--socket")
            .arg(server.admin_socket()),
    )
}

#[test]
fn an_operator_approves_a_pending_node_and_later_revokes_it() {
    let b = bench("auto_approve = false");
    let Outcome::Pending { node_id } = enrol(&b.options()).unwrap() else {
        panic!("expected pending");
    };
    let (ok, out) = zeroth_node(&b.server, &["list", "--json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["nodes"][0]["id"], node_id.as_str());
    assert_eq!(v["nodes"][0]["state"], "pending");

    let (ok, out) = zeroth_node(&b.server, &["approve", &node_id]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("node {node_id} is now approved")),
        "{out}"
    );
    let Outcome::Approved { node_id: again, .. } = enrol(&b.options()).unwrap() else {
        panic!("approved node got no SVID");
    };
    assert_eq!(again, node_id);

    let (ok, out) = zeroth_node(&b.server, &["revoke", &node_id]);
    assert!(ok, "{out}");
    let (status, reason) = refusal(enrol(&b.options()).unwrap_err());
    assert_eq!(status, 403);
    assert!(reason.contains("revoked"), "{reason}");
    let (ok, out) = zeroth_node(&b.server, &["approve", &node_id]);
    assert!(!ok && out.contains("was revoked"), "{out}");
    let (ok, out) = zeroth_node(&b.server, &["show", "no-such-node"]);
    assert!(!ok && out.contains("no node no-such-node"), "{out}");
}

#[test]
fn the_admin_socket_refuses_callers_who_are_not_operators() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let b = bench("auto_approve = true");
    // Even with the socket opened to everyone, the kernel-reported uid decides.
    let socket = b.server.admin_socket();
    std::fs::set_permissions(
        socket.parent().unwrap(),
        std::fs::Permissions::from_mode(0o711),
    )
    .unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    // Run from where uid 65534 can reach it, whichever directory the build is in.
    let zeroth = zeroth::lab::RunnableCopy::of(Path::new(env!("CARGO_BIN_EXE_zeroth"))).unwrap();
    let out = std::process::Command::new(zeroth.path())
        .args(["node", "list", "--socket"])
        .arg(b.server.admin_socket())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("permission denied: uid 65534"), "{err}");
}

/// A local group and a user in it (supplementary membership), removed on drop.
struct Operator {
    user: String,
    group: String,
}

impl Operator {
    fn add() -> Self {
        let suffix = std::process::id();
        let (user, group) = (format!("zt-op{suffix}"), format!("zt-ops{suffix}"));
        let ok = |c: &mut std::process::Command| assert!(c.status().unwrap().success(), "{c:?}");
        ok(std::process::Command::new("groupadd").arg(&group));
        ok(std::process::Command::new("useradd").args(["-M", "-N", "-G", &group, &user]));
        Self { user, group }
    }

    fn uid(&self) -> u32 {
        let out = std::process::Command::new("id")
            .args(["-u", &self.user])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = std::process::Command::new("userdel")
            .arg(&self.user)
            .status();
        let _ = std::process::Command::new("groupdel")
            .arg(&self.group)
            .status();
    }
}

#[test]
fn a_member_of_the_admin_group_by_supplementary_membership_is_an_operator() {
    use std::os::unix::fs::PermissionsExt;
    let op = Operator::add();
    let tpm = Swtpm::start().unwrap();
    let hsm = SoftHsm::start().unwrap();
    let roots = LabDir::new("roots").unwrap();
    let server = ZerothServer::start_configured(
        Path::new(env!("CARGO_BIN_EXE_zeroth")),
        &hsm,
        &format!("admin_group = \"{}\"", op.group),
        &group("edge", &tpm, &roots, "auto_approve = true"),
        &[],
    )
    .unwrap();
    let socket = server.admin_socket();
    std::fs::set_permissions(
        socket.parent().unwrap(),
        std::fs::Permissions::from_mode(0o711),
    )
    .unwrap();
    let zeroth = zeroth::lab::RunnableCopy::of(Path::new(env!("CARGO_BIN_EXE_zeroth"))).unwrap();
    // The kernel reports the caller's uid and primary group only: the
    // server asks the system's group database for the rest.
    let out = std::process::Command::new("setpriv")
        .arg(format!("--reuid={}", op.uid()))
        .args(["--regid=65534", "--init-groups"])
        .arg(zeroth.path())
        .args(["node", "list", "--json", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["nodes"], serde_json::json!([]));
}

/// `zeroth token create` for group "edge": the first token of a new chain.
fn create_token(server: &ZerothServer) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zeroth"))
        .args([
            "token", "create", "--group", "edge", "--ttl", "10m", "--socket",
        ])
        .arg(server.admin_socket())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Extends `pcr` of `tpm` by `digest` (SHA-256 bank), as a boot chain would.
fn extend_pcr(tpm: &Swtpm, pcr: u32, digest: &[u8]) {
    let out = std::process::Command::new("tpm2_pcrextend")
        .arg(format!("{pcr}:sha256={}", hex::encode(digest)))
        .env("TPM2TOOLS_TCTI", tpm.tcti())
        .env("TSS2_LOG", "all+none")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rotating_tokens_work_once_and_a_replayed_one_revokes_its_chain() {
    use zeroth::wire::token::{ExchangeRequest, ExchangeResponse};
    let b = bench("auto_approve = true");
    let first = create_token(&b.server);
    assert!(first.starts_with("zt1."), "{first}");

    let key = p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let point = key
        .verifying_key()
        .to_encoded_point(false)
        .as_bytes()
        .to_vec();
    let http = client(&b.server.bundle()).unwrap();
    let url = format!("{}/v1/token/exchange", b.server.url());
    let exchange = |token: &str| {
        post_json::<_, ExchangeResponse>(
            &http,
            &url,
            &ExchangeRequest::new(token.to_owned().into(), &key),
        )
    };

    let second = exchange(&first).unwrap();
    assert!(
        second.spiffe_id.starts_with("spiffe://lab.zeroth/token/"),
        "{}",
        second.spiffe_id
    );
    use x509_parser::prelude::*;
    let (_, pem) = parse_x509_pem(second.svid.as_bytes()).unwrap();
    assert_eq!(
        pem.parse_x509()
            .unwrap()
            .public_key()
            .subject_public_key
            .data
            .as_ref(),
        point.as_slice()
    );
    let third = exchange(second.token.expose_secret()).unwrap();
    assert_ne!(third.token.expose_secret(), second.token.expose_secret());

    // The first token, presented again: someone holds a copy.
    let (status, reason) = refusal(exchange(&first).unwrap_err());
    assert_eq!(status, 403);
    assert!(reason.contains("treated as stolen"), "{reason}");
    // Its chain is revoked: even the newest token is dead now.
    let (status, reason) = refusal(exchange(third.token.expose_secret()).unwrap_err());
    assert_eq!(status, 403);
    assert!(reason.contains("chain was revoked"), "{reason}");
    let (status, _) = refusal(exchange("zt1.not-a-token").unwrap_err());
    assert_eq!(status, 401);

    let db = rusqlite::Connection::open(b.server.database()).unwrap();
    let kinds: Vec<String> = db
        .prepare("SELECT kind FROM audit ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        kinds,
        [
            "token.created",
            "token.rotated",
            "token.rotated",
            "token.theft"
        ]
    );
    let everything: String = db
        .prepare("SELECT detail || subject FROM audit")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for t in [
        first.as_str(),
        second.token.expose_secret(),
        third.token.expose_secret(),
    ] {
        assert!(!everything.contains(t), "a token reached the audit log");
    }
    // Only hashes are stored.
    let stored: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM tokens WHERE length(hash) = 32",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, 3);
}

#[test]
fn the_agent_rotates_its_identity_and_stops_renewing_once_revoked() {
    use std::time::Duration;
    let b = bench("auto_approve = true\nsvid_ttl = \"10s\"");
    let mut agent = renewal::AgentProcess::start(
        &b,
        &format!("group = \"edge\"\ntcti = \"{}\"", b.tpm.tcti()),
    );
    // Two renewals with different serials, about half a lifetime apart.
    let serial = |line: String| {
        line.split(" serial ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap()
            .to_owned()
    };
    let renewed = |l: &str| l.starts_with("identity renewed: ");
    let first = serial(agent.expect(Duration::from_secs(30), renewed));
    let second = serial(agent.expect(Duration::from_secs(30), renewed));
    assert_ne!(first, second);

    // Revoked: the next renewal is refused.
    let (ok, out) = zeroth_node(&b.server, &["list", "--json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = v["nodes"][0]["id"].as_str().unwrap().to_owned();
    let (ok, out) = zeroth_node(&b.server, &["revoke", &id]);
    assert!(ok, "{out}");
    let line = agent.expect(Duration::from_secs(30), |l| {
        l.starts_with("rejected by the server (403)")
    });
    assert!(line.contains("revoked"), "{line}");
    agent.stop();
}

#[test]
fn dev_mode_is_explicit_loud_and_keeps_keys_out_of_the_hsm() {
    let tpm = Swtpm::start().unwrap();
    let hsm = SoftHsm::start().unwrap();
    let roots = LabDir::new("roots").unwrap();
    let server = ZerothServer::start_with(
        Path::new(env!("CARGO_BIN_EXE_zeroth")),
        &hsm,
        &group("edge", &tpm, &roots, "auto_approve = true"),
        &["--dev"],
    )
    .unwrap();
    assert!(
        server
            .log()
            .contains("DEV MODE: keys are held in process memory"),
        "{}",
        server.log()
    );
    let agent = LabDir::new("agent").unwrap();
    let outcome = enrol(&options(&server, &tpm, &agent)).unwrap();
    assert!(matches!(outcome, Outcome::Approved { .. }));
    // Nothing was created in the token.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zeroth"))
        .env("SOFTHSM2_CONF", hsm.conf())
        .args(["hsm", "status", "--json"])
        .args(hsm.zeroth_args())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["keys"].as_array().unwrap().len(), 0, "{v}");
}

#[test]
fn a_restarted_server_keeps_its_ca_and_its_nodes() {
    let mut b = bench("auto_approve = true");
    let Outcome::Approved { node_id, .. } = enrol(&b.options()).unwrap() else {
        panic!("not approved");
    };
    let bundle_before = std::fs::read(b.server.bundle()).unwrap();
    b.server.restart().unwrap();
    assert_eq!(
        std::fs::read(b.server.bundle()).unwrap(),
        bundle_before,
        "same CA after a restart"
    );
    // The node re-attests against the restarted server: same id, and the
    // server still knows its last TPM clock (a replay would be caught).
    let Outcome::Approved {
        node_id: again,
        svid_pem,
        ..
    } = enrol(&b.options()).unwrap()
    else {
        panic!("not approved after restart:\n{}", b.server.log());
    };
    assert_eq!(again, node_id);
    use x509_parser::prelude::*;
    let (_, ca) = parse_x509_pem(&bundle_before).unwrap();
    let (_, leaf) = parse_x509_pem(svid_pem.as_bytes()).unwrap();
    leaf.parse_x509()
        .unwrap()
        .verify_signature(Some(ca.parse_x509().unwrap().public_key()))
        .unwrap();
}

#[test]
fn a_lost_exchange_reply_is_answered_again_for_the_same_key_until_the_next_token_is_used() {
    use zeroth::wire::token::{ExchangeRequest, ExchangeResponse};
    let b = bench("auto_approve = true");
    let first = create_token(&b.server);
    let key = || p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let (mine, other) = (key(), key());
    let http = client(&b.server.bundle()).unwrap();
    let url = format!("{}/v1/token/exchange", b.server.url());
    let send = |request: &ExchangeRequest| post_json::<_, ExchangeResponse>(&http, &url, request);
    let exchange = |token: &str, key: &p256::ecdsa::SigningKey| {
        send(&ExchangeRequest::new(token.to_owned().into(), key))
    };
    let second = exchange(&first, &mine).unwrap();
    // Someone who copied the token and the public key (it is in the SVID)
    // but not the private key cannot prove it: refused, nothing spent.
    let forged = ExchangeRequest {
        public_key: ExchangeRequest::new(first.clone().into(), &mine).public_key,
        ..ExchangeRequest::new(first.clone().into(), &other)
    };
    let (status, reason) = refusal(send(&forged).unwrap_err());
    assert_eq!(status, 403);
    assert!(reason.contains("`proof` is not a signature"), "{reason}");
    // A copy of the request, sent again unchanged (from a log, a proxy…),
    // is refused: it would hand the copier the next token.
    let (status, reason) = refusal(exchange(&first, &mine).unwrap_err());
    assert_eq!(status, 403);
    assert!(reason.contains("answered already"), "{reason}");
    // The reply was lost: the agent asks again with the same token and key
    // and the next attempt, signed anew, and gets the same next token (and
    // an SVID for its key); that retry, copied, is refused in turn.
    let retry = ExchangeRequest::attempt(first.clone().into(), &mine, 1);
    let again = send(&retry).unwrap();
    assert_eq!(again.token.expose_secret(), second.token.expose_secret());
    assert_eq!(again.token_expires, second.token_expires);
    let (status, reason) = refusal(send(&retry).unwrap_err());
    assert_eq!(status, 403);
    assert!(reason.contains("answered already"), "{reason}");
    let third = exchange(second.token.expose_secret(), &mine).unwrap();
    // Once the next token was used, the old one is theft again, even with
    // the same key.
    let (status, reason) = refusal(exchange(&first, &mine).unwrap_err());
    assert_eq!(status, 403);
    assert!(reason.contains("treated as stolen"), "{reason}");
    let (status, _) = refusal(exchange(third.token.expose_secret(), &mine).unwrap_err());
    assert_eq!(status, 403);

    // Another chain: the same token presented with another key is theft.
    let first = create_token(&b.server);
    let second = exchange(&first, &mine).unwrap();
    let (status, reason) = refusal(exchange(&first, &other).unwrap_err());
    assert_eq!(status, 403);
    assert!(reason.contains("treated as stolen"), "{reason}");
    let (status, reason) = refusal(exchange(second.token.expose_secret(), &mine).unwrap_err());
    assert_eq!(status, 403);
    assert!(reason.contains("chain was revoked"), "{reason}");
    let kinds = b.server.audit_details("token.exchange.retried").unwrap();
    assert_eq!(kinds.len(), 1, "{kinds:?}");
}

/// The policy lines `zeroth tpm info` prints for `tpm`, as pasted into a
/// group (their trailing comments dropped).
fn printed_policy(tpm: &Swtpm) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zeroth"))
        .args(["tpm", "info", "--tcti", &tpm.tcti()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("ek_allow = ") || l.starts_with("pcr_policy = "))
        .map(|l| l.split("   #").next().unwrap().to_owned() + "\n")
        .collect()
}

#[test]
fn the_policy_tpm_info_prints_admits_that_tpm_and_no_other() {
    let tpm = Swtpm::start().unwrap();
    let policy = printed_policy(&tpm);
    assert_eq!(policy.lines().count(), 2, "{policy}");
    // `--json` says the same.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zeroth"))
        .args(["tpm", "info", "--json", "--tcti", &tpm.tcti()])
        .output()
        .unwrap();
    let facts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ek = facts["policy"]["ek_allow"][0].as_str().unwrap();
    assert!(
        policy.contains(&format!("ek_allow = [\"{ek}\"]")),
        "{policy}"
    );
    let pcr7 = facts["policy"]["pcr_policy"]["sha256:7"].as_str().unwrap();
    assert!(
        policy.contains(&format!("\"sha256:7\" = \"{pcr7}\"")),
        "{policy}"
    );
    assert!(facts["ek_certificates"]
        .as_array()
        .is_some_and(|c| !c.is_empty()));
    // Pasted as printed: no manufacturer roots, only this EK and these PCRs.
    let hsm = SoftHsm::start().unwrap();
    let server = ZerothServer::start(
        Path::new(env!("CARGO_BIN_EXE_zeroth")),
        &hsm,
        &format!("[[group]]\nname = \"edge\"\nauto_approve = true\n{policy}"),
    )
    .unwrap();
    let agent = LabDir::new("agent").unwrap();
    assert!(matches!(
        enrol(&options(&server, &tpm, &agent)).unwrap(),
        Outcome::Approved { .. }
    ));
    // Another TPM is not admitted by it.
    let other = Swtpm::start().unwrap();
    let agent = LabDir::new("agent").unwrap();
    let (status, reason) = refusal(enrol(&options(&server, &other, &agent)).unwrap_err());
    assert_eq!(status, 403, "{reason}");
}
