//! Several zeroth servers on one PostgreSQL store and one HSM token: real
//! server processes, the lab's PostgreSQL (as the store and as a target of
//! dynamic users), its SoftHSM token, a node enrolled through swtpm.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use zeroth::agent::enrol::{self, post_json, AgentError, Enrolment};
use zeroth::lab::groups::{self as lab_groups, PG_READ_ONLY_ROLE};
use zeroth::lab::relay::Relay;
use zeroth::lab::{LabDir, Postgres, SoftHsm, Swtpm, ZerothServer};
use zeroth::wire::db::{CredsRequest, CredsResponse};
use zeroth::wire::enrol::{BeginResponse, FinishResponse};

mod rotation;
mod status;
mod trust;

struct Cluster {
    node: Node,
    hsm: SoftHsm,
    pg: Postgres,
    a: ZerothServer,
    b: ZerothServer,
    _dir: LabDir,
}

/// A machine with a TPM, enrolled by hand so each step can go to another
/// server.
struct Node {
    tpm: Swtpm,
    agent: LabDir,
}

/// The group trusting `tpm`'s manufacturer CA (keep the directory), and
/// the role.
fn groups(tpm: &Swtpm) -> (LabDir, String) {
    let (trust, group) = lab_groups::trusting("edge", &[tpm], true).unwrap();
    (trust, format!("{group}{PG_READ_ONLY_ROLE}"))
}

/// Two servers on one store (the lab PostgreSQL's database `zeroth`) and
/// one SoftHSM token; A starts first.
fn cluster() -> Cluster {
    let pg = Postgres::start().unwrap();
    cluster_on(pg, |store, _| store.to_owned())
}

/// As `cluster`, on `pg`; A reaches the store by the `[store]` TOML that
/// `store_of_a` makes of the shared one (another path to the same database).
fn cluster_on(pg: Postgres, store_of_a: impl FnOnce(&str, &Postgres) -> String) -> Cluster {
    let tpm = Swtpm::start().unwrap();
    let hsm = SoftHsm::start().unwrap();
    let dir = LabDir::new("cluster").unwrap();
    let store = pg.zeroth_store(&dir, "zeroth").unwrap().toml();
    let (_trust, groups) = groups(&tpm);
    let exe = Path::new(env!("CARGO_BIN_EXE_zeroth"));
    let store_a = store_of_a(&store, &pg);
    let a = ZerothServer::start_configured(exe, &hsm, &store_a, &groups, &[]).unwrap();
    let b = ZerothServer::start_configured(exe, &hsm, &store, &groups, &[]).unwrap();
    Cluster {
        node: Node {
            tpm,
            agent: LabDir::new("agent").unwrap(),
        },
        hsm,
        pg,
        a,
        b,
        _dir: dir,
    }
}

/// `zeroth <args>` against `server`'s admin socket, `stdin` fed in.
fn zeroth(server: &ZerothServer, args: &[&str], stdin: &str) -> (bool, String) {
    server.cli(args, stdin).unwrap()
}

impl Node {
    /// Enrols the node: the challenge from `begin_on`, the answer to
    /// `finish_on`. Returns the node id and the finish request (for
    /// replays).
    fn enrol_across(
        &self,
        begin_on: &ZerothServer,
        finish_on: &ZerothServer,
    ) -> (String, zeroth::wire::enrol::FinishRequest) {
        let client = enrol::client(&begin_on.bundle()).unwrap();
        let e = Enrolment::open(&self.tpm.tcti(), self.agent.path()).unwrap();
        let begin: BeginResponse = post_json(
            &client,
            &format!("{}/v1/enroll/begin", begin_on.url()),
            &e.begin_request("edge").unwrap(),
        )
        .unwrap();
        let finish = e.finish_request(&begin).unwrap();
        drop(e);
        let done: FinishResponse = post_json(
            &client,
            &format!("{}/v1/enroll/finish", finish_on.url()),
            &finish,
        )
        .unwrap();
        std::fs::write(self.agent.join("svid.pem"), done.svid.unwrap()).unwrap();
        (done.node_id, finish)
    }

