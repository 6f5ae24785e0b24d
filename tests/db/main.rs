//! Dynamic database users end to end: a real zeroth server, a node enrolled
//! through a real swtpm, and real PostgreSQL and MariaDB servers reached
//! with the real psql and mariadb clients.

mod backup;
mod batch;
mod collisions;
mod contention;
mod expiry_load;
mod mariadb_accounts;
mod proxy;
mod retention;
mod unfinished;
mod workload_api;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use secrecy::ExposeSecret;
use zeroth::agent::enrol::{post_json, AgentError, Enrolment};
use zeroth::agent::{enrol, EnrolOptions, Outcome};
use zeroth::lab::{tools, LabDir, MariaDb, Postgres, SoftHsm, Swtpm, ZerothServer};
use zeroth::wire::db::{CredsRequest, CredsResponse};

const ROLES: &str = r#"
[[db_role]]
name = "app-ro"
connection = "pg"
schema = "public"
access = "read-only"
default_ttl = "10m"
max_ttl = "1h"
allow_groups = ["edge"]
renewal_statements = ["COMMENT ON ROLE {{name}} IS 'renewed by zeroth'"]

[[db_role]]
name = "shop-rw"
connection = "maria"
schema = "shop"
access = "read-write"
allow_groups = ["edge"]

[[db_role]]
name = "logged"
connection = "pg"
schema = "public"
access = "read-only"
allow_groups = ["edge"]
revocation_statements = ["SELECT count(*) FROM revocations"]

[[db_role]]
name = "maria-local"
connection = "maria"
schema = "shop"
allow_groups = ["edge"]
creation_statements = ["CREATE USER {{name}}@'127.0.0.1' IDENTIFIED BY PASSWORD {{password}}", "GRANT SELECT ON {{schema}}.* TO {{name}}@'127.0.0.1'"]

[[db_role]]
name = "someone-else"
connection = "pg"
schema = "public"
allow_spiffe = ["spiffe://lab.zeroth/node/not-this-one"]
"#;

struct Lab {
    tpm: Swtpm,
    hsm: SoftHsm,
    pg: Postgres,
    maria: MariaDb,
    server: ZerothServer,
    /// The server's `[[group]]` and role tables.
    groups: String,
    agent: LabDir,
    _roots: LabDir,
}

fn lab() -> Lab {
    let tpm = Swtpm::start().unwrap();
    let hsm = SoftHsm::start().unwrap();
    let pg = Postgres::start().unwrap();
    let maria = MariaDb::start().unwrap();
    let roots = LabDir::new("roots").unwrap();
    std::fs::copy(tpm.ca_root_pem(), roots.join("root.pem")).unwrap();
    let groups = format!(
        "[[group]]\nname = \"edge\"\nek_roots = \"{}\"\nek_intermediates = \"{}\"\nauto_approve = true\n{ROLES}",
        roots.path().display(),
        tpm.ca_intermediate_pem().display()
    );
    let server =
        ZerothServer::start(Path::new(env!("CARGO_BIN_EXE_zeroth")), &hsm, &groups).unwrap();
    let lab = Lab {
        agent: LabDir::new("agent").unwrap(),
        tpm,
        hsm,
        pg,
        maria,
        server,
        groups,
        _roots: roots,
    };
    assert!(matches!(
        enrol(&lab.options()).unwrap(),
        Outcome::Approved { .. }
    ));
    // Something for the roles to read and write.
    psql_as_superuser(&lab.pg, "CREATE TABLE greetings (id int PRIMARY KEY, text text); INSERT INTO greetings VALUES (1, 'hello')");
    lab.maria
        .query("CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, item TEXT); INSERT INTO shop.orders VALUES (1, 'tea')")
        .unwrap();
    lab
}

