//! The HTTP API against its own OpenAPI document. Schemathesis, a
//! property-based API fuzzer from PyPI, reads the document a live lab
//! server serves and sends what it allows and what it forbids, over mTLS as
//! a token host, then checks that no answer is a 5xx and that every answer
//! (status, content type, headers, body) matches the document.
//!
//! `make test` runs a short pass; `make fuzz-api` a long one
//! (`ZEROTH_FUZZ_API_EXAMPLES` cases per operation).

mod forwarder;

use std::path::Path;
use std::process::Command;

use zeroth::agent::enrol::{client, post_json, Enrolment};
use zeroth::agent::{enrol, EnrolOptions, Outcome};
use zeroth::lab::{groups, LabDir, Postgres, SoftHsm, Swtpm, ZerothServer};
use zeroth::wire::token::{ExchangeRequest, ExchangeResponse};

/// Where `make deps` (scripts/clients.sh) installs schemathesis.
const SCHEMATHESIS: &str = "/opt/zeroth-test/schemathesis/bin/schemathesis";

/// Cases per operation in `make test`'s pass.
const SHORT_PASS: u32 = 25;

const SSH_ROLE: &str = r#"
[[ssh_role]]
name = "ops"
principals = ["ops"]
allow_groups = ["edge"]
"#;

/// A live server whose node group trusts `tpm`, with a PostgreSQL
/// connection, a database role and an SSH role to be asked for.
struct Lab {
    // Dropped in this order: the server before the parts it uses.
    server: ZerothServer,
    _hsm: SoftHsm,
    _pg: Postgres,
    tpm: Swtpm,
    _trust: LabDir,
}

impl Lab {
    fn start() -> Self {
        let tpm = Swtpm::start().unwrap();
        let hsm = SoftHsm::start().unwrap();
        let pg = Postgres::start().unwrap();
        let (trust, group) = groups::trusting("edge", &[&tpm], true).unwrap();
        let server = ZerothServer::start(
            Path::new(env!("CARGO_BIN_EXE_zeroth")),
            &hsm,
            &format!("{group}{}{SSH_ROLE}", groups::PG_READ_ONLY_ROLE),
        )
        .unwrap();
        server.add_postgres("pg", &pg).unwrap();
        Self {
            server,
            _hsm: hsm,
            _pg: pg,
            tpm,
            _trust: trust,
        }
    }
}

/// A token host's SVID and key, as files a TLS client can present.
fn token_host_credentials(
    server: &ZerothServer,
    dir: &LabDir,
) -> (String, std::path::PathBuf, std::path::PathBuf) {
    let (ok, out) = server
        .cli(&["token", "create", "--group", "edge", "--ttl", "10m"], "")
        .unwrap();
    assert!(ok, "{out}");
    let token = out.lines().next().unwrap().trim().to_owned();
    let key = p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let http = client(&server.bundle()).unwrap();
    let exchanged: ExchangeResponse = post_json(
        &http,
        &format!("{}/v1/token/exchange", server.url()),
        &ExchangeRequest::new(token.into(), &key),
    )
    .unwrap();
    use p256::pkcs8::EncodePrivateKey;
    let pem = key.to_pkcs8_pem(Default::default()).unwrap();
    let key_file = dir.write("svid-key.pem", pem.as_bytes(), 0o600).unwrap();
    let cert_file = dir
        .write("svid.pem", exchanged.svid.as_bytes(), 0o600)
        .unwrap();
    (exchanged.spiffe_id, cert_file, key_file)
}

