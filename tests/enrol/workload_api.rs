//! The SPIFFE Workload API of `zeroth agent run`, asked by stock clients:
//! py-spiffe (PyPI) and grpcio without the security header. Each program
//! gets the identities its kernel-attested selectors match, nothing else.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use zeroth::lab::{clients, LabDir};

use super::renewal::AgentProcess;
use super::{bench, run_zeroth, Bench};

/// A TPM node running its agent with the workload socket.
pub(crate) struct ApiNode {
    pub b: Bench,
    pub agent: AgentProcess,
    pub socket: PathBuf,
    pub files: LabDir,
    pub node_id: String,
}

impl ApiNode {
    pub(crate) fn start(group_extra: &str) -> Self {
        let b = bench(&format!("auto_approve = true\n{group_extra}"));
        let files = LabDir::new("workload").unwrap();
        let socket = files.join("api.sock");
        let mut agent = AgentProcess::start(
            &b,
            &format!(
                "group = \"edge\"\ntcti = \"{}\"\nretry_max = \"1s\"\n[workload_api]\nsocket = \"{}\"\nentry_refresh = \"1s\"",
                b.tpm.tcti(),
                socket.display()
            ),
        );
        let line = agent.expect(Duration::from_secs(30), |l| {
            l.starts_with("identity renewed: ")
        });
        let node_id = line
            .split_whitespace()
            .nth(2)
            .and_then(|id| id.rsplit('/').next())
            .unwrap()
            .to_owned();
        Self {
            b,
            agent,
            socket,
            files,
            node_id,
        }
    }

    /// `zeroth entry create --group edge --spiffe-id ID --selector S…`; the
    /// entry's id.
    pub(crate) fn entry(&self, spiffe_id: &str, selectors: &[&str], extra: &[&str]) -> String {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_zeroth"));
        cmd.args([
            "entry",
            "create",
            "--group",
            "edge",
            "--spiffe-id",
            spiffe_id,
        ]);
        for s in selectors {
            cmd.args(["--selector", s]);
        }
        cmd.args(extra)
            .arg("--socket")
            .arg(self.b.server.admin_socket());
        let (ok, out) = run_zeroth(&mut cmd);
        assert!(ok, "{out}");
        out.split_whitespace().nth(1).unwrap().to_owned()
    }

    /// Waits for the agent to say it holds an SVID for `spiffe_id`.
    pub(crate) fn await_svid(&mut self, spiffe_id: &str) -> String {
        let want = format!("workload SVID issued: {spiffe_id} ");
        self.agent
            .expect(Duration::from_secs(30), move |l| l.starts_with(&want))
    }

