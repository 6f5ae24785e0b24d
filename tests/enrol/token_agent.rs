//! The agent on a host without a TPM: it consumes the operator's first
//! token, rotates, keeps only the current token (0600), and a replayed
//! token kills the chain for everyone.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use zeroth::agent::enrol::post_json;
use zeroth::wire::token::{ExchangeRequest, ExchangeResponse};

use super::renewal::AgentProcess;
use super::{bench, client, refusal};

fn rotated(l: &str) -> bool {
    l.starts_with("token rotated: spiffe://lab.zeroth/token/")
}

#[test]
fn a_host_without_a_tpm_lives_on_rotating_tokens_until_one_is_replayed() {
    let b = bench("auto_approve = true");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zeroth"))
        .args([
            "token", "create", "--group", "edge", "--ttl", "2m", "--socket",
        ])
        .arg(b.server.admin_socket())
        .output()
        .unwrap();
    assert!(out.status.success());
    let first = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let bootstrap = b.agent_dir.join("bootstrap-token");
    std::fs::write(&bootstrap, &first).unwrap();
    let config = format!(
        "token_file = \"{}\"\nretry_max = \"1s\"",
        bootstrap.display()
    );

    let mut agent = AgentProcess::start(&b, &config);
    let line = agent.expect(Duration::from_secs(30), rotated);
    // Half of the shorter lifetime (token 2 min) is the next rotation.
    let valid: u64 = line
        .rsplit(" valid for ")
        .next()
        .unwrap()
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!((100..=120).contains(&valid), "{line}");
    assert!(!bootstrap.exists(), "the spent first token is removed");
    let state_token = b.agent_dir.join("state/token");
    let second = std::fs::read_to_string(&state_token).unwrap();
    assert_ne!(second.trim(), first);
    assert_eq!(
        std::fs::metadata(&state_token)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    agent.stop();

    // A restarted agent goes on from the token it kept.
    let mut agent = AgentProcess::start(&b, &config);
    agent.expect(Duration::from_secs(30), rotated);
    let third = std::fs::read_to_string(&state_token).unwrap();
    assert_ne!(third, second);
    agent.stop();

    // Someone replays the first token: theft; the chain dies, the agent's
    // current token with it.
    let key = p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let (status, reason) = refusal(
        post_json::<_, ExchangeResponse>(
            &client(&b.server.bundle()).unwrap(),
            &format!("{}/v1/token/exchange", b.server.url()),
            &ExchangeRequest::new(first.into(), &key),
        )
        .unwrap_err(),
    );
    assert_eq!(status, 403);
    assert!(reason.contains("stolen"), "{reason}");
    let mut agent = AgentProcess::start(&b, &config);
    let line = agent.expect(Duration::from_secs(30), |l| {
        l.starts_with("rejected by the server")
    });
    assert!(line.contains("chain was revoked"), "{line}");
    agent.stop();
}

#[test]
fn token_chains_are_listed_and_create_speaks_json() {
    let b = bench("auto_approve = true");
    let zeroth = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_zeroth"))
            .args(args)
            .arg("--socket")
            .arg(b.server.admin_socket())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let made: serde_json::Value = serde_json::from_str(&zeroth(&[
        "token", "create", "--group", "edge", "--ttl", "5m", "--json",
    ]))
    .unwrap();
    let chain = made["chain"].as_str().unwrap().to_owned();
    assert_eq!(made["group"], "edge");
    assert!(made["token"].as_str().unwrap().len() > 20, "{made}");
    // A second chain, revoked: both listed, newest first, with their state.
    let other = zeroth(&["token", "create", "--group", "edge", "--json"]);
    let other: serde_json::Value = serde_json::from_str(&other).unwrap();
    let other = other["chain"].as_str().unwrap().to_owned();
    zeroth(&["token", "revoke", &other]);
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&zeroth(&["token", "list", "--json"])).unwrap();
    let state = |id: &str| {
        listed
            .iter()
            .find(|c| c["chain"] == id)
            .map(|c| (c["state"].clone(), c["tokens"].clone()))
    };
    assert_eq!(
        state(&chain),
        Some(("active".into(), 1.into())),
        "{listed:?}"
    );
    assert_eq!(
        state(&other),
        Some(("revoked".into(), 1.into())),
        "{listed:?}"
    );
    let table = zeroth(&["token", "list"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&chain) && l.contains(" active ")),
        "{table}"
    );
}
