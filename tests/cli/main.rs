//! The `zeroth` binary as a newcomer and an operator run it.

use std::process::Command;

use zeroth::lab::{LabDir, Swtpm};

fn zeroth(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_zeroth"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn demo_shows_every_part_working_and_leaves_nothing_behind() {
    let running = Command::new(env!("CARGO_BIN_EXE_zeroth"))
        .arg("demo")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = running.id();
    let child = running.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(
        child.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&child.stderr)
    );
    for expected in [
        "chains to a trusted root",
        "secret recovered, so AK and EK share one TPM",
        "quote over sha256 PCRs 0-7 verified",
        "refused (the signature does not verify under the AK)",
        "Ed25519 yes, ECDSA yes, AES-GCM yes",
        "store-kek",
        "ed25519-dalek verified it",
        "it opens in its row and not in another",
        "event_scheduler=ON",
        "OpenAPI 3.1.0: 25 operations, 11 of them for holders of an SVID (mTLS)",
        "enrolled: spiffe://lab.zeroth/node/",
        "for a key that never leaves the TPM",
        "renewed over mTLS: serial ",
        "aud \"payments-db\", expires in ",
        "renewal: the server refused (403): PCR sha256:10",
        "enrolment: the server refused (403): PCR sha256:10",
        "is now revoked",
        "renewal: the server refused (403): node ",
        "the old one is refused, nobody knows the new one",
        "password only in psql's environment): hello from a user",
        "login refused: psql: error:",
        "sshd's host certificate (127.0.0.1), user CA keys and KRL kept current",
        "@cert-authority * ssh-ed25519 ",
        "host verified by its zeroth host certificate; logged in as ",
        "with certificate 2 (key id \"spiffe://lab.zeroth/node/",
        "login refused: ",
        "token rotated: spiffe://lab.zeroth/token/",
        "its user is gone; asking again: refused (403): token chain ",
        "host refused: Host key ED25519-CERT SHA256:",
        "audit: issued to \"uid 65534 pid ",
        "unit demo-shop.service\"",
        "error: refused (403): uid 65534 pid ",
        "enrolment: the server refused (403): this TPM is node ",
        "which was revoked; an operator must re-admit it (`zeroth node readmit ",
        ": 429 Too Many Requests, Retry-After: 1",
        // The count depends on how many polls the proxy step needed.
        "audit chain intact: ",
        " events (ssh.cert.issued, ssh.cert.revoked, ssh.cert.revoked, renew.denied, enrol.rejected, node.revoked, renew.denied, enrol.rejected, store.backup), 1 HSM-signed checkpoint",
        // The backup step: taken online, restored on the same token.
        "$ zeroth backup --out ",
        "(secrets in it are sealed by the HSM)",
        "checked against the HSM token: 6 keys present, ",
        "sealed secrets open",
        "serves the same CA bundle as the original",
        "sees hello from a user that lives 10 minutes",
        "while psql is connected, pg_roles has zt_app_ro_",
        "is gone ",
        "zt_shop_rw_",
        "FATAL:  zeroth proxy shop-pg refuses uid 65534 pid ",
        "db.session.opened  zt_app_ro_",
        "db.session.closed  zt_app_ro_",
        "db.creds.revoked   zt_app_ro_",
        "workload SVID issued: spiffe://lab.zeroth/app/shop ",
        "spiffe://lab.zeroth/app/shop (its key made in the agent's memory",
        "demo-billing.service (spiffe://lab.zeroth/app/billing) accepted spiffe://lab.zeroth/app/shop",
        "demo-shop.service (spiffe://lab.zeroth/app/shop) accepted spiffe://lab.zeroth/app/billing",
        "spiffe://lab.zeroth/app/shop served to uid 65534 pid ",
        "rows; audit chain intact in PostgreSQL: ",
        ": one trust bundle, one ledger (",
        "refused before writing anything: this store was made with another HSM token: it has no key x509-ca",
        " runs the cluster's jobs (revoker, reconciler, audit checkpoints)",
        " took the cluster's jobs over ",
        "lab stopped: every daemon reaped",
    ] {
        assert!(
            stdout.contains(expected),
            "demo output lacks {expected:?}:\n{stdout}"
        );
    }
    let prefix = format!("zeroth-lab.{pid}.");
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "the demo left {left:?}");
}

#[test]
fn version_and_help_read_well() {
    let (ok, out, _) = zeroth(&["--version"]);
    assert!(ok);
    assert!(out.starts_with("zeroth "), "{out}");
    let (ok, out, _) = zeroth(&["--help"]);
    assert!(ok);
    for cmd in [
        "demo", "lab", "hsm", "tpm", "bench", "server", "agent", "audit",
    ] {
        assert!(out.contains(cmd), "--help lacks {cmd}:\n{out}");
    }
    let (ok, _, err) = zeroth(&["hsm", "status"]);
    assert!(!ok);
    assert!(err.contains("--module is required"), "{err}");
}

