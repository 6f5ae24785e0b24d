//! Renewal over mTLS with the TPM-resident key, JWT-SVIDs, and what the
//! server refuses: no certificate, a foreign or expired certificate, a
//! revoked node, drifted PCRs.

use std::time::{Duration, SystemTime};

use zeroth::agent::enrol::{post_json, AgentError, Enrolment};
use zeroth::agent::{enrol, renew, Outcome};
use zeroth::wire::enrol::RenewChallenge;
use zeroth::wire::jwt::JwtResponse;

use super::{bench, client, refusal, zeroth_audit, zeroth_node};

fn svid_of(outcome: Outcome) -> String {
    match outcome {
        Outcome::Approved { svid_pem, .. } => svid_pem,
        other => panic!("not approved: {other:?}"),
    }
}

fn leaf(pem: &str) -> (String, Vec<u8>, SystemTime) {
    use x509_parser::prelude::*;
    let (_, p) = parse_x509_pem(pem.as_bytes()).unwrap();
    let c = p.parse_x509().unwrap();
    let not_after =
        SystemTime::UNIX_EPOCH + Duration::from_secs(c.validity().not_after.timestamp() as u64);
    (
        c.raw_serial_as_string(),
        c.public_key().subject_public_key.data.to_vec(),
        not_after,
    )
}

fn audit_kinds(b: &super::Bench) -> Vec<String> {
    let (ok, out) = zeroth_audit(&b.server, b._hsm.conf(), &["tail", "--json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_node_renews_over_mtls_with_a_fresh_quote_until_its_pcrs_drift() {
    let zero = "0".repeat(64);
    let b = bench(&format!(
        "auto_approve = true\npcrs = [0, 10]\npcr_policy = {{ \"sha256:10\" = \"{zero}\" }}"
    ));
    let first = svid_of(enrol(&b.options()).unwrap());
    let second = svid_of(renew(&b.options()).unwrap());
    let (s1, k1, _) = leaf(&first);
    let (s2, k2, _) = leaf(&second);
    assert_ne!(s1, s2, "a renewal issues a new certificate");
    assert_eq!(k1, k2, "for the same TPM-resident key");
    assert_eq!(
        std::fs::read_to_string(b.agent_dir.join("svid.pem")).unwrap(),
        second
    );
    // The renewed SVID renews again (it is what the agent presents now).
    svid_of(renew(&b.options()).unwrap());

    super::extend_pcr(&b.tpm, 10, &[0xab; 32]);
    let (status, reason) = refusal(renew(&b.options()).unwrap_err());
    assert_eq!(status, 403);
    assert!(reason.contains("PCR sha256:10"), "{reason}");
    assert!(
        audit_kinds(&b).ends_with(&[
            "svid.renewed".into(),
            "svid.renewed".into(),
            "renew.denied".into()
        ]),
        "{:?}",
        audit_kinds(&b)
    );
}

#[test]
fn a_revoked_node_gets_no_renewal_and_no_jwt() {
    let b = bench("auto_approve = true");
    let Outcome::Approved { node_id, .. } = enrol(&b.options()).unwrap() else {
        panic!("not approved");
    };
    let (ok, out) = zeroth_node(&b.server, &["revoke", &node_id]);
    assert!(ok, "{out}");
    // Its SVID is still within its lifetime, so TLS accepts it; the server
    // refuses what it asks for.
    let (status, reason) = refusal(renew(&b.options()).unwrap_err());
    assert_eq!(status, 403);
    assert!(reason.contains("revoked"), "{reason}");
    let e = Enrolment::open(&b.tpm.tcti(), b.agent_dir.path()).unwrap();
    let svid = std::fs::read_to_string(b.agent_dir.join("svid.pem")).unwrap();
    let http = e.mtls_client(&b.server.bundle(), &svid).unwrap();
    let err = post_json::<_, JwtResponse>(
        &http,
        &format!("{}/v1/jwt", b.server.url()),
        &serde_json::json!({"audience": ["db"]}),
    )
    .unwrap_err();
    let (status, reason) = refusal(err);
    assert_eq!(status, 403);
    assert!(reason.contains("not approved"), "{reason}");
}

#[test]
fn mtls_needs_a_current_svid_from_this_ca() {
    let b = bench("auto_approve = true\nsvid_ttl = \"10s\"");
    let svid = svid_of(enrol(&b.options()).unwrap());
    let url = format!("{}/v1/identity/challenge", b.server.url());

    // No client certificate: 401 with the reason.
    let (status, reason) = refusal(
        post_json::<_, RenewChallenge>(
            &client(&b.server.bundle()).unwrap(),
            &url,
            &serde_json::json!({}),
        )
        .unwrap_err(),
    );
    assert_eq!(status, 401);
    assert!(reason.contains("mTLS"), "{reason}");

    // A certificate from another CA: the handshake itself fails.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let identity = reqwest::Identity::from_pem(
        format!("{}{}", other.cert.pem(), other.key_pair.serialize_pem()).as_bytes(),
    )
    .unwrap();
    let foreign = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(b.server.bundle()).unwrap()).unwrap(),
        )
        .identity(identity)
        .build()
        .unwrap();
    let err = foreign.post(&url).json(&serde_json::json!({})).send();
    assert!(err.is_err(), "a foreign certificate was accepted: {err:?}");

    // The zeroth SVID works while it is valid…
    let e = Enrolment::open(&b.tpm.tcti(), b.agent_dir.path()).unwrap();
    let http = e.mtls_client(&b.server.bundle(), &svid).unwrap();
    post_json::<_, RenewChallenge>(&http, &url, &serde_json::json!({})).unwrap();
    drop(http);
    // …and not once it has expired (its lifetime is the point here).
    let (_, _, not_after) = leaf(&svid);
    if let Ok(left) = not_after.duration_since(SystemTime::now()) {
        std::thread::sleep(left + Duration::from_secs(1));
    }
    let http = e.mtls_client(&b.server.bundle(), &svid).unwrap();
    let refused = post_json::<_, RenewChallenge>(&http, &url, &serde_json::json!({})).unwrap_err();
    assert!(
        matches!(refused, AgentError::Unreachable { .. }),
        "the handshake should fail: {refused}"
    );
    // The agent's way back: enrol again through the TPM (swtpm has no
    // resource manager: one TPM user at a time).
    drop((http, e));
    svid_of(enrol(&b.options()).unwrap());
}