    /// The py-spiffe program asking for `args`, to run as `uid`.
    pub(crate) fn py_spiffe_command(&self, uid: u32, args: &[&str]) -> Command {
        let python = clients::py_spiffe().unwrap();
        let probe = clients::spiffe_probe(&self.files).unwrap();
        let mut cmd = Command::new("setpriv");
        cmd.args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
        ]);
        cmd.arg(python).arg(probe).arg(&self.socket).args(args);
        cmd
    }

    /// py-spiffe's answer to `args`, run as `uid` (root: the test's own).
    pub(crate) fn py_spiffe(&self, uid: u32, args: &[&str]) -> (bool, serde_json::Value) {
        let out = self.py_spiffe_command(uid, args).output().unwrap();
        if !out.status.success() {
            // Shown with the test's failure, if it fails.
            eprintln!(
                "py-spiffe {args:?} as uid {uid}: {}\nthe agent said:\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.agent.seen().join("\n")
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let last = text.lines().last().unwrap_or_default();
        let v = serde_json::from_str(last).unwrap_or_else(|_| {
            panic!(
                "py-spiffe printed {text:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.success(), v)
    }
}

#[test]
fn py_spiffe_gets_each_program_its_own_svid_jwt_and_bundles() {
    let mut n = ApiNode::start("");
    n.entry(
        "spiffe://lab.zeroth/app/root-tools",
        &["unix:uid:0"],
        &["--hint", "internal"],
    );
    n.entry("spiffe://lab.zeroth/app/nobody", &["unix:uid:65534"], &[]);
    // Selectors on the executable: its path (symlinks resolved, as the
    // kernel names it) and its SHA-256.
    let python = std::fs::canonicalize(clients::py_spiffe().unwrap()).unwrap();
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(&python).unwrap()))
    };
    n.entry(
        "spiffe://lab.zeroth/app/python",
        &[
            "unix:uid:65532",
            &format!("unix:path:{}", python.display()),
            &format!("unix:sha256:{digest}"),
        ],
        &[],
    );
    n.entry(
        "spiffe://lab.zeroth/app/other-binary",
        &["unix:uid:65532", &format!("unix:sha256:{}", "0".repeat(64))],
        &[],
    );
    n.await_svid("spiffe://lab.zeroth/app/python");

    let (ok, python_id) = n.py_spiffe(65532, &["x509"]);
    assert!(ok, "{python_id}");
    assert_eq!(
        python_id["all"],
        serde_json::json!(["spiffe://lab.zeroth/app/python"]),
        "the entry naming another binary's hash does not match"
    );

    let (ok, root) = n.py_spiffe(0, &["x509"]);
    assert!(ok, "{root}");
    assert_eq!(root["spiffe_id"], "spiffe://lab.zeroth/app/root-tools");
    assert_eq!(root["key_matches"], true);
    assert_eq!(root["bundle_authorities"], 1);

    let (ok, nobody) = n.py_spiffe(65534, &["x509"]);
    assert!(ok, "{nobody}");
    assert_eq!(nobody["spiffe_id"], "spiffe://lab.zeroth/app/nobody");
    assert_eq!(
        nobody["all"],
        serde_json::json!(["spiffe://lab.zeroth/app/nobody"])
    );
    assert_ne!(nobody["serial"], root["serial"]);

    let (ok, jwt) = n.py_spiffe(65534, &["jwt", "payments"]);
    assert!(ok, "{jwt}");
    assert_eq!(jwt["spiffe_id"], "spiffe://lab.zeroth/app/nobody");
    assert_eq!(jwt["validated"], "spiffe://lab.zeroth/app/nobody");
    assert_eq!(jwt["audience"], serde_json::json!(["payments"]));
    assert_eq!(jwt["jwt_authorities"], 1);

    // The node's operator sees what its agent serves, and to whom.
    let list = |uid: u32| {
        Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
            ])
            .arg(env!("CARGO_BIN_EXE_zeroth"))
            .args(["workload", "list", "--socket"])
            .arg(&n.socket)
            .output()
            .unwrap()
    };
    let out = list(0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("spiffe://lab.zeroth/app/nobody for unix:uid:65534: SVID until ")
            && text.contains("    served uid 65534 pid "),
        "{text}"
    );
    let out = list(65534);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("uid 65534 pid ") && err.contains(" may not "),
        "{err}"
    );

    // A uid no entry names: PermissionDenied, as the standard says.
    let (ok, stranger) = n.py_spiffe(65533, &["x509"]);
    assert!(!ok);
    let message = stranger["message"].as_str().unwrap();
    assert!(
        message.contains("PERMISSION_DENIED")
            && message.contains("no registration entry matches uid 65533"),
        "{stranger}"
    );
}

/// The stream's next item, within a minute.
async fn next<T>(s: &mut (impl tokio_stream::Stream<Item = T> + Unpin)) -> T {
    use tokio_stream::StreamExt;
    tokio::time::timeout(Duration::from_secs(60), s.next())
        .await
        .expect("no update within a minute")
        .expect("the stream ended")
}

/// The SPIFFE IDs and leaf certificates of one X.509 context.
fn ids_and_leaves(ctx: &spiffe::X509Context) -> (Vec<String>, Vec<Vec<u8>>) {
    ctx.svids()
        .iter()
        .map(|s| (s.spiffe_id().to_string(), s.leaf().as_ref().to_vec()))
        .unzip()
}

