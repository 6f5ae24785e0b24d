//! The systemd side: the units are locked down (exposure ≤ 2.0 by
//! `systemd-analyze security`), and the daemons speak sd_notify — READY
//! once serving, watchdog pings while alive, STOPPING on the way out.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use zeroth::lab::{tools, AgentProcess, LabDir, SoftHsm, ZerothServer};

fn unit(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("systemd")
        .join(name)
}

/// `systemd-analyze security --offline=yes` of a unit file: its overall
/// exposure, 0.0 (locked down) to 10.0.
fn exposure(unit_file: &Path) -> f64 {
    let out = Command::new(tools::SYSTEMD_ANALYZE.path().unwrap())
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit_file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level for"))
        .unwrap_or_else(|| panic!("{text}{}", String::from_utf8_lossy(&out.stderr)));
    line.split(": ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the exposure in {line:?}"))
}

#[test]
fn both_units_are_locked_down_to_an_exposure_of_at_most_two() {
    for name in ["zeroth-server.service", "zeroth-agent.service"] {
        let score = exposure(&unit(name));
        println!("{name}: exposure {score}");
        assert!(score <= 2.0, "{name}: exposure {score} > 2.0");
        let text = std::fs::read_to_string(unit(name)).unwrap();
        for needed in [
            "Type=notify",
            "WatchdogSec=",
            "Restart=on-failure",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "DevicePolicy=closed",
            "CapabilityBoundingSet=\n",
            "SystemCallFilter=@system-service",
            "MemoryDenyWriteExecute=yes",
            "UMask=0077",
            "User=zeroth",
        ] {
            assert!(text.contains(needed), "{name} lacks {needed:?}");
        }
        // No secrets in the environment: only the allocator's setting.
        for line in text.lines().filter(|l| l.starts_with("Environment")) {
            assert!(
                line.starts_with("Environment=MALLOC_ARENA_MAX="),
                "{name}: nothing but the allocator's setting in the environment: {line}"
            );
        }
    }
    let server = std::fs::read_to_string(unit("zeroth-server.service")).unwrap();
    assert!(server.contains("LoadCredentialEncrypted=hsm-pin:"));
    let agent = std::fs::read_to_string(unit("zeroth-agent.service")).unwrap();
    assert!(agent.contains("DeviceAllow=/dev/tpmrm0 rw"));
    assert!(agent.contains("SupplementaryGroups=tss"));
    // A unit that drops the hardening scores far worse: the check can fail.
    let dir = LabDir::new("units").unwrap();
    let loose = dir
        .write(
            "zeroth-loose.service",
            b"[Service]\nExecStart=/usr/bin/zeroth server\n",
            0o644,
        )
        .unwrap();
    assert!(exposure(&loose) > 5.0);
}

/// A notification socket like systemd's, and the messages that reach it.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: LabDir,
}

impl NotifySocket {
    fn bind() -> Self {
        let dir = LabDir::new("notify").unwrap();
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        Self {
            socket,
            path,
            _dir: dir,
        }
    }

    /// Waits for a message containing `want`.
    fn expect(&self, want: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no {want:?} within {within:?}");
            self.socket.set_read_timeout(Some(left)).unwrap();
            let Ok(n) = self.socket.recv(&mut buf) else {
                panic!("no {want:?} within {within:?}");
            };
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg.contains(want) {
                return msg;
            }
        }
    }
}

#[test]
fn the_server_notifies_ready_pings_the_watchdog_and_says_when_it_stops() {
    let notify = NotifySocket::bind();
    // Children inherit these, as from systemd (one test per process).
    std::env::set_var("NOTIFY_SOCKET", &notify.path);
    std::env::set_var("WATCHDOG_USEC", "1000000");
    let hsm = SoftHsm::start().unwrap();
    let mut server = ZerothServer::start(
        Path::new(env!("CARGO_BIN_EXE_zeroth")),
        &hsm,
        "[[group]]\nname = \"edge\"\nek_allow = [\"00\"]\n",
    )
    .unwrap();
    let ready = notify.expect("READY=1", Duration::from_secs(30));
    assert!(
        ready.contains(&format!("STATUS=serving on {}", server.url())),
        "{ready}"
    );
    // Half the 1 s watchdog timeout: two pings within two seconds.
    notify.expect("WATCHDOG=1", Duration::from_secs(2));
    notify.expect("WATCHDOG=1", Duration::from_secs(2));
    server.stop();
    notify.expect("STOPPING=1", Duration::from_secs(10));
}

#[test]
fn the_agent_notifies_ready_after_its_first_attempt_and_pings_while_waiting() {
    let notify = NotifySocket::bind();
    std::env::set_var("NOTIFY_SOCKET", &notify.path);
    std::env::set_var("WATCHDOG_USEC", "1000000");
    // A server that is not there: the agent is started (and retrying), not failed.
    let dir = LabDir::new("agent").unwrap();
    let config = dir
        .write(
            "agent.toml",
            format!(
                "server = \"https://127.0.0.1:1\"\nca_bundle = \"{}\"\ngroup = \"edge\"\nstate_dir = \"{}\"\nretry_max = \"30s\"\n",
                dir.join("missing-ca.pem").display(),
                dir.join("state").display()
            )
            .as_bytes(),
            0o600,
        )
        .unwrap();
    let mut agent = AgentProcess::start(Path::new(env!("CARGO_BIN_EXE_zeroth")), &config).unwrap();
    agent
        .expect(Duration::from_secs(10), |l| {
            l.starts_with("cannot renew now")
        })
        .unwrap();
    notify.expect("READY=1", Duration::from_secs(10));
    // Its next attempt is a while away; the watchdog is pinged meanwhile.
    notify.expect("WATCHDOG=1", Duration::from_secs(2));
    notify.expect("WATCHDOG=1", Duration::from_secs(2));
    agent.stop().unwrap();
    notify.expect("STOPPING=1", Duration::from_secs(5));
}