#[test]
fn jwt_svids_verify_with_a_standard_oidc_library() {
    let b = bench("auto_approve = true");
    let Outcome::Approved {
        spiffe_id,
        svid_pem,
        ..
    } = enrol(&b.options()).unwrap()
    else {
        panic!("not approved");
    };
    let e = Enrolment::open(&b.tpm.tcti(), b.agent_dir.path()).unwrap();
    let http = e.mtls_client(&b.server.bundle(), &svid_pem).unwrap();
    let jwt: JwtResponse = post_json(
        &http,
        &format!("{}/v1/jwt", b.server.url()),
        &serde_json::json!({"audience": ["payments-db"], "ttl_seconds": 60}),
    )
    .unwrap();
    assert_eq!(jwt.spiffe_id, spiffe_id);

    // A relying party knows only the issuer URL: discovery, then the JWKS.
    let anyone = client(&b.server.bundle()).unwrap();
    let get = |url: &str| -> serde_json::Value { anyone.get(url).send().unwrap().json().unwrap() };
    let config = get(&format!(
        "{}/.well-known/openid-configuration",
        b.server.url()
    ));
    let issuer = config["issuer"].as_str().unwrap();
    assert_eq!(issuer, b.server.url().replace("127.0.0.1", "localhost"));
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(get(config["jwks_uri"]
        .as_str()
        .unwrap()
        .replace("localhost", "127.0.0.1")
        .as_str()))
    .unwrap();
    let header = jsonwebtoken::decode_header(&jwt.token).unwrap();
    let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["payments-db"]);
    validation.set_issuer(&[issuer]);
    #[derive(serde::Deserialize)]
    struct Claims {
        sub: String,
        exp: i64,
    }
    let claims = jsonwebtoken::decode::<Claims>(&jwt.token, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims.sub, spiffe_id);
    assert_eq!(claims.exp, jwt.expires);

    // Another audience does not accept it, nor does a tampered token.
    validation.set_audience(&["billing"]);
    assert!(jsonwebtoken::decode::<Claims>(&jwt.token, &key, &validation).is_err());
    validation.set_audience(&["payments-db"]);
    let mut forged = jwt.token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert!(jsonwebtoken::decode::<Claims>(&forged, &key, &validation).is_err());

    // Bad requests name the field; no certificate, no JWT.
    for (body, field) in [
        (serde_json::json!({"audience": []}), "audience"),
        (
            serde_json::json!({"audience": ["a"], "ttl_seconds": 86400}),
            "ttl_seconds",
        ),
        (serde_json::json!({"audiences": ["a"]}), "audiences"),
    ] {
        let (status, reason) = refusal(
            post_json::<_, JwtResponse>(&http, &format!("{}/v1/jwt", b.server.url()), &body)
                .unwrap_err(),
        );
        assert_eq!(status, 400, "{body}");
        assert!(reason.contains(field), "{reason}");
    }
    let (status, _) = refusal(
        post_json::<_, JwtResponse>(
            &anyone,
            &format!("{}/v1/jwt", b.server.url()),
            &serde_json::json!({"audience": ["a"]}),
        )
        .unwrap_err(),
    );
    assert_eq!(status, 401);
    assert!(audit_kinds(&b).contains(&"jwt.issued".to_owned()));
}