    fn mtls(&self, server: &ZerothServer) -> reqwest::blocking::Client {
        let e = Enrolment::open(&self.tpm.tcti(), self.agent.path()).unwrap();
        let svid = std::fs::read_to_string(self.agent.join("svid.pem")).unwrap();
        e.mtls_client(&server.bundle(), &svid).unwrap()
    }

    fn creds(&self, on: &ZerothServer, ttl: Option<u64>) -> Result<CredsResponse, AgentError> {
        post_json(
            &self.mtls(on),
            &format!("{}/v1/db/creds/app-ro", on.url()),
            &CredsRequest { ttl_seconds: ttl },
        )
    }
}

fn add_connection(server: &ZerothServer, pg: &Postgres) {
    server.add_postgres("pg", pg).unwrap();
}

fn role_exists(pg: &Postgres, user: &str) -> bool {
    let out = pg
        .run_sql(&format!(
            "SELECT count(*) FROM pg_roles WHERE rolname = '{user}'"
        ))
        .unwrap();
    out.trim() == "1"
}

/// `zeroth audit verify` with `server`'s configuration succeeds.
fn audit_verifies(server: &ZerothServer, hsm: &SoftHsm) {
    let out = Command::new(env!("CARGO_BIN_EXE_zeroth"))
        .args(["audit", "verify", "--config"])
        .arg(server.config())
        .env("SOFTHSM2_CONF", hsm.conf())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("audit chain intact"),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn get(server: &ZerothServer, path: &str) -> Vec<u8> {
    let client = enrol::client(&server.bundle()).unwrap();
    let r = client
        .get(format!("{}{path}", server.url()))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.bytes().unwrap().to_vec()
}

/// Waits up to `limit` for `ready`; how long it took.
fn within(limit: Duration, what: &str, mut ready: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

#[test]
fn two_servers_on_one_store_serve_as_one() {
    let c = cluster();
    // One trust bundle, one set of SSH CAs, one KRL.
    assert_eq!(
        std::fs::read(c.a.bundle()).unwrap(),
        std::fs::read(c.b.bundle()).unwrap()
    );
    for path in [
        "/v1/bundle",
        "/v1/ssh/ca/user",
        "/v1/ssh/ca/host",
        "/v1/ssh/krl",
    ] {
        assert_eq!(get(&c.a, path), get(&c.b, path), "{path} differs");
    }
    // A challenge begun on A is finished on B, and replayed on neither.
    let (node, finish) = c.node.enrol_across(&c.a, &c.b);
    for s in [&c.a, &c.b] {
        let client = enrol::client(&s.bundle()).unwrap();
        let replay: Result<FinishResponse, _> =
            post_json(&client, &format!("{}/v1/enroll/finish", s.url()), &finish);
        match replay {
            Err(AgentError::Refused { status, reason }) => {
                assert!((400..500).contains(&status), "{status} {reason}")
            }
            other => panic!("a replayed challenge must be refused, got {other:?}"),
        }
    }
    // A lease issued on A is renewed and given back on B.
    add_connection(&c.a, &c.pg);
    let lease = c.node.creds(&c.a, None).unwrap();
    assert!(role_exists(&c.pg, &lease.username));
    let renewed: serde_json::Value = post_json(
        &c.node.mtls(&c.b),
        &format!("{}/v1/leases/{}/renew", c.b.url(), lease.lease_id),
        &serde_json::json!({ "increment_seconds": 600 }),
    )
    .unwrap();
    assert!(renewed["expires"].as_i64().unwrap() > 0, "{renewed}");
    let status = c
        .node
        .mtls(&c.b)
        .post(format!("{}/v1/leases/{}/revoke", c.b.url(), lease.lease_id))
        .send()
        .unwrap()
        .status();
    assert!(status.is_success(), "{status}");
    assert!(!role_exists(&c.pg, &lease.username));
    let (ok, leases) = zeroth(&c.a, &["lease", "list", "--json"], "");
    assert!(ok, "{leases}");
    assert_eq!(leases.trim(), "[]");
    // The node revoked on B is refused by A at once.
    let (ok, out) = zeroth(&c.b, &["node", "revoke", &node], "");
    assert!(ok, "{out}");
    match c.node.creds(&c.a, None) {
        Err(AgentError::Refused { status, .. }) => assert_eq!(status, 403),
        other => panic!("a revoked node must be refused on every server, got {other:?}"),
    }
    // One audit chain holds what both servers did, and verifies.
    audit_verifies(&c.b, &c.hsm);
    let kinds: Vec<String> = ["node.enrolled", "db.creds.issued", "node.revoked"]
        .into_iter()
        .filter(|k| c.a.audit_details(k).unwrap().is_empty())
        .map(String::from)
        .collect();
    assert!(
        kinds.is_empty(),
        "missing from the shared audit log: {kinds:?}"
    );
    // Exactly one server runs the cluster's jobs.
    assert!(
        c.a.runs_cluster_jobs() != c.b.runs_cluster_jobs(),
        "one leader, not two or none"
    );
}

#[test]
fn when_the_leader_dies_another_takes_over_and_revokes_what_falls_due() {
    let mut c = cluster();
    assert!(
        c.a.runs_cluster_jobs(),
        "the first server leads: {}",
        c.a.log()
    );
    assert!(!c.b.runs_cluster_jobs(), "the second waits: {}", c.b.log());
    c.node.enrol_across(&c.a, &c.a);
    add_connection(&c.a, &c.pg);
    let lease = c.node.creds(&c.a, Some(10)).unwrap();
    assert!(role_exists(&c.pg, &lease.username));
    let took =
        c.a.kill_and_wait_for(&c.b, Duration::from_secs(10))
            .unwrap();
    println!("leadership moved to B {took:?} after A was killed");
    // The lease A issued is revoked by B once it falls due: the user is
    // dropped and the revocation audited once.
    within(Duration::from_secs(20), "the revocation by B", || {
        !role_exists(&c.pg, &lease.username)
    });
    let revoked: Vec<serde_json::Value> =
        c.b.audit_details("db.creds.revoked")
            .unwrap()
            .into_iter()
            .filter(|d| d["user"] == lease.username.as_str())
            .collect();
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    let (ok, leases) = zeroth(&c.b, &["lease", "list", "--json"], "");
    assert!(ok, "{leases}");
    assert_eq!(leases.trim(), "[]");
}

#[test]
fn a_single_servers_sqlite_store_moves_into_postgres_whole() {
    let tpm = Swtpm::start().unwrap();
    let hsm = SoftHsm::start().unwrap();
    let pg = Postgres::start().unwrap();
    let dir = LabDir::new("migrate").unwrap();
    let (trust, groups) = groups(&tpm);
    let exe = Path::new(env!("CARGO_BIN_EXE_zeroth"));
    // A single server on SQLite, with a node, a lease and audit events.
    let mut single = ZerothServer::start(exe, &hsm, &groups).unwrap();
    let node = Node {
        tpm,
        agent: LabDir::new("agent").unwrap(),
    };
    let (node_id, _) = node.enrol_across(&single, &single);
    add_connection(&single, &pg);
    let lease = node.creds(&single, None).unwrap();
    single.stop();
    let target = pg.zeroth_store(&dir, "moved").unwrap();
    let migrate = || {
        Command::new(env!("CARGO_BIN_EXE_zeroth"))
            .args(["store", "migrate", "--config"])
            .arg(single.config())
            .args(["--to", &target.url, "--password-file"])
            .arg(&target.password_file)
            .env("SOFTHSM2_CONF", hsm.conf())
            .output()
            .unwrap()
    };
    let out = migrate();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("audit chain intact in PostgreSQL"), "{said}");
    // Once only: a store that holds anything is not written over.
    let again = migrate();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("is not empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // A server on the moved store knows the node and its lease, and the
    // node's SVID (same CA) is good there.
    let moved = ZerothServer::start_configured(exe, &hsm, &target.toml(), &groups, &[]).unwrap();
    assert_eq!(
        std::fs::read(single.bundle()).unwrap(),
        std::fs::read(moved.bundle()).unwrap(),
        "the CA moved with the store"
    );
    let (ok, nodes) = zeroth(&moved, &["node", "show", &node_id], "");
    assert!(ok && nodes.contains("approved"), "{nodes}");
    let (ok, leases) = zeroth(&moved, &["lease", "list", "--json"], "");
    assert!(ok && leases.contains(&lease.lease_id), "{leases}");
    let renewed: serde_json::Value = post_json(
        &node.mtls(&moved),
        &format!("{}/v1/leases/{}/renew", moved.url(), lease.lease_id),
        &serde_json::json!({ "increment_seconds": 600 }),
    )
    .unwrap();
    assert!(renewed["expires"].as_i64().unwrap() > 0, "{renewed}");
    audit_verifies(&moved, &hsm);
    // The store over TLS, verified against its CA: a server starts; with
    // another CA it does not, and says why.
    let tls = format!("{}ca_file = \"{}\"\n", target.toml(), pg.tls_ca().display());
    drop(ZerothServer::start_configured(exe, &hsm, &tls, &groups, &[]).unwrap());
    let wrong = format!(
        "{}ca_file = \"{}\"\n",
        target.toml(),
        trust.join("roots/root-0.pem").display()
    );
    let refused = ZerothServer::start_configured(exe, &hsm, &wrong, &groups, &[])
        .expect_err("a store whose certificate the CA did not sign is refused");
    assert!(refused.to_string().contains("certificate"), "{refused}");
    println!("refused as it should be: {refused}");
}

/// The node's enrolment options naming A, then B.
fn both_servers(c: &Cluster) -> zeroth::agent::EnrolOptions {
    zeroth::agent::EnrolOptions {
        server: format!("{},{}", c.a.url(), c.b.url()),
        ca_bundle: c.b.bundle(),
        group: "edge".into(),
        tcti: c.node.tpm.tcti(),
        state_dir: c.node.agent.path().to_owned(),
        event_log: None,
    }
}

/// An agent.toml for the node listing A, then B (as a list).
fn agent_toml_naming_both(c: &Cluster) -> std::path::PathBuf {
    let config = c.node.agent.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "server = [\"{}\", \"{}\"]\nca_bundle = \"{}\"\ngroup = \"edge\"\ntcti = \"{}\"\nstate_dir = \"{}\"\n",
            c.a.url(),
            c.b.url(),
            c.b.bundle().display(),
            c.node.tpm.tcti(),
            c.node.agent.path().display()
        ),
    )
    .unwrap();
    config
}