fn psql_as_superuser(pg: &Postgres, sql: &str) {
    let out = Command::new(tools::PSQL.path().unwrap())
        .arg(pg.conninfo(zeroth::lab::postgres::SUPERUSER, "postgres"))
        .args(["-XAtqc", sql])
        .env("PGPASSWORD", pg.password().expose_secret())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lab {
    fn options(&self) -> EnrolOptions {
        EnrolOptions {
            server: self.server.url().to_owned(),
            ca_bundle: self.server.bundle(),
            group: "edge".into(),
            tcti: self.tpm.tcti(),
            state_dir: self.agent.path().to_owned(),
            event_log: None,
        }
    }

    /// `zeroth <args>` against this server's admin socket, `stdin` fed in.
    fn zeroth(&self, args: &[&str], stdin: &str) -> (bool, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_zeroth"))
            .args(args)
            .arg("--socket")
            .arg(self.server.admin_socket())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// `zeroth db connection add` of the lab's PostgreSQL ("pg") or
    /// MariaDB ("maria") with TLS verified against `ca`.
    fn add_tls_connection(&self, name: &str, ca: &Path) -> (bool, String) {
        let (engine, port, user, password, dbname) = match name {
            "pg" => (
                "postgres",
                self.pg.port(),
                "postgres",
                self.pg.password(),
                "postgres",
            ),
            _ => (
                "mariadb",
                self.maria.port(),
                "root",
                self.maria.password(),
                "mysql",
            ),
        };
        self.zeroth(
            &[
                "db",
                "connection",
                "add",
                name,
                "--engine",
                engine,
                "--port",
                &port.to_string(),
                "--admin-user",
                user,
                "--dbname",
                dbname,
                "--tls-ca",
                ca.to_str().unwrap(),
            ],
            &format!("{}\n", password.expose_secret()),
        )
    }

    fn add_connections(&self) {
        let (ok, out) = self.zeroth(
            &[
                "db",
                "connection",
                "add",
                "pg",
                "--engine",
                "postgres",
                "--port",
                &self.pg.port().to_string(),
                "--admin-user",
                "postgres",
            ],
            &format!("{}\n", self.pg.password().expose_secret()),
        );
        assert!(ok, "{out}");
        let (ok, out) = self.zeroth(
            &[
                "db",
                "connection",
                "add",
                "maria",
                "--engine",
                "mariadb",
                "--port",
                &self.maria.port().to_string(),
                "--admin-user",
                "root",
                "--dbname",
                "mysql",
            ],
            &format!("{}\n", self.maria.password().expose_secret()),
        );
        assert!(ok, "{out}");
    }

    /// `n` mTLS clients of the enrolled node (its key stays in the TPM).
    fn node_clients(&self, n: usize) -> Vec<reqwest::blocking::Client> {
        let e = Enrolment::open(&self.tpm.tcti(), self.agent.path()).unwrap();
        let svid = std::fs::read_to_string(self.agent.join("svid.pem")).unwrap();
        (0..n)
            .map(|_| e.mtls_client(&self.server.bundle(), &svid).unwrap())
            .collect()
    }

    /// Credentials of `role` for the enrolled node, over mTLS.
    fn creds(&self, role: &str, ttl: Option<u64>) -> Result<CredsResponse, AgentError> {
        let e = Enrolment::open(&self.tpm.tcti(), self.agent.path()).unwrap();
        let svid = std::fs::read_to_string(self.agent.join("svid.pem")).unwrap();
        let http = e.mtls_client(&self.server.bundle(), &svid).unwrap();
        post_json(
            &http,
            &format!("{}/v1/db/creds/{role}", self.server.url()),
            &CredsRequest { ttl_seconds: ttl },
        )
    }

    /// Renews `lease` by `increment` seconds, as its holder, over mTLS.
    fn renew(&self, lease: &str, increment: u64) -> serde_json::Value {
        self.try_renew(lease, increment).unwrap()
    }

    fn try_renew(&self, lease: &str, increment: u64) -> Result<serde_json::Value, AgentError> {
        let e = Enrolment::open(&self.tpm.tcti(), self.agent.path()).unwrap();
        let svid = std::fs::read_to_string(self.agent.join("svid.pem")).unwrap();
        let http = e.mtls_client(&self.server.bundle(), &svid).unwrap();
        post_json(
            &http,
            &format!("{}/v1/leases/{lease}/renew", self.server.url()),
            &serde_json::json!({ "increment_seconds": increment }),
        )
    }

    fn give_back(&self, lease: &str) -> u16 {
        let e = Enrolment::open(&self.tpm.tcti(), self.agent.path()).unwrap();
        let svid = std::fs::read_to_string(self.agent.join("svid.pem")).unwrap();
        let http = e.mtls_client(&self.server.bundle(), &svid).unwrap();
        http.post(format!("{}/v1/leases/{lease}/revoke", self.server.url()))
            .send()
            .unwrap()
            .status()
            .as_u16()
    }
}

impl Lab {
    /// `zeroth db creds --config CONFIG ROLE --exec CLIENT…`, where the
    /// client prints "user:value"; asserts it ran and that the lease was
    /// given back when it exited. Returns (user, value).
    fn run_with_creds(&self, config: &Path, role: &str, client: &[&str]) -> (String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_zeroth"))
            .args(["db", "creds", "--config"])
            .arg(config)
            .args([role, "--exec"])
            .args(client)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (user, value) = stdout.trim().split_once(':').unwrap();
        let (ok, leases) = self.zeroth(&["lease", "list", "--json"], "");
        assert!(ok, "{leases}");
        assert_eq!(leases.trim(), "[]", "the lease outlived the client");
        (user.to_owned(), value.to_owned())
    }
}

fn refusal(e: AgentError) -> (u16, String) {
    match e {
        AgentError::Refused { status, reason } => (status, reason),
        other => panic!("expected a refusal, got {other}"),
    }
}

/// Opens an interactive session with `client`, proves it works, runs
/// `meanwhile`, has the holder give the lease back, then tries one more
/// query; returns what the client printed and how it ended.
fn session_across_revocation(
    lab: &Lab,
    c: &CredsResponse,
    mut client: Command,
    meanwhile: impl FnOnce(),
) -> std::process::Output {
    use std::io::BufRead;
    let mut session = client
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = session.stdin.take().unwrap();
    writeln!(stdin, "SELECT 'open';").unwrap();
    let mut line = String::new();
    std::io::BufReader::new(session.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "open");
    meanwhile();
    assert_eq!(lab.give_back(&c.lease_id), 204);
    writeln!(stdin, "SELECT 'still here';").unwrap();
    drop(stdin);
    let out = session.wait_with_output().unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("still here"),
        "the open session survived the revocation"
    );
    out
}

/// Logs in with psql as the issued user and runs `sql`.
fn psql(c: &CredsResponse, sql: &str) -> Result<String, String> {
    let out = Command::new(tools::PSQL.path().unwrap())
        .arg(format!(
            "host={} port={} user={} dbname={} sslmode=disable connect_timeout=5",
            c.host, c.port, c.username, c.database
        ))
        .args(["-XAtqc", sql])
        .env("PGPASSWORD", c.password.expose_secret())
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// An interactive mariadb client logged in as the issued user.
fn mariadb_session(c: &CredsResponse) -> Command {
    let mut client = Command::new(tools::MARIADB.path().unwrap());
    client
        .args([
            "--no-defaults",
            "--protocol=TCP",
            "-N",
            "-B",
            "--unbuffered",
        ])
        .arg(format!("--host={}", c.host))
        .arg(format!("--port={}", c.port))
        .arg(format!("--user={}", c.username))
        .env("MYSQL_PWD", c.password.expose_secret());
    client
}

/// Logs in with the mariadb client as the issued user and runs `sql`.
fn mariadb(c: &CredsResponse, sql: &str) -> Result<String, String> {
    let out = Command::new(tools::MARIADB.path().unwrap())
        .args([
            "--no-defaults",
            "--protocol=TCP",
            "-N",
            "-B",
            "--connect-timeout=5",
        ])
        .arg(format!("--host={}", c.host))
        .arg(format!("--port={}", c.port))
        .arg(format!("--user={}", c.username))
        .args(["-e", sql])
        .env("MYSQL_PWD", c.password.expose_secret())
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn postgres_users_work_until_revoked_and_their_open_sessions_end() {
    let lab = lab();
    lab.add_connections();
    let c = lab.creds("app-ro", None).unwrap();
    assert!(c.username.starts_with("zt_app_ro_"), "{}", c.username);
    assert!(c.username.len() <= 63);
    assert_eq!(psql(&c, "SELECT text FROM greetings").unwrap(), "hello");
    // Read-only: writing is refused by the database.
    assert!(psql(&c, "INSERT INTO greetings VALUES (2, 'x')")
        .unwrap_err()
        .contains("permission denied"));
    // The database itself holds the expiry.
    let until = {
        let out = Command::new(tools::PSQL.path().unwrap())
            .arg(lab.pg.conninfo(zeroth::lab::postgres::SUPERUSER, "postgres"))
            .args(["-XAtqc", &format!("SELECT extract(epoch FROM rolvaliduntil)::bigint FROM pg_roles WHERE rolname = '{}'", c.username)])
            .env("PGPASSWORD", lab.pg.password().expose_secret())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<i64>()
            .unwrap()
    };
    assert_eq!(until, c.expires);

    // An open session, then the holder gives the lease back.
    let mut client = Command::new(tools::PSQL.path().unwrap());
    client
        .arg(format!(
            "host={} port={} user={} dbname={} sslmode=disable",
            c.host, c.port, c.username, c.database
        ))
        .args(["-XAtq", "-v", "ON_ERROR_STOP=1"])
        .env("PGPASSWORD", c.password.expose_secret());
    let out = session_across_revocation(&lab, &c, client, || {});
    assert!(
        !out.status.success(),
        "the open session survived the revocation"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("still here"));
    let err = psql(&c, "SELECT 1").unwrap_err();
    assert!(
        err.contains("authentication failed") || err.contains("does not exist"),
        "{err}"
    );

    // Who may not ask, and what does not exist.
    let (status, reason) = refusal(lab.creds("someone-else", None).unwrap_err());
    assert_eq!(status, 403);
    assert!(reason.contains("may not use role someone-else"), "{reason}");
    let (status, _) = refusal(lab.creds("no-such-role", None).unwrap_err());
    assert_eq!(status, 404);

    // Neither the admin password nor an issued one is in the store or the logs.
    let db = std::fs::read(lab.server.database()).unwrap();
    let wal = std::fs::read(lab.server.database().with_extension("db-wal")).unwrap_or_default();
    let log = lab.server.log();
    for secret in [
        lab.pg.password().expose_secret(),
        c.password.expose_secret(),
    ] {
        let needle = secret.as_bytes();
        assert!(
            !db.windows(needle.len()).any(|w| w == needle),
            "a password is in zeroth.db"
        );
        assert!(
            !wal.windows(needle.len()).any(|w| w == needle),
            "a password is in the WAL"
        );
        assert!(!log.contains(secret), "a password is in the log");
    }
    // Each issuance and revocation is its own audit event.
    let kinds: Vec<String> = rusqlite::Connection::open(lab.server.database())
        .unwrap()
        .prepare("SELECT kind FROM audit WHERE kind LIKE 'db.%' ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        kinds,
        [
            "db.connection.added",
            "db.connection.added",
            "db.creds.issued",
            "db.creds.revoked"
        ]
    );
}

#[test]
fn mariadb_users_work_until_revoked_and_their_open_sessions_end() {
    let lab = lab();
    lab.add_connections();
    let c = lab.creds("shop-rw", Some(600)).unwrap();
    assert_eq!(c.engine, "mariadb");
    assert_eq!(mariadb(&c, "SELECT item FROM shop.orders").unwrap(), "tea");
    mariadb(&c, "INSERT INTO shop.orders VALUES (2, 'cake')").unwrap();
    // The database holds the expiry: a row the sweeping event reads.
    let expiry = lab
        .maria
        .query(&format!(
            "SELECT expires FROM zeroth.expiry WHERE user = '{}'",
            c.username
        ))
        .unwrap();
    assert_eq!(expiry.trim(), c.expires.to_string());
    let sweeper = lab
        .maria
        .query("SELECT STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = 'zeroth' AND EVENT_NAME = 'expire_users'")
        .unwrap();
    assert_eq!(sweeper.trim(), "ENABLED");

    let out = session_across_revocation(&lab, &c, mariadb_session(&c), || {});
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("still here"),
        "the open session survived"
    );
    let err = mariadb(&c, "SELECT 1").unwrap_err();
    assert!(err.contains("Access denied"), "{err}");
    let rows = lab
        .maria
        .query(&format!(
            "SELECT COUNT(*) FROM zeroth.expiry WHERE user = '{}'",
            c.username
        ))
        .unwrap();
    assert_eq!(rows.trim(), "0", "the expiry row went with the user");
}

#[test]
fn users_expire_on_both_engines_even_with_zeroth_killed() {
    let mut lab = lab();
    lab.add_connections();
    let pg = lab.creds("app-ro", Some(10)).unwrap();
    let maria = lab.creds("shop-rw", Some(10)).unwrap();
    psql(&pg, "SELECT 1").unwrap();
    mariadb(&maria, "SELECT 1").unwrap();
    lab.server.kill();
    // Nothing of zeroth runs now; the databases hold the expiry. Waiting
    // for the expiry is the point of this test.
    let expiry = SystemTime::UNIX_EPOCH + Duration::from_secs(pg.expires.max(maria.expires) as u64);
    if let Ok(left) = expiry.duration_since(SystemTime::now()) {
        std::thread::sleep(left + Duration::from_secs(2));
    }
    let err = psql(&pg, "SELECT 1").unwrap_err();
    assert!(err.contains("authentication failed"), "{err}");
    let err = mariadb(&maria, "SELECT 1").unwrap_err();
    assert!(err.contains("Access denied"), "{err}");

    // Back up, zeroth finds the leases due and closes them.
    lab.server.resume().unwrap();
    eventually(Duration::from_secs(20), || {
        let (ok, out) = lab.zeroth(&["lease", "list", "--json"], "");
        assert!(ok, "{out}");
        match out.trim() {
            "[]" => Ok(()),
            _ => Err(format!("leases still live: {out}")),
        }
    });
}

/// Polls `check` until it returns `Ok`, failing with its last `Err` after
/// `within`: for what the server does on its own schedule.
fn eventually<T>(within: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        match check() {
            Ok(v) => return v,
            Err(why) if std::time::Instant::now() >= deadline => panic!("{why}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Runs SQL as the PostgreSQL superuser with `password`; Err on failure.
fn psql_super_with(pg: &Postgres, password: &str, sql: &str) -> Result<String, String> {
    let out = Command::new(tools::PSQL.path().unwrap())
        .arg(pg.conninfo(zeroth::lab::postgres::SUPERUSER, "postgres"))
        .args(["-XAtqc", sql])
        .env("PGPASSWORD", password)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn after_rotate_root_nobody_knows_the_admin_password_and_a_dead_database_is_a_503() {
    let mut lab = lab();
    lab.add_connections();
    let old = lab.pg.password().expose_secret().to_owned();
    let (ok, out) = lab.zeroth(&["db", "rotate-root", "pg"], "");
    assert!(ok, "{out}");
    let err = psql_super_with(&lab.pg, &old, "SELECT 1").unwrap_err();
    assert!(err.contains("authentication failed"), "{err}");
    // zeroth still administers the database with the password only it knows.
    let c = lab.creds("app-ro", None).unwrap();
    assert_eq!(psql(&c, "SELECT text FROM greetings").unwrap(), "hello");
    let (ok, out) = lab.zeroth(&["db", "connection", "list"], "");
    assert!(ok && out.contains("pg ") && out.contains("yes"), "{out}");

    // The database goes away: a 503 naming the cause, and no lease left live.
    lab.pg.stop();
    let (status, reason) = refusal(lab.creds("app-ro", None).unwrap_err());
    assert_eq!(status, 503, "{reason}");
    assert!(
        reason.contains("PostgreSQL") || reason.contains("cannot reach"),
        "{reason}"
    );
    let (ok, out) = lab.zeroth(&["lease", "list", "--json"], "");
    assert!(ok, "{out}");
    let live: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(live.len(), 1, "only the first lease is live: {out}");
    assert_eq!(live[0]["id"], c.lease_id.as_str());
}

#[test]
fn rotate_root_interrupted_at_any_step_leaves_a_password_zeroth_knows() {
    let mut lab = lab();
    lab.add_connections();
    let old = lab.pg.password().expose_secret().to_owned();
    for step in ["rotate-root:pending-stored", "rotate-root:database-changed"] {
        lab.server
            .restart_with_env(&[("ZEROTH_CRASH_AT", step)])
            .unwrap();
        let (ok, out) = lab.zeroth(&["db", "rotate-root", "pg"], "");
        assert!(!ok, "{step}: {out}");
        eventually(Duration::from_secs(10), || match lab.server.exited() {
            true => Ok(()),
            false => Err(format!("the server did not stop at {step}")),
        });
        lab.server.restart_with_env(&[]).unwrap();
        // The restarted server reaches the database, with whichever
        // password the database holds.
        let c = lab.creds("app-ro", None).unwrap();
        assert_eq!(
            psql(&c, "SELECT text FROM greetings").unwrap(),
            "hello",
            "{step}"
        );
    }
    // The database took the new password at the second step: the old one
    // is dead, and the audit says the rotation was finished later.
    let err = psql_super_with(&lab.pg, &old, "SELECT 1").unwrap_err();
    assert!(err.contains("authentication failed"), "{err}");
    let finished = lab.server.audit_details("db.connection.rotated").unwrap();
    assert_eq!(finished.len(), 1, "{finished:?}");
    assert_eq!(finished[0]["finished"], "after an interruption");
    // And a rotation that runs through works from there.
    let (ok, out) = lab.zeroth(&["db", "rotate-root", "pg"], "");
    assert!(ok, "{out}");
    let c = lab.creds("app-ro", None).unwrap();
    assert_eq!(psql(&c, "SELECT text FROM greetings").unwrap(), "hello");
}

/// The zt_ users on the database behind `role`'s connection, sorted.
fn users_of(lab: &Lab, engine: &str) -> Vec<String> {
    let out = match engine {
        "postgres" => psql_super_with(
            &lab.pg,
            lab.pg.password().expose_secret(),
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, 'zt_') ORDER BY 1",
        )
        .unwrap(),
        _ => lab
            .maria
            .query("SELECT user FROM mysql.user WHERE user LIKE 'zt\\_%' ORDER BY 1")
            .unwrap(),
    };
    out.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("zt_"))
        .map(str::to_owned)
        .collect()
}

/// Once the server has settled, every zt_ user of `role` has an active
/// lease, every active lease a user, and no lease is left half-made.
fn ledger_matches_database(lab: &Lab, role: &str, engine: &str) -> i64 {
    let db = rusqlite::Connection::open(lab.server.database()).unwrap();
    eventually(Duration::from_secs(30), || {
        let unfinished: i64 = db
            .query_row(
                "SELECT COUNT(*) FROM leases WHERE role = ?1 AND state IN ('creating', 'revoking')",
                [role],
                |r| r.get(0),
            )
            .unwrap();
        let active: Vec<String> = db
            .prepare(
                "SELECT external_name FROM leases WHERE role = ?1 AND state = 'active' ORDER BY 1",
            )
            .unwrap()
            .query_map([role], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let users = users_of(lab, engine);
        match unfinished == 0 && users == active {
            true => Ok(()),
            false => Err(format!(
                "orphans remain: users {users:?}, active leases {active:?}, unfinished {unfinished}"
            )),
        }
    });
    db.query_row("SELECT COUNT(*) FROM leases WHERE role = ?1", [role], |r| {
        r.get(0)
    })
    .unwrap()
}

/// SIGKILLs the server 20 times at random moments while a client asks for
/// `role` credentials, restarting it each time.
fn kill_during_issuance(role: &str, engine: &str) {
    use rand::Rng;
    let mut lab = lab();
    lab.add_connections();
    let e = Enrolment::open(&lab.tpm.tcti(), lab.agent.path()).unwrap();
    let svid = std::fs::read_to_string(lab.agent.join("svid.pem")).unwrap();
    for round in 0..20 {
        let http = e.mtls_client(&lab.server.bundle(), &svid).unwrap();
        let url = format!("{}/v1/db/creds/{role}", lab.server.url());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let asking = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = post_json::<_, CredsResponse>(&http, &url, &CredsRequest::default());
                }
            })
        };
        std::thread::sleep(Duration::from_millis(rand::rng().random_range(20..300)));
        lab.server.kill();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        asking.join().unwrap();
        lab.server
            .resume()
            .unwrap_or_else(|err| panic!("round {round}: {err}"));
    }
    // After the last restart's sweep the ledger and the database agree.
    let total = ledger_matches_database(&lab, role, engine);
    assert!(total >= 20, "issuance was exercised: {total} leases");
}

#[test]
fn killing_zeroth_during_issuance_leaves_no_user_without_a_lease() {
    kill_during_issuance("app-ro", "postgres");
}

#[test]
fn killing_zeroth_during_mariadb_issuance_leaves_no_user_without_a_lease() {
    kill_during_issuance("shop-rw", "mariadb");
}

#[test]
fn clients_hanging_up_mid_request_under_load_leave_no_user_without_a_lease() {
    use rand::Rng;
    let lab = lab();
    lab.add_connections();
    // Eight clients, each giving up after a random few milliseconds: many
    // requests are cut between the database and the reply.
    let clients = lab.node_clients(8);
    // Rounds until some request was cut after its user was made (how the
    // cuts fall depends on timing; a loaded machine may need more).
    let (mut answered, mut cut, mut leases) = (0, 0, 0);
    for _round in 0..6 {
        let (round_answered, round_cut) = std::thread::scope(|s| {
            let handles: Vec<_> = clients
                .iter()
                .enumerate()
                .map(|(i, http)| {
                    let role = if i % 2 == 0 { "app-ro" } else { "shop-rw" };
                    let url = format!("{}/v1/db/creds/{role}", lab.server.url());
                    s.spawn(move || {
                        let (mut answered, mut cut) = (0, 0);
                        for _ in 0..25 {
                            let wait = Duration::from_millis(rand::rng().random_range(5..150));
                            match http
                                .post(&url)
                                .timeout(wait)
                                .json(&CredsRequest::default())
                                .send()
                            {
                                Ok(r) if r.status().is_success() => answered += 1,
                                Ok(r) => panic!("refused: {}", r.status()),
                                Err(e) if e.is_timeout() => cut += 1,
                                Err(e) => panic!("{e}"),
                            }
                        }
                        (answered, cut)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
        });
        answered += round_answered;
        cut += round_cut;
        leases = ledger_matches_database(&lab, "app-ro", "postgres")
            + ledger_matches_database(&lab, "shop-rw", "mariadb");
        if cut > 0 && leases > answered {
            break;
        }
    }
    println!("{answered} answered, {cut} cut off mid-request, {leases} leases");
    // More users were made than answers given: some requests were cut
    // after issuance had begun, and their users are still under a lease.
    assert!(
        cut > 0 && leases > answered,
        "no request was cut mid-issuance: {answered} answered, {cut} cut, {leases} leases"
    );
}

#[test]
fn leases_renew_revoke_by_prefix_and_with_their_node_and_strays_are_dropped() {
    let lab = lab();
    lab.add_connections();
    // Renewal moves the database's own expiry.
    let c = lab.creds("app-ro", Some(60)).unwrap();
    let renewed = lab.renew(&c.lease_id, 1800);
    let expires = renewed["expires"].as_i64().unwrap();
    assert!(expires > c.expires + 1000, "{renewed}");
    let until = psql_super_with(
        &lab.pg,
        lab.pg.password().expose_secret(),
        &format!(
            "SELECT extract(epoch FROM rolvaliduntil)::bigint FROM pg_roles WHERE rolname = '{}'",
            c.username
        ),
    )
    .unwrap();
    assert_eq!(until.parse::<i64>().unwrap(), expires);
    // …and ran the role's own renewal statements.
    let comment = psql_super_with(
        &lab.pg,
        lab.pg.password().expose_secret(),
        &format!(
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = '{}'",
            c.username
        ),
    )
    .unwrap();
    assert_eq!(comment, "renewed by zeroth");
    let m = lab.creds("shop-rw", Some(60)).unwrap();
    let renewed = lab.renew(&m.lease_id, 1800);
    let held = lab
        .maria
        .query(&format!(
            "SELECT expires FROM zeroth.expiry WHERE user = '{}'",
            m.username
        ))
        .unwrap();
    assert_eq!(
        held.trim().parse::<i64>().unwrap(),
        renewed["expires"].as_i64().unwrap(),
        "the database's expiry moved with the lease: {renewed}"
    );

    // Revoke by prefix: every lease of role app-ro.
    let second = lab.creds("app-ro", None).unwrap();
    let (ok, out) = lab.zeroth(&["lease", "revoke", "--prefix", "app-ro/"], "");
    assert!(ok && out.contains("2 lease(s) revoked"), "{out}");
    assert!(psql(&second, "SELECT 1").is_err());
    mariadb(&m, "SELECT 1").unwrap();

    // A user with zeroth's prefix that no lease accounts for is a stray.
    psql_super_with(
        &lab.pg,
        lab.pg.password().expose_secret(),
        "CREATE ROLE zt_stray_by_hand LOGIN PASSWORD 'x'",
    )
    .unwrap();
    let (ok, out) = lab.zeroth(&["db", "reconcile"], "");
    assert!(ok && out.contains("1 stray user(s) dropped"), "{out}");
    let left = psql_super_with(
        &lab.pg,
        lab.pg.password().expose_secret(),
        "SELECT count(*) FROM pg_roles WHERE rolname = 'zt_stray_by_hand'",
    )
    .unwrap();
    assert_eq!(left, "0");

    // Revoking the node revokes what it holds.
    let (ok, out) = lab.zeroth(&["lease", "list", "--json"], "");
    assert!(ok, "{out}");
    let live: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(live.len(), 1);
    let node = live[0]["holder"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let (ok, out) = lab.zeroth(&["node", "revoke", &node], "");
    assert!(ok, "{out}");
    eventually(Duration::from_secs(10), || match mariadb(&m, "SELECT 1") {
        Ok(_) => Err("the revoked node's user still works".to_owned()),
        Err(_) => Ok(()),
    });
}

#[test]
fn a_person_runs_psql_with_credentials_that_never_touch_disk() {
    let lab = lab();
    lab.add_connections();
    let config = lab.agent.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "server = \"{}\"\nca_bundle = \"{}\"\ngroup = \"edge\"\ntcti = \"{}\"\nstate_dir = \"{}\"\n",
            lab.server.url(),
            lab.server.bundle().display(),
            lab.tpm.tcti(),
            lab.agent.path().display()
        ),
    )
    .unwrap();
    let (user, text) = lab.run_with_creds(
        &config,
        "app-ro",
        &[
            "psql",
            "-XAtqc",
            "SELECT current_user || ':' || text FROM greetings",
        ],
    );
    assert!(user.starts_with("zt_app_ro_"), "{user}");
    assert_eq!(text, "hello");
}

#[test]
fn connections_can_require_tls_verified_against_the_databases_ca() {
    let lab = lab();
    // Another CA than the server's: refused, so the certificate is checked.
    let (ok, out) = lab.add_tls_connection("pg", lab.maria.tls_ca());
    assert!(!ok, "{out}");
    assert!(out.to_lowercase().contains("certificate"), "{out}");
    let (ok, out) = lab.add_tls_connection("maria", lab.pg.tls_ca());
    assert!(!ok, "{out}");

    let (ok, out) = lab.add_tls_connection("pg", lab.pg.tls_ca());
    assert!(ok, "{out}");
    let (ok, out) = lab.add_tls_connection("maria", lab.maria.tls_ca());
    assert!(ok, "{out}");
    let (ok, out) = lab.zeroth(&["db", "connection", "list"], "");
    assert_eq!(out.matches("verified").count(), 2, "{out}");
    assert!(ok);

    let c = lab.creds("app-ro", None).unwrap();
    assert_eq!(psql(&c, "SELECT text FROM greetings").unwrap(), "hello");
    // zeroth's own admin sessions on PostgreSQL are encrypted.
    let encrypted = psql_super_with(
        &lab.pg,
        lab.pg.password().expose_secret(),
        "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'zeroth'",
    )
    .unwrap();
    assert_eq!(encrypted, "t");
    let m = lab.creds("shop-rw", None).unwrap();
    assert_eq!(mariadb(&m, "SELECT item FROM shop.orders").unwrap(), "tea");
}

#[test]
fn a_failing_template_is_a_clear_error_and_leaves_nothing_behind() {
    let tpm = Swtpm::start().unwrap();
    let hsm = SoftHsm::start().unwrap();
    let pg = Postgres::start().unwrap();
    let roots = LabDir::new("roots").unwrap();
    std::fs::copy(tpm.ca_root_pem(), roots.join("root.pem")).unwrap();
    let groups = format!(
        "[[group]]\nname = \"edge\"\nek_roots = \"{}\"\nek_intermediates = \"{}\"\nauto_approve = true\n\n[[db_role]]\nname = \"broken\"\nconnection = \"pg\"\nschema = \"public\"\nallow_groups = [\"edge\"]\ncreation_statements = [\"CREATE ROLE {{{{name}}}} LOGIN PASSWORD {{{{password}}}}\", \"GRANT no_such_role TO {{{{name}}}}\"]\n",
        roots.path().display(),
        tpm.ca_intermediate_pem().display()
    );
    let server =
        ZerothServer::start(Path::new(env!("CARGO_BIN_EXE_zeroth")), &hsm, &groups).unwrap();
    let agent = LabDir::new("agent").unwrap();
    let opts = EnrolOptions {
        server: server.url().to_owned(),
        ca_bundle: server.bundle(),
        group: "edge".into(),
        tcti: tpm.tcti(),
        state_dir: agent.path().to_owned(),
        event_log: None,
    };
    assert!(matches!(enrol(&opts).unwrap(), Outcome::Approved { .. }));
    let answer = zeroth::server::admin::call(
        &server.admin_socket(),
        &zeroth::server::admin::AdminRequest {
            op: "db.connection.add".into(),
            params: serde_json::json!({"name": "pg", "engine": "postgres", "host": "127.0.0.1", "port": pg.port(), "dbname": "postgres", "admin_user": "postgres"}),
            secret: Some(pg.password().clone()),
            ..Default::default()
        },
    );
    assert!(answer.is_ok(), "{answer:?}");
    let e = Enrolment::open(&tpm.tcti(), agent.path()).unwrap();
    let svid = std::fs::read_to_string(agent.join("svid.pem")).unwrap();
    let http = e.mtls_client(&server.bundle(), &svid).unwrap();
    let (status, reason) = refusal(
        post_json::<_, CredsResponse>(
            &http,
            &format!("{}/v1/db/creds/broken", server.url()),
            &CredsRequest::default(),
        )
        .unwrap_err(),
    );
    assert_eq!(status, 502);
    assert!(
        reason.contains("statement 2 of the creation statements failed")
            && reason.contains("no_such_role"),
        "{reason}"
    );
    let users = psql_super_with(
        &pg,
        pg.password().expose_secret(),
        "SELECT count(*) FROM pg_roles WHERE starts_with(rolname, 'zt_')",
    )
    .unwrap();
    assert_eq!(users, "0", "a half-made user was left behind");
    let db = rusqlite::Connection::open(server.database()).unwrap();
    let states: Vec<String> = db
        .prepare("SELECT state FROM leases")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(states, ["revoked"]);
}

#[test]
fn an_admin_that_cannot_drop_what_it_makes_is_refused_when_added() {
    let lab = lab();
    // PostgreSQL 15: CREATEROLE makes roles, but DROP OWNED BY them needs
    // more, so every revocation would fail.
    lab.pg
        .run_sql("CREATE ROLE weak_admin LOGIN CREATEROLE PASSWORD 'weak-password'")
        .unwrap();
    let port = lab.pg.port().to_string();
    let (ok, out) = lab.zeroth(
        &[
            "db",
            "connection",
            "add",
            "weak",
            "--engine",
            "postgres",
            "--port",
            &port,
            "--admin-user",
            "weak_admin",
        ],
        "weak-password\n",
    );
    assert!(
        !ok && out.contains("can make a user but not remove it completely")
            && out.contains("SUPERUSER"),
        "{out}"
    );
    // The probe is not left behind, and the connection was not added.
    let left = lab
        .pg
        .run_sql("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'zt\\_probe%'")
        .unwrap();
    assert_eq!(left.trim(), "0");
    let (ok, list) = lab.zeroth(&["db", "connection", "list"], "");
    assert!(ok && !list.contains("weak"), "{list}");
    // The lab's superuser passes the same probe.
    lab.add_connections();
}