#[test]
fn the_rust_spiffe_crate_streams_rotations_and_redactions_on_one_connection() {
    let mut n = ApiNode::start("");
    let api = n.entry(
        "spiffe://lab.zeroth/app/api",
        &["unix:uid:0"],
        &["--ttl", "1m"],
    );
    n.await_svid("spiffe://lab.zeroth/app/api");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = spiffe::WorkloadApiClient::connect_to(format!("unix:{}", n.socket.display()))
            .await
            .unwrap();
        let svid = client.fetch_x509_svid().await.unwrap();
        assert_eq!(svid.spiffe_id().to_string(), "spiffe://lab.zeroth/app/api");
        let td = svid.spiffe_id().trust_domain();
        let bundles = client.fetch_x509_bundles().await.unwrap();
        assert_eq!(bundles.get(td).unwrap().authorities().len(), 1);
        let jwt = client.fetch_jwt_svid(["orders"], None).await.unwrap();
        let checked = client
            .validate_jwt_token("orders", jwt.token())
            .await
            .unwrap();
        assert_eq!(
            checked.spiffe_id().to_string(),
            "spiffe://lab.zeroth/app/api"
        );
        let err = client
            .validate_jwt_token("other", jwt.token())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("audience"), "{err}");
        let jwks = client.fetch_jwt_bundles().await.unwrap();
        assert!(jwks.get(td).is_some());

        // One stream: the first context at once, then the rotation at
        // half of the minute, without reconnecting.
        let mut stream = client.stream_x509_contexts().await.unwrap();
        let first: spiffe::X509Context = next(&mut stream).await.unwrap();
        let (ids, leaves) = ids_and_leaves(&first);
        assert_eq!(ids, ["spiffe://lab.zeroth/app/api"]);
        let rotated: spiffe::X509Context = next(&mut stream).await.unwrap();
        let (ids2, leaves2) = ids_and_leaves(&rotated);
        assert_eq!(ids2, ids);
        assert_ne!(leaves2, leaves, "a new certificate, on the same stream");

        // A second entry appears in the stream; deleting it redacts it.
        let extra = n.entry("spiffe://lab.zeroth/app/extra", &["unix:uid:0"], &[]);
        let grown: spiffe::X509Context = next(&mut stream).await.unwrap();
        assert_eq!(
            ids_and_leaves(&grown).0,
            [
                "spiffe://lab.zeroth/app/api",
                "spiffe://lab.zeroth/app/extra"
            ]
        );
        let (ok, out) = run_zeroth(
            Command::new(env!("CARGO_BIN_EXE_zeroth"))
                .args(["entry", "delete", &extra, "--socket"])
                .arg(n.b.server.admin_socket()),
        );
        assert!(ok, "{out}");
        let shrunk: spiffe::X509Context = next(&mut stream).await.unwrap();
        assert_eq!(ids_and_leaves(&shrunk).0, ["spiffe://lab.zeroth/app/api"]);
        // With its last entry gone the caller has nothing: PermissionDenied.
        let (ok, out) = run_zeroth(
            Command::new(env!("CARGO_BIN_EXE_zeroth"))
                .args(["entry", "delete", &api, "--socket"])
                .arg(n.b.server.admin_socket()),
        );
        assert!(ok, "{out}");
        let end = next(&mut stream).await.unwrap_err();
        assert!(
            end.to_string()
                .contains("no registration entry matches uid 0"),
            "{end}"
        );
    });
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[test]
fn calls_without_the_header_or_over_a_socket_handed_on_by_an_exited_process_are_refused() {
    let mut n = ApiNode::start("");
    n.entry("spiffe://lab.zeroth/app/nobody", &["unix:uid:65534"], &[]);
    n.await_svid("spiffe://lab.zeroth/app/nobody");

    // grpcio straight, without the `workload.spiffe.io` header.
    let (ok, bare) = n.py_spiffe(65534, &["bare"]);
    assert!(ok, "{bare}");
    assert_eq!(bare["code"], "INVALID_ARGUMENT", "{bare}");
    assert_eq!(bare["details"], "security header missing from request");

    // A program connects, hands the connection to its child and exits
    // before the agent has looked at it (the agent is stopped meanwhile):
    // the pid it connected with names nobody now, and the child gets
    // nothing, over gRPC or JSON.
    for protocol in ["grpc", "json"] {
        signal(n.agent.pid(), "-STOP");
        let mut child = n
            .py_spiffe_command(65534, &["handoff", protocol])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        // The connecting process has exited (its child holds the socket).
        assert!(child.wait().unwrap().success());
        signal(n.agent.pid(), "-CONT");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).unwrap();
        let answer: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        let said = answer["message"]
            .as_str()
            .or(answer["error"].as_str())
            .unwrap_or_default();
        assert!(
            said.contains("has gone; its identity cannot be attested"),
            "{protocol}: {answer}"
        );
        assert!(answer.get("spiffe_id").is_none(), "{answer}");
    }
    // The same program, asking on its own: its identity.
    let (ok, itself) = n.py_spiffe(65534, &["x509"]);
    assert!(ok, "{itself}");
    assert_eq!(itself["spiffe_id"], "spiffe://lab.zeroth/app/nobody");
}