#[test]
fn agents_and_clients_fail_over_to_a_server_that_answers() {
    let mut c = cluster();
    add_connection(&c.a, &c.pg);
    // A is gone; the node lists A first.
    c.a.stop();
    let opts = both_servers(&c);
    assert!(matches!(
        zeroth::agent::enrol(&opts).unwrap(),
        zeroth::agent::Outcome::Approved { .. }
    ));
    zeroth::agent::renew(&opts).unwrap();
    // The stock command line too: `zeroth db creds` with both servers in
    // agent.toml (as a list) gets its user from B.
    let config = agent_toml_naming_both(&c);
    made_user(&c.pg, &db_creds("--config", &config));
}

/// `zeroth db creds app-ro` with `how` (`--config` or `--socket`) `path`.
fn db_creds(how: &str, path: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_zeroth"))
        .args(["db", "creds", how])
        .arg(path)
        .arg("app-ro")
        .output()
        .unwrap()
}

/// The user `zeroth db creds` printed (postgresql://USER:PASSWORD@…),
/// which must exist in `pg`.
fn made_user(pg: &Postgres, out: &std::process::Output) -> String {
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let user = said
        .trim()
        .strip_prefix("postgresql://")
        .and_then(|rest| rest.split(':').next())
        .unwrap()
        .to_owned();
    assert!(role_exists(pg, &user), "{user}");
    user
}