/// A `zeroth agent run` process and its stdout, line by line.
/// `zeroth agent run` on the bench's agent directory.
pub(crate) struct AgentProcess(zeroth::lab::AgentProcess);

impl AgentProcess {
    /// `extra`: the agent.toml lines besides server, ca_bundle and state_dir.
    pub(crate) fn start(b: &super::Bench, extra: &str) -> Self {
        let config = b.agent_dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "server = \"{}\"\nca_bundle = \"{}\"\nstate_dir = \"{}\"\n{extra}\n",
                b.server.url(),
                b.server.bundle().display(),
                b.agent_dir.join("state").display()
            ),
        )
        .unwrap();
        Self(
            zeroth::lab::AgentProcess::start(
                std::path::Path::new(env!("CARGO_BIN_EXE_zeroth")),
                &config,
            )
            .unwrap(),
        )
    }

    /// The first line satisfying `want`, within `within`.
    pub(crate) fn expect(&mut self, within: Duration, want: impl Fn(&str) -> bool) -> String {
        self.0.expect(within, want).unwrap()
    }

    pub(crate) fn stop(self) {
        self.0.stop().unwrap();
    }

    pub(crate) fn pid(&self) -> u32 {
        self.0.pid()
    }

    pub(crate) fn seen(&self) -> &[String] {
        self.0.seen()
    }
}

fn renewed_via(how: &'static str) -> impl Fn(&str) -> bool {
    move |l: &str| l.starts_with("identity renewed: ") && l.ends_with(&format!("via {how}"))
}

#[test]
fn the_agent_survives_its_restart_and_a_server_outage_longer_than_its_ttl() {
    let mut b = bench("auto_approve = true\nsvid_ttl = \"10s\"");
    let config = format!(
        "group = \"edge\"\ntcti = \"{}\"\nretry_max = \"2s\"",
        b.tpm.tcti()
    );
    let mut agent = AgentProcess::start(&b, &config);
    agent.expect(Duration::from_secs(30), renewed_via("enrolment"));
    agent.expect(Duration::from_secs(30), renewed_via("mtls"));
    // A restarted agent picks up its SVID from disk and renews over mTLS.
    agent.stop();
    let mut agent = AgentProcess::start(&b, &config);
    agent.expect(Duration::from_secs(30), renewed_via("mtls"));

    // The server goes away for longer than the SVID lives.
    b.server.stop();
    agent.expect(Duration::from_secs(30), |l| {
        l.starts_with("cannot renew now")
    });
    let svid = std::fs::read_to_string(b.agent_dir.join("state/svid.pem")).unwrap();
    let (_, _, not_after) = leaf(&svid);
    if let Ok(left) = not_after.duration_since(SystemTime::now()) {
        std::thread::sleep(left + Duration::from_secs(1));
    }
    b.server.resume().unwrap();
    // Unaided, the agent re-attests through the TPM and is back in business.
    agent.expect(Duration::from_secs(30), renewed_via("enrolment"));
    agent.expect(Duration::from_secs(30), renewed_via("mtls"));
    agent.stop();
}