/// `zeroth tpm info` on `lab`'s TPM, trusting the root certificate of `root_of`.
fn tpm_info(lab: &Swtpm, root_of: &Swtpm) -> (bool, String, String) {
    let roots = LabDir::new("roots").unwrap();
    std::fs::copy(root_of.ca_root_pem(), roots.join("root.pem")).unwrap();
    zeroth(&[
        "tpm",
        "info",
        "--tcti",
        &lab.tcti(),
        "--ek-roots",
        roots.path().to_str().unwrap(),
        "--ek-intermediates",
        lab.ca_intermediate_pem().to_str().unwrap(),
    ])
}

#[test]
fn tpm_info_says_whether_the_ek_chains_to_the_configured_roots() {
    let lab = Swtpm::start().unwrap();
    let (ok, out, err) = tpm_info(&lab, &lab);
    assert!(ok, "{err}");
    assert!(out.contains("manufacturer IBM"), "{out}");
    assert!(out.contains("PCR banks: sha256"), "{out}");
    assert_eq!(out.matches("chains to a trusted root").count(), 2, "{out}");

    // Another manufacturer's root: the same names, a different key.
    let other = Swtpm::start().unwrap();
    let (ok, out, err) = tpm_info(&lab, &other);
    assert!(ok, "{err}");
    assert!(out.contains("NOT trusted"), "{out}");
    assert!(!out.contains("chains to a trusted root"), "{out}");
}

#[test]
fn the_server_benchmark_reports_rates_latencies_and_memory() {
    let (ok, out, err) = zeroth(&[
        "bench",
        "server",
        "--nodes",
        "1",
        "--per-node",
        "3",
        "--runs",
        "2",
    ]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("server RSS idle: "), "{out}");
    for phase in ["  enrolments ", "  renewals "] {
        let lines: Vec<&str> = out.lines().filter(|l| l.starts_with(phase)).collect();
        assert_eq!(lines.len(), 2, "{out}");
        for l in lines {
            let words: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(words[1..3], ["3", "in"], "{l}");
            assert!(l.contains("/s  p50 ") && l.ends_with(" ms"), "{l}");
        }
    }
    assert!(out.contains("server RSS after run 2: "), "{out}");
}

#[test]
fn the_database_benchmark_compares_zeroth_with_a_raw_connection() {
    let (ok, out, err) = zeroth(&[
        "bench",
        "db",
        "--clients",
        "2",
        "--per-client",
        "3",
        "--raw",
        "5",
    ]);
    assert!(ok, "{out}\n{err}");
    for engine in ["postgres ", "mariadb "] {
        let line = out
            .lines()
            .find(|l| l.starts_with(engine))
            .unwrap_or_else(|| panic!("no {engine} line in {out}"));
        let numbers: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .map(|w| w.parse().unwrap())
            .collect();
        // raw/s, zeroth/s, ratio, p50, p99, revoked/s, revocation p99.
        assert_eq!(numbers.len(), 7, "{line}");
        assert!(numbers.iter().all(|n| *n > 0.0), "{line}");
    }
    assert!(
        out.contains("leases live in the store after the give-backs: 0"),
        "{out}"
    );
}

#[test]
fn the_ssh_benchmark_compares_signing_through_zeroth_with_raw_pkcs11() {
    let (ok, out, err) = zeroth(&[
        "bench",
        "ssh",
        "--clients",
        "2",
        "--per-client",
        "3",
        "--seconds",
        "1",
    ]);
    assert!(ok, "{out}\n{err}");
    for key in ["ed25519 ", "p-256 "] {
        let line = out
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key} line in {out}"));
        let numbers: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .map(|w| w.parse().unwrap())
            .collect();
        assert_eq!(numbers.len(), 5, "{line}");
        assert!(numbers.iter().all(|n| *n > 0.0), "{line}");
    }
}

#[test]
fn first_hour_errors_say_what_to_do_and_each_cause_once() {
    let (ok, _, err) = zeroth(&["server", "--config", "/nonexistent/server.toml"]);
    assert!(!ok);
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
    assert!(err.contains("/nonexistent/server.toml"), "{err}");

    let (ok, _, err) = zeroth(&["node", "list", "--socket", "/nonexistent/admin.sock"]);
    assert!(!ok);
    assert!(
        err.contains("no admin socket at /nonexistent/admin.sock")
            && err.contains("not running")
            && err.contains("admin_socket"),
        "{err}"
    );
    // A socket file nobody listens on: the server that made it is gone.
    let dir = LabDir::new("stale-socket").unwrap();
    let stale = dir.join("admin.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let (ok, _, err) = zeroth(&["node", "list", "--socket", stale.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("no longer running"), "{err}");
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    // The reader is gone before zeroth writes its first line.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_zeroth"))
        .args(["lab", "--only", "swtpm"])
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim(), "", "nothing on stderr");
    assert_eq!(out.status.code(), Some(141));
}

#[test]
fn the_package_description_reads_as_written() {
    let manifest: toml::Value = toml::from_str(include_str!("../../Cargo.toml")).unwrap();
    let text = manifest["package"]["metadata"]["deb"]["extended-description"]
        .as_str()
        .unwrap();
    for phrase in [
        "in return, short-lived",
        "The server keeps",
        "with its TPM 2.0",
    ] {
        assert!(text.contains(phrase), "{phrase:?} not in {text:?}");
    }
    // No two words run together where a line was continued.
    assert!(
        !text.contains(",short") && !text.contains("serverkeeps"),
        "{text}"
    );
}