/// A server process paused (SIGSTOP) until dropped: it accepts
/// connections (the kernel does) but answers nothing, as a stalled server.
struct Paused(u32);

impl Paused {
    fn new(pid: u32) -> Self {
        let ok = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        Self(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

#[test]
fn agents_and_clients_fail_over_from_a_stalled_server_within_seconds() {
    let c = cluster();
    add_connection(&c.a, &c.pg);
    let stalled = Paused::new(c.a.pid().unwrap());
    let opts = both_servers(&c);
    let started = Instant::now();
    assert!(matches!(
        zeroth::agent::enrol(&opts).unwrap(),
        zeroth::agent::Outcome::Approved { .. }
    ));
    zeroth::agent::renew(&opts).unwrap();
    let enrolled_in = started.elapsed();
    // A new process, which again asks A first.
    let config = agent_toml_naming_both(&c);
    let creds_started = Instant::now();
    let out = db_creds("--config", &config);
    let creds_in = creds_started.elapsed();
    made_user(&c.pg, &out);
    println!("with A stalled: enrolled and renewed in {enrolled_in:?}, a user in {creds_in:?}");
    // Each waited for A once (a few seconds), not for A to come back.
    assert!(enrolled_in < Duration::from_secs(20), "{enrolled_in:?}");
    assert!(creds_in < Duration::from_secs(20), "{creds_in:?}");
    drop(stalled);
}

#[test]
fn agents_and_clients_fail_over_from_a_server_that_answers_503() {
    // A reaches the store through a relay; B directly. Cutting the relay
    // leaves A up and answering, with 503 (its store is away), while B
    // serves.
    let pg = Postgres::start().unwrap();
    let relay = Relay::start(SocketAddr::from((Ipv4Addr::LOCALHOST, pg.port()))).unwrap();
    let c = cluster_on(pg, |store, pg| {
        let through = store.replace(
            &format!("127.0.0.1:{}/", pg.port()),
            &format!("127.0.0.1:{}/", relay.port()),
        );
        assert_ne!(through, store, "A's store URL goes through the relay");
        through
    });
    add_connection(&c.a, &c.pg);
    let opts = both_servers(&c);
    assert!(matches!(
        zeroth::agent::enrol(&opts).unwrap(),
        zeroth::agent::Outcome::Approved { .. }
    ));
    // The node's agent, started while A serves: A is the server it asks.
    let config = agent_toml_naming_both(&c);
    let socket = c.node.agent.join("api.sock");
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str(&format!(
        "\n[workload_api]\nsocket = \"{}\"\n[workload_api.roles]\n{} = [\"app-ro\"]\n",
        socket.display(),
        rustix::process::geteuid().as_raw()
    ));
    std::fs::write(&config, toml).unwrap();
    let exe = Path::new(env!("CARGO_BIN_EXE_zeroth"));
    let mut agent = zeroth::lab::AgentProcess::start(exe, &config).unwrap();
    agent
        .expect(Duration::from_secs(30), |l| {
            l.starts_with("identity renewed: ")
        })
        .unwrap();

    relay.cut();
    let client = enrol::client(&c.a.bundle()).unwrap();
    let e = Enrolment::open(&c.node.tpm.tcti(), c.node.agent.path()).unwrap();
    let asked_a: Result<BeginResponse, AgentError> = post_json(
        &client,
        &format!("{}/v1/enroll/begin", c.a.url()),
        &e.begin_request("edge").unwrap(),
    );
    drop(e);
    assert!(
        matches!(asked_a, Err(AgentError::Refused { status: 503, .. })),
        "A answers 503 without its store: {asked_a:?}"
    );

    assert!(
        matches!(
            c.node.creds(&c.a, None),
            Err(AgentError::Refused { status: 503, .. })
        ),
        "A answers a user's request with 503 too"
    );
    // A program asks the agent; the agent asks A, then B.
    let started = Instant::now();
    let through_agent = db_creds("--socket", &socket);
    let via_agent_in = started.elapsed();
    // The command line on its own (a new process, asking A first) too.
    let started = Instant::now();
    let zeroth::agent::Outcome::Approved { .. } = zeroth::agent::enrol(&opts).unwrap() else {
        panic!("enrolment with A answering 503")
    };
    zeroth::agent::renew(&opts).unwrap();
    let direct = db_creds("--config", &config);
    let direct_in = started.elapsed();
    println!(
        "with A answering 503: a user through the agent in {via_agent_in:?}; enrolled, renewed and a user from the command line in {direct_in:?}"
    );
    // B made both users.
    made_user(&c.pg, &through_agent);
    made_user(&c.pg, &direct);
    assert!(via_agent_in < Duration::from_secs(20), "{via_agent_in:?}");
    assert!(direct_in < Duration::from_secs(20), "{direct_in:?}");
    agent.stop().unwrap();

    // A answers again once its store is back.
    relay.mend();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match c.node.creds(&c.a, None) {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                println!("A not serving yet: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("A did not serve again after its store came back: {e}"),
        }
    }
}

#[test]
fn the_store_fails_over_to_its_standby_keeping_every_acknowledged_lease() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    let tpm = Swtpm::start().unwrap();
    let hsm = SoftHsm::start().unwrap();
    let (mut primary, standby) = Postgres::start_replicated().unwrap();
    let target = Postgres::start().unwrap();
    let dir = LabDir::new("failover").unwrap();
    let db = primary.zeroth_store(&dir, "zeroth").unwrap();
    // Both database hosts; the servers use whichever takes writes.
    let store = format!(
        "[store]\nurl = \"postgres://zeroth@127.0.0.1:{},127.0.0.1:{}/zeroth?target_session_attrs=read-write\"\npassword_file = \"{}\"\n",
        primary.port(),
        standby.port(),
        db.password_file.display()
    );
    let (_trust, groups) = groups(&tpm);
    let exe = Path::new(env!("CARGO_BIN_EXE_zeroth"));
    let a = ZerothServer::start_configured(exe, &hsm, &store, &groups, &[]).unwrap();
    let b = ZerothServer::start_configured(exe, &hsm, &store, &groups, &[]).unwrap();
    let node = Node {
        tpm,
        agent: LabDir::new("agent").unwrap(),
    };
    node.enrol_across(&a, &b);
    add_connection(&a, &target);
    let clients = [(node.mtls(&a), a.url()), (node.mtls(&b), b.url())];
    // Workloads keep asking both servers for users while the database
    // fails over; every answer is noted with its time.
    let acknowledged: Mutex<Vec<(Instant, CredsResponse)>> = Mutex::new(Vec::new());
    let failed: Mutex<Vec<Instant>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let promoted_at = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                for (http, url) in &clients {
                    let r: Result<CredsResponse, AgentError> = post_json(
                        http,
                        &format!("{url}/v1/db/creds/app-ro"),
                        &CredsRequest { ttl_seconds: None },
                    );
                    match r {
                        Ok(c) => acknowledged.lock().unwrap().push((Instant::now(), c)),
                        Err(_) => failed.lock().unwrap().push(Instant::now()),
                    }
                }
            }
        });
        within(
            Duration::from_secs(20),
            "issuance before the failover",
            || acknowledged.lock().unwrap().len() >= 4,
        );
        primary.stop();
        standby.promote().unwrap();
        let promoted_at = Instant::now();
        within(
            Duration::from_secs(30),
            "issuance after the failover",
            || {
                acknowledged
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(t, _)| *t > promoted_at)
                    .count()
                    >= 4
            },
        );
        stop.store(true, Ordering::Relaxed);
        promoted_at
    });
    let acknowledged = acknowledged.into_inner().unwrap();
    let failed = failed.into_inner().unwrap();
    // What a workload saw: the longest time without a user issued.
    let mut times: Vec<Instant> = acknowledged.iter().map(|(t, _)| *t).collect();
    times.sort();
    let outage = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    println!(
        "{} users issued, {} requests failed; the longest time without issuance was {outage:?} (the primary stopped, the standby promoted {:?} before the end)",
        acknowledged.len(),
        failed.len(),
        promoted_at.elapsed()
    );
    // Every lease acknowledged is in the store on the new primary.
    let (ok, listed) = zeroth(&b, &["lease", "list", "--json"], "");
    assert!(ok, "{listed}");
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["external_name"].as_str().unwrap())
        .collect();
    for (_, c) in &acknowledged {
        assert!(
            names.contains(&c.username.as_str()),
            "lease {} of {} was acknowledged and lost",
            c.lease_id,
            c.username
        );
    }
    // No user on the target database without a lease.
    let users = target
        .run_sql("SELECT rolname FROM pg_roles WHERE rolcanlogin AND rolname <> 'postgres'")
        .unwrap();
    for user in users.lines().filter(|u| !u.is_empty()) {
        assert!(names.contains(&user), "user {user} has no lease");
    }
}