#[test]
fn a_revoked_nodes_programs_lose_their_svids_at_once() {
    let mut n = ApiNode::start("");
    n.entry(
        "spiffe://lab.zeroth/app/api",
        &["unix:uid:0"],
        &["--ttl", "1m"],
    );
    n.await_svid("spiffe://lab.zeroth/app/api");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = spiffe::WorkloadApiClient::connect_to(format!("unix:{}", n.socket.display()))
            .await
            .unwrap();
        let mut stream = client.stream_x509_contexts().await.unwrap();
        let first: spiffe::X509Context = next(&mut stream).await.unwrap();
        assert_eq!(ids_and_leaves(&first).0, ["spiffe://lab.zeroth/app/api"]);
        let (ok, out) = super::zeroth_node(&n.b.server, &["revoke", &n.node_id]);
        assert!(ok, "{out}");
        // At its next sync the agent hears that the node is revoked and
        // withdraws every workload SVID; the stream says so.
        let ended = next(&mut stream).await.unwrap_err();
        assert!(
            ended
                .to_string()
                .contains("no registration entry matches uid 0"),
            "{ended}"
        );
    });
    let refused = n.agent.expect(Duration::from_secs(5), |l| {
        l.starts_with("workload identities: ") && l.contains("403")
    });
    assert!(
        refused.contains("not approved") && refused.contains("every workload SVID is withdrawn"),
        "{refused}"
    );
}

/// An HTTP/2 frame header.
fn h2_frame(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// The agent's peak resident memory (VmHWM), KiB.
fn peak_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn an_hpack_bomb_on_the_workload_socket_is_refused_with_little_memory() {
    use std::io::{Read, Write};
    let mut n = ApiNode::start("");
    n.entry("spiffe://lab.zeroth/app/nobody", &["unix:uid:65534"], &[]);
    n.await_svid("spiffe://lab.zeroth/app/nobody");
    let before = peak_kib(n.agent.pid());
    // One 4,000-byte header put in the decoder's table, then a 64,000-byte
    // block of one-byte references to it: 256 MB once decoded.
    let mut bomb = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2_frame(&mut bomb, 0, 0x4, 0, 0);
    let mut entry = vec![
        0x40,
        0x01,
        b'x',
        0x7f,
        (3873 % 128) as u8 | 0x80,
        (3873 / 128) as u8,
    ];
    entry.extend(std::iter::repeat_n(b'v', 4000));
    h2_frame(&mut bomb, entry.len(), 0x1, 0x4, 1);
    bomb.extend_from_slice(&entry);
    for i in 0..4 {
        let (kind, flags) = match i {
            0 => (0x1, 0),
            3 => (0x9, 0x4),
            _ => (0x9, 0),
        };
        h2_frame(&mut bomb, 16_000, kind, flags, 3);
        bomb.extend(std::iter::repeat_n(0xbe, 16_000));
    }
    // Four callers at once.
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (socket, bomb) = (n.socket.clone(), bomb.clone());
            std::thread::spawn(move || {
                let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let _ = s.write_all(&bomb);
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest);
            })
        })
        .collect();
    for c in callers {
        c.join().unwrap();
    }
    let grew = peak_kib(n.agent.pid()).saturating_sub(before);
    assert!(
        grew < 32 * 1024,
        "the agent's peak memory grew by {grew} KiB"
    );
    // And it still serves.
    let (ok, v) = n.py_spiffe(65534, &["x509"]);
    assert!(ok, "{v}");
    assert_eq!(v["spiffe_id"], "spiffe://lab.zeroth/app/nobody");
}