#[test]
fn a_property_based_fuzzer_finds_no_5xx_and_every_answer_matches_the_openapi_document() {
    let examples = examples();
    let lab = Lab::start();
    let server = &lab.server;
    let dir = LabDir::new("api-fuzz").unwrap();
    let (spiffe_id, cert, key) = token_host_credentials(server, &dir);
    assert!(spiffe_id.contains("/token/"), "{spiffe_id}");

    // What the server serves is what `zeroth openapi` prints.
    let http = client(&server.bundle()).unwrap();
    let served: serde_json::Value = http
        .get(format!("{}/v1/openapi.json", server.url()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let printed = Command::new(env!("CARGO_BIN_EXE_zeroth"))
        .arg("openapi")
        .output()
        .unwrap();
    assert!(printed.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&printed.stdout).unwrap();
    assert_eq!(served, printed);
    assert_eq!(served["openapi"], "3.1.0");

    let out = schemathesis(&dir, &format!("{}/v1/openapi.json", server.url()), examples)
        .arg("--tls-verify")
        .arg(server.bundle())
        .arg("--request-cert")
        .arg(&cert)
        .arg("--request-cert-key")
        .arg(&key)
        .output()
        .unwrap();
    passed(&out, server);
}

/// The operations only an SVID holder may call, fuzzed as an enrolled node:
/// its key is in the TPM, so the fuzzer speaks plain HTTP to a forwarder
/// that holds the node's mTLS connection. Renewal with a fresh quote and
/// JWT-SVIDs are the node's alone; the rest answer a node differently from a
/// token host (its group, its leases).
#[test]
fn the_same_fuzzer_speaking_as_an_enrolled_node_finds_no_5xx_in_the_operations_for_svid_holders() {
    let lab = Lab::start();
    let (tpm, server) = (&lab.tpm, &lab.server);
    let dir = LabDir::new("api-fuzz-node").unwrap();
    let state = dir.subdir("agent", 0o700).unwrap();
    let options = EnrolOptions {
        server: server.url().to_owned(),
        ca_bundle: server.bundle(),
        group: "edge".into(),
        tcti: tpm.tcti(),
        state_dir: state.clone(),
        event_log: None,
    };
    assert!(matches!(enrol(&options).unwrap(), Outcome::Approved { .. }));
    let node = Enrolment::open(&tpm.tcti(), &state).unwrap();
    let svid = std::fs::read_to_string(state.join("svid.pem")).unwrap();
    let http = node.mtls_client(&server.bundle(), &svid).unwrap();
    let forwarder = forwarder::Forwarder::start(http, server.url().to_owned());
    // The forwarder speaks as the node: a valid call is answered as the
    // node's, before the pass and after it (a pass that lost the node's
    // identity would otherwise find only 4xx, and no 5xx).
    let as_node = || {
        let r = reqwest::blocking::Client::new()
            .post(format!("{}/v1/jwt", forwarder.url()))
            .json(&serde_json::json!({"audience": ["fuzz-check"]}))
            .send()
            .unwrap();
        let status = r.status();
        let body: serde_json::Value = r.json().unwrap_or_default();
        assert!(
            status.is_success()
                && body["spiffe_id"]
                    .as_str()
                    .is_some_and(|id| id.contains("/node/")),
            "{status} {body}"
        );
    };
    as_node();

    let out = schemathesis(
        &dir,
        &format!("{}/v1/openapi.json", forwarder.url()),
        examples(),
    )
    .args([
        "--include-path-regex",
        "^/v1/(identity/|jwt$|db/|leases/|ssh/sign/|entries$|workload/)",
    ])
    .output()
    .unwrap();
    passed(&out, server);
    as_node();
}

/// Cases per operation: `ZEROTH_FUZZ_API_EXAMPLES`, or the short pass.
fn examples() -> u32 {
    std::env::var("ZEROTH_FUZZ_API_EXAMPLES")
        .ok()
        .map(|v| {
            v.parse::<u32>()
                .expect("ZEROTH_FUZZ_API_EXAMPLES is a count")
        })
        .unwrap_or(SHORT_PASS)
}

/// `schemathesis run` of the document at `schema` with every check, its
/// report in `dir`.
fn schemathesis(dir: &LabDir, schema: &str, examples: u32) -> Command {
    assert!(
        Path::new(SCHEMATHESIS).exists(),
        "schemathesis is not installed at {SCHEMATHESIS}: run `make deps` as root \
         (scripts/clients.sh installs it from PyPI)"
    );
    let report = dir.subdir("report", 0o700).unwrap();
    let mut cmd = Command::new(SCHEMATHESIS);
    cmd.arg("run")
        .arg(schema)
        .args(["--checks", "all"])
        // A well-formed request may still name a role, lease or entry that
        // does not exist: 4xx is the right answer, not a failure.
        .args(["--exclude-checks", "positive_data_acceptance"])
        .args(["--max-examples", &examples.to_string()])
        .args(["--workers", "2", "--no-color"])
        .args(
            std::env::var("ZEROTH_FUZZ_API_SEED")
                .map(|seed| vec!["--seed".to_owned(), seed])
                .unwrap_or_default(),
        )
        .arg("--report-dir")
        .arg(&report)
        .current_dir(dir.path());
    cmd
}

/// Schemathesis found nothing, and the server did not panic.
fn passed(out: &std::process::Output, server: &ZerothServer) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "schemathesis failed:\n{text}");
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

/// A refusal given before the handler reads the body (here: no client
/// certificate at a node-only endpoint) leaves the connection usable: the
/// body, sent after a pause, is read and the next request on the same
/// connection is answered.
#[test]
fn a_connection_stays_usable_after_a_refusal_that_comes_before_the_body() {
    use std::io::{BufRead, BufReader, Write};
    let tpm = Swtpm::start().unwrap();
    let hsm = SoftHsm::start().unwrap();
    let (_trust, group) = groups::trusting("edge", &[&tpm], true).unwrap();
    let server =
        ZerothServer::start(Path::new(env!("CARGO_BIN_EXE_zeroth")), &hsm, &group).unwrap();
    let config =
        zeroth::wire::db_tls::client_config(&std::fs::read(server.bundle()).unwrap()).unwrap();
    let authority = server.url().trim_start_matches("https://").to_owned();
    let tcp = std::net::TcpStream::connect(&authority).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = rustls::ClientConnection::new(config, name).unwrap();
    let mut stream = BufReader::new(rustls::StreamOwned::new(tls, tcp));

    let body = format!(r#"{{"challenge_id":"{}"}}"#, "x".repeat(40_000));
    write!(
        stream.get_mut(),
        "POST /v1/identity/renew HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    // The body follows in two writes, so in several TLS records: a server
    // that answered from the headers alone would find only part of it to
    // drain, and close the connection.
    stream
        .get_mut()
        .write_all(&body.as_bytes()[..20_000])
        .unwrap();
    stream.get_mut().flush().unwrap();
    stream
        .get_mut()
        .write_all(&body.as_bytes()[20_000..])
        .unwrap();
    stream.get_mut().flush().unwrap();
    let (status, headers, answer) = read_response(&mut stream);
    assert_eq!(status, 401, "{answer}");
    assert!(!headers.contains("connection: close"), "{headers}");

    write!(
        stream.get_mut(),
        "GET /healthz HTTP/1.1\r\nhost: {authority}\r\n\r\n"
    )
    .unwrap();
    stream.get_mut().flush().unwrap();
    let (status, _, answer) = read_response(&mut stream);
    assert_eq!((status, answer.as_str()), (200, "ok\n"));

    fn read_response(stream: &mut impl BufRead) -> (u16, String, String) {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = stream.read_line(&mut line).expect("the connection was cut");
            assert!(n > 0, "the server closed the connection");
            if line == "\r\n" {
                break;
            }
            head.push_str(&line.to_ascii_lowercase());
        }
        let status = head[9..12].parse().unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        let mut body = vec![0; length];
        stream.read_exact(&mut body).unwrap();
        (status, head, String::from_utf8_lossy(&body).into_owned())
    }
}