#[test]
fn a_node_renews_after_its_tpm_reboots() {
    let mut b = bench("auto_approve = true");
    svid_of(enrol(&b.options()).unwrap());
    let db = rusqlite::Connection::open(b.server.database()).unwrap();
    let resets = || -> i64 {
        db.query_row("SELECT reset_count FROM nodes", [], |r| r.get(0))
            .unwrap()
    };
    let before = resets();
    b.tpm.reboot().unwrap();
    // resetCount moved and the PCRs were reset: a fresh quote still renews.
    svid_of(renew(&b.options()).unwrap());
    assert!(resets() > before, "the server saw the reboot");
}

#[test]
fn malformed_renewals_are_answered_400_and_spend_nothing() {
    let b = bench("auto_approve = true");
    let svid = svid_of(enrol(&b.options()).unwrap());
    let e = Enrolment::open(&b.tpm.tcti(), b.agent_dir.path()).unwrap();
    let http = e.mtls_client(&b.server.bundle(), &svid).unwrap();
    let ch: RenewChallenge = post_json(
        &http,
        &format!("{}/v1/identity/challenge", b.server.url()),
        &serde_json::json!({}),
    )
    .unwrap();
    let good = serde_json::to_value(e.renew_request(&ch).unwrap()).unwrap();
    let with = |field: &str, value: serde_json::Value| {
        let mut v = good.clone();
        v[field] = value;
        v.to_string()
    };
    let attest = good["quote_attest"].as_str().unwrap();
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(attest)
        .unwrap();
    let truncated = base64::engine::general_purpose::STANDARD.encode(&raw[..raw.len() - 5]);
    let oversized =
        base64::engine::general_purpose::STANDARD.encode([&raw[..], &[0u8; 16]].concat());
    let cases = [
        (
            with("quote_attest", "%%".into()),
            "`quote_attest` is not base64",
        ),
        (with("quote_attest", truncated.into()), "`quote_attest`:"),
        (with("quote_attest", oversized.into()), "`quote_attest`:"),
        (with("quote_signature", "AAAA".into()), "`quote_signature`:"),
        (
            with("pcrs", serde_json::json!({"sha1:0": "00"})),
            "`pcrs` key",
        ),
        (with("surprise", 1.into()), "unknown field `surprise`"),
        ("42".to_owned(), "invalid type"),
    ];
    let url = format!("{}/v1/identity/renew", b.server.url());
    for (body, want) in cases {
        let resp = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{body}");
        let v: serde_json::Value = resp.json().unwrap();
        assert!(v["reason"].as_str().unwrap().contains(want), "{body}: {v}");
    }
    // None of that spent the challenge: the good answer still renews, once.
    for want in [200, 409] {
        let resp = http
            .post(&url)
            .header("content-type", "application/json")
            .body(good.to_string())
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), want);
    }
}

#[test]
fn the_audit_head_is_signed_every_n_events_while_the_server_runs() {
    use std::path::Path;
    use zeroth::lab::{LabDir, SoftHsm, Swtpm, ZerothServer};
    let tpm = Swtpm::start().unwrap();
    let hsm = SoftHsm::start().unwrap();
    let roots = LabDir::new("roots").unwrap();
    let server = ZerothServer::start_configured(
        Path::new(env!("CARGO_BIN_EXE_zeroth")),
        &hsm,
        "audit_checkpoint_events = 3\naudit_checkpoint_interval = \"1h\"",
        &super::group("edge", &tpm, &roots, "auto_approve = true"),
        &[],
    )
    .unwrap();
    let agent = LabDir::new("agent").unwrap();
    let opts = super::options(&server, &tpm, &agent);
    svid_of(enrol(&opts).unwrap()); // node.enrolled, svid.issued
    let db = rusqlite::Connection::open(server.database()).unwrap();
    let signed = || -> Option<i64> {
        db.query_row("SELECT MAX(seq) FROM audit_checkpoints", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(signed(), None, "two events: not yet");
    svid_of(renew(&opts).unwrap()); // svid.renewed: the third
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while signed().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint after 3 events:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(signed(), Some(3));
}