/// Holds N connections to a socket open without sending anything; prints
/// "ready" once they are open, then how many of them the other end closed,
/// once it closed them all or after DEADLINE seconds.
const IDLE_HOLDER: &str = r#"
import resource, socket, sys, time, select
path, n, deadline = sys.argv[1], int(sys.argv[2]), time.time() + float(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
conns = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    conns.append(s)
print("ready", flush=True)
poller = select.poll()
for s in conns:
    poller.register(s, select.POLLIN | select.POLLHUP)
by_fd = {s.fileno(): s for s in conns}
closed = 0
while closed < n and time.time() < deadline:
    for fd, ev in poller.poll(max(0, int((deadline - time.time()) * 1000))):
        s = by_fd[fd]
        try:
            while s.recv(65536, socket.MSG_DONTWAIT):
                pass
        except BlockingIOError:
            continue  # an answer, and the connection still open
        except OSError:
            pass
        poller.unregister(fd)
        closed += 1
print(closed, flush=True)
"#;

/// CPU time `pid` has used, in clock ticks (user and system).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn a_uid_no_entry_admits_cannot_stall_the_workload_socket_with_idle_connections() {
    use std::io::BufRead;
    let mut n = ApiNode::start("");
    n.entry("spiffe://lab.zeroth/app/nobody", &["unix:uid:65534"], &[]);
    n.await_svid("spiffe://lab.zeroth/app/nobody");
    let python = zeroth::lab::tools::DEBIAN_PYTHON3.path().unwrap();
    // uid 65533, which no entry names, opens 1,100 connections and sends
    // nothing (more than the agent's 1,024 descriptors).
    let mut attacker = Command::new("setpriv")
        .args(["--reuid=65533", "--regid=65533", "--clear-groups"])
        .arg(python)
        .args(["-c", IDLE_HOLDER])
        .arg(&n.socket)
        .args(["1100", "10"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = std::io::BufReader::new(attacker.stdout.take().unwrap());
    let mut line = String::new();
    said.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    // Meanwhile the agent stays nearly idle, and a program an entry names
    // is served.
    let agent = n.agent.pid();
    let before = cpu_ticks(agent);
    let started = std::time::Instant::now();
    let (ok, v) = n.py_spiffe(65534, &["x509"]);
    let served_in = started.elapsed();
    assert!(ok, "{v}");
    assert_eq!(v["spiffe_id"], "spiffe://lab.zeroth/app/nobody");
    std::thread::sleep(Duration::from_secs(2).saturating_sub(served_in));
    let window = started.elapsed().as_secs_f64();
    let used = (cpu_ticks(agent) - before) as f64 / 100.0;
    eprintln!("served in {served_in:?}; the agent used {used:.2} s of CPU in {window:.1} s (py-spiffe's own call included)");
    assert!(
        served_in < Duration::from_secs(5),
        "served after {served_in:?}"
    );
    assert!(
        used / window < 0.1,
        "the agent used {used:.2} s of CPU in {window:.1} s"
    );
    // Every idle connection was closed by the agent: at once over the
    // uid's few slots, the rest within a second.
    line.clear();
    said.read_line(&mut line).unwrap();
    assert!(attacker.wait().unwrap().success());
    assert_eq!(line.trim(), "1100", "closed by the agent");
}
