//! The agent's database proxies: programs reach PostgreSQL and MariaDB
//! with the stock clients and no password anywhere; each connection gets
//! its own user, which exists while the connection is open and is gone
//! right after. Use is audited apart from issuance and revocation.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use zeroth::lab::{tools, AgentProcess, LabDir};

use super::{eventually, lab, psql_as_superuser, Lab};

/// A host without a TPM running `zeroth agent run` with `proxies` (TOML).
struct ProxyHost {
    dir: LabDir,
    agent: AgentProcess,
}

impl ProxyHost {
    fn start(lab: &Lab, proxies: &str) -> Self {
        let (ok, out) = lab.zeroth(&["token", "create", "--group", "edge", "--ttl", "5m"], "");
        assert!(ok, "{out}");
        let first = out.lines().next().unwrap().trim().to_owned();
        let dir = LabDir::new("proxy-host").unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let bootstrap = dir.join("bootstrap-token");
        std::fs::write(&bootstrap, &first).unwrap();
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "server = \"{}\"\nca_bundle = \"{}\"\ntoken_file = \"{}\"\nstate_dir = \"{}\"\nretry_max = \"1s\"\n\n{proxies}",
                lab.server.url(),
                lab.server.bundle().display(),
                bootstrap.display(),
                dir.join("state").display(),
            )
            .replace("@DIR@", &dir.path().display().to_string()),
        )
        .unwrap();
        let mut agent =
            AgentProcess::start(Path::new(env!("CARGO_BIN_EXE_zeroth")), &config).unwrap();
        agent
            .expect(Duration::from_secs(30), |l| {
                l.starts_with("token rotated: ")
            })
            .unwrap();
        Self { dir, agent }
    }

    /// One PostgreSQL proxy whose sessions' leases last 10 s.
    fn short_pg(lab: &Lab) -> Self {
        Self::start(
            lab,
            &SHORT_PG.replace("@UID@", &rustix::process::geteuid().as_raw().to_string()),
        )
    }

    fn pg_dir(&self) -> PathBuf {
        self.dir.join("pg")
    }

    fn maria_socket(&self) -> PathBuf {
        self.dir.join("maria.sock")
    }
}

const PROXIES: &str = r#"
[[proxy]]
name = "lab-pg"
role = "app-ro"
engine = "postgres"
listen = "@DIR@/pg"
port = 5432
tcp = "127.0.0.1:@TCP@"
allow_uids = [@UID@]
allow_units = ["zt-proxy.service"]

[[proxy]]
name = "lab-maria"
role = "shop-rw"
engine = "mariadb"
listen = "@DIR@/maria.sock"
allow_uids = [@UID@]
"#;

fn proxies(tcp: u16) -> String {
    PROXIES
        .replace("@UID@", &rustix::process::geteuid().as_raw().to_string())
        .replace("@TCP@", &tcp.to_string())
}

/// psql through the proxy's socket directory, no password given.
fn psql_via(dir: &Path) -> Command {
    let mut c = Command::new(tools::PSQL.path().unwrap());
    c.arg(format!(
        "host={} port=5432 dbname=postgres user=anyone connect_timeout=5",
        dir.display()
    ))
    .args(["-XAtq"])
    .env_remove("PGPASSWORD")
    .env_remove("PGPASSFILE");
    c
}

/// The mariadb client on the proxy's socket, no password given.
fn mariadb_via(socket: &Path) -> Command {
    let mut c = Command::new(tools::MARIADB.path().unwrap());
    c.args([
        "--no-defaults",
        "-N",
        "-B",
        "--unbuffered",
        "--connect-timeout=5",
    ])
    .arg(format!("--socket={}", socket.display()))
    .env_remove("MYSQL_PWD");
    c
}

/// An interactive client: statements in, one line out per statement.
struct Interactive {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    out: BufReader<std::process::ChildStdout>,
}

impl Interactive {
    fn start(mut c: Command) -> Self {
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().unwrap());
        Self { child, stdin, out }
    }

    fn ask(&mut self, sql: &str) -> String {
        writeln!(self.stdin.as_mut().unwrap(), "{sql}").unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim().to_owned()
    }

    /// Ends the input and waits; what was left on stdout and stderr.
    fn finish(mut self) -> (String, String) {
        drop(self.stdin.take());
        let mut rest = String::new();
        let _ = self.out.read_to_string(&mut rest);
        let mut err = String::new();
        let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
        let _ = self.child.wait();
        (rest, err)
    }
}

/// Every 40-character alphanumeric run in `text`: what an issued password
/// looks like.
fn candidates(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .flat_map(|run| {
            (0..=run.len().saturating_sub(40))
                .filter(move |_| run.len() >= 40)
                .map(move |i| run[i..i + 40].to_owned())
        })
        .collect()
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// Whether `password` matches PostgreSQL's SCRAM verifier (pg_authid).
fn scram_matches(verifier: &str, password: &str) -> bool {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let rest = verifier.strip_prefix("SCRAM-SHA-256$").unwrap();
    let (params, keys) = rest.split_once('$').unwrap();
    let (iterations, salt) = params.split_once(':').unwrap();
    let (stored, _) = keys.split_once(':').unwrap();
    let salt = b64.decode(salt).unwrap();
    let iterations: u32 = iterations.parse().unwrap();
    let mut u = hmac(
        password.as_bytes(),
        &[salt.as_slice(), &1u32.to_be_bytes()].concat(),
    );
    let mut salted = u.clone();
    for _ in 1..iterations {
        u = hmac(password.as_bytes(), &u);
        salted.iter_mut().zip(&u).for_each(|(a, b)| *a ^= b);
    }
    let client_key = hmac(&salted, b"Client Key");
    Sha256::digest(client_key).to_vec() == b64.decode(stored).unwrap()
}

/// Whether `password` matches a mysql_native_password hash ("*HEX").
fn native_matches(hash: &str, password: &str) -> bool {
    use sha1::Sha1;
    let twice = Sha1::digest(Sha1::digest(password.as_bytes()));
    hash.eq_ignore_ascii_case(&format!("*{}", hex::encode(twice)))
}

/// Every text a leaked password could sit in: the client's environment
/// and command line, the agent's state directory, its output.
fn places(client: u32, host: &ProxyHost) -> Vec<(String, String)> {
    let mut texts = Vec::new();
    for what in ["environ", "cmdline"] {
        let bytes = std::fs::read(format!("/proc/{client}/{what}")).unwrap();
        texts.push((
            format!("the client's {what}"),
            String::from_utf8_lossy(&bytes).replace('\0', "\n"),
        ));
    }
    let mut dirs = vec![host.dir.path().to_owned()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let p = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                dirs.push(p);
            } else if kind.is_file() {
                let bytes = std::fs::read(&p).unwrap_or_default();
                texts.push((
                    p.display().to_string(),
                    String::from_utf8_lossy(&bytes).into_owned(),
                ));
            }
        }
    }
    texts.push(("the agent's output".into(), host.agent.seen().join("\n")));
    texts
}

fn assert_nowhere(texts: &[(String, String)], matches: impl Fn(&str) -> bool) {
    for (place, text) in texts {
        for c in candidates(text) {
            assert!(!matches(&c), "the session's password is in {place}");
        }
    }
}

fn pg_user_exists(lab: &Lab, user: &str) -> bool {
    let out = super::psql_super_with(
        &lab.pg,
        lab.pg.password().expose_secret(),
        &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{user}'"),
    )
    .unwrap();
    out == "1"
}

fn maria_user_exists(lab: &Lab, user: &str) -> bool {
    lab.maria
        .query(&format!(
            "SELECT count(*) FROM mysql.user WHERE user = '{user}'"
        ))
        .unwrap()
        .trim()
        == "1"
}

#[test]
fn programs_use_both_databases_through_the_proxies_and_never_hold_a_password() {
    let lab = lab();
    lab.add_connections();
    let tcp = zeroth::lab::ports::free_port().unwrap();
    // The test's password checks recognise a real password against the
    // databases' own verifiers (PostgreSQL's SCRAM, MariaDB's native hash).
    let known = "K".repeat(40);
    psql_as_superuser(
        &lab.pg,
        &format!("CREATE ROLE probe LOGIN PASSWORD '{known}'"),
    );
    let probe = super::psql_super_with(
        &lab.pg,
        lab.pg.password().expose_secret(),
        "SELECT rolpassword FROM pg_authid WHERE rolname = 'probe'",
    )
    .unwrap();
    assert!(scram_matches(&probe, &known) && !scram_matches(&probe, &"L".repeat(40)));
    let probe = lab
        .maria
        .query(&format!("SELECT PASSWORD('{known}')"))
        .unwrap();
    assert!(native_matches(probe.trim(), &known) && !native_matches(probe.trim(), &"L".repeat(40)));
    assert_eq!(candidates(&format!("x={known};")), vec![known.clone()]);
    let host = ProxyHost::start(&lab, &proxies(tcp));
    assert!(
        host.agent
            .seen()
            .iter()
            .any(|l| l.starts_with("proxy lab-maria (mariadb, role shop-rw) on ")),
        "{:?}",
        host.agent.seen()
    );

    // An open psql session: its own user, there while it is open.
    let mut session = Interactive::start(psql_via(&host.pg_dir()));
    let user = session.ask("SELECT current_user;");
    assert!(user.starts_with("zt_app_ro_"), "{user}");
    assert_eq!(session.ask("SELECT text FROM greetings;"), "hello");
    assert!(pg_user_exists(&lab, &user));
    let verifier = super::psql_super_with(
        &lab.pg,
        lab.pg.password().expose_secret(),
        &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{user}'"),
    )
    .unwrap();
    assert_nowhere(&places(session.child.id(), &host), |c| {
        scram_matches(&verifier, c)
    });

    // The same program's second connection is another user.
    let out = psql_via(&host.pg_dir())
        .args(["-c", "SELECT current_user"])
        .output()
        .unwrap();
    let second = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        second.starts_with("zt_app_ro_") && second != user,
        "{second} {out:?}"
    );

    // Over loopback TCP the caller is known by its uid.
    let out = Command::new(tools::PSQL.path().unwrap())
        .arg(format!(
            "host=127.0.0.1 port={tcp} dbname=postgres sslmode=disable"
        ))
        .args(["-XAtqc", "SELECT text FROM greetings"])
        .env_remove("PGPASSWORD")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello",
        "{out:?}"
    );

    // Closing the session drops its user within a second.
    let (_, err) = session.finish();
    let closed = Instant::now();
    eventually(Duration::from_secs(5), || {
        match pg_user_exists(&lab, &user) {
            false => Ok(()),
            true => Err(format!("{user} outlived its session ({err})")),
        }
    });
    let gone_after = closed.elapsed();
    assert!(
        gone_after < Duration::from_secs(1),
        "gone after {gone_after:?}"
    );

    // MariaDB: the same, with the stock client on the proxy's socket.
    let mut session = Interactive::start(mariadb_via(&host.maria_socket()));
    let line = session.ask("SELECT CURRENT_USER(), item FROM shop.orders;");
    let (who, item) = line.split_once('\t').unwrap();
    let muser = who.split('@').next().unwrap().to_owned();
    assert!(muser.starts_with("zt_shop_rw_"), "{line}");
    assert_eq!(item, "tea");
    assert!(maria_user_exists(&lab, &muser));
    let hash = lab
        .maria
        .query(&format!(
            "SELECT DISTINCT authentication_string FROM mysql.user WHERE user = '{muser}'"
        ))
        .unwrap();
    assert_nowhere(&places(session.child.id(), &host), |c| {
        native_matches(hash.trim(), c)
    });
    let _ = session.finish();
    eventually(Duration::from_secs(5), || {
        match maria_user_exists(&lab, &muser) {
            false => Ok(()),
            true => Err(format!("{muser} outlived its session")),
        }
    });

    // Another uid is refused with each protocol's own error.
    let as_nobody = |mut c: Command| {
        let program = c.get_program().to_owned();
        let args: Vec<_> = c.get_args().map(ToOwned::to_owned).collect();
        c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(program)
            .args(args)
            .output()
            .unwrap()
    };
    let out = as_nobody({
        let mut c = psql_via(&host.pg_dir());
        c.args(["-c", "SELECT 1"]);
        c
    });
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("FATAL") && err.contains("zeroth proxy lab-pg refuses uid 65534 pid "),
        "{err}"
    );
    let out = as_nobody({
        let mut c = mariadb_via(&host.maria_socket());
        c.args(["-e", "SELECT 1"]);
        c
    });
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ERROR 1045 (28000)")
            && err.contains("zeroth proxy lab-maria refuses uid 65534"),
        "{err}"
    );

    // Malformed start-up bytes: that connection gets an error, the proxy
    // goes on serving.
    let socket = host.pg_dir().join(".s.PGSQL.5432");
    let mut raw = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    raw.write_all(&[0, 0, 0, 9, 0, 9, 0, 0, 0]).unwrap();
    let mut answer = Vec::new();
    raw.read_to_end(&mut answer).unwrap();
    assert_eq!(answer.first(), Some(&b'E'), "{answer:?}");
    assert!(String::from_utf8_lossy(&answer).contains("08P01"));
    let out = psql_via(&host.pg_dir())
        .args(["-c", "SELECT 2"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    let mut raw = std::os::unix::net::UnixStream::connect(host.maria_socket()).unwrap();
    let mut greeting = [0u8; 4];
    raw.read_exact(&mut greeting).unwrap();
    let mut rest =
        vec![0u8; u32::from_le_bytes([greeting[0], greeting[1], greeting[2], 0]) as usize];
    raw.read_exact(&mut rest).unwrap();
    raw.write_all(&[2, 0, 0, 1, 0xff, 0xff]).unwrap();
    let mut answer = Vec::new();
    raw.read_to_end(&mut answer).unwrap();
    assert_eq!(answer.get(4), Some(&0xff), "an ERR packet: {answer:?}");
    let out = mariadb_via(&host.maria_socket())
        .args(["-e", "SELECT 3"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3", "{out:?}");

    // Use, apart from issuance and revocation: one opened and one closed
    // event per session, naming the program.
    let sessions = 6;
    let opened = eventually(Duration::from_secs(10), || {
        let e = lab.server.audit_details("db.session.opened").unwrap();
        let c = lab.server.audit_details("db.session.closed").unwrap();
        if e.len() == sessions && c.len() == sessions {
            Ok((e, c))
        } else {
            Err(format!(
                "{} opened and {} closed of {sessions}",
                e.len(),
                c.len()
            ))
        }
    });
    let me = rustix::process::geteuid().as_raw();
    let first = opened
        .0
        .iter()
        .find(|d| d["user"] == user.as_str())
        .unwrap();
    assert_eq!(first["proxy"], "lab-pg");
    assert_eq!(first["role"], "app-ro");
    assert_eq!(first["workload"]["uid"], me);
    let closed = opened
        .1
        .iter()
        .find(|d| d["user"] == user.as_str())
        .unwrap();
    assert!(
        closed["bytes_from_client"].as_u64().unwrap() > 0,
        "{closed}"
    );
    assert!(closed["bytes_to_client"].as_u64().unwrap() > 0, "{closed}");
    assert!(closed["duration_ms"].as_u64().is_some(), "{closed}");
    let issued = lab.server.audit_details("db.creds.issued").unwrap();
    let this = issued.iter().find(|d| d["user"] == user.as_str()).unwrap();
    assert!(
        this["workload"]
            .as_str()
            .unwrap()
            .ends_with("via proxy lab-pg"),
        "{this}"
    );
    let (ok, leases) = lab.zeroth(&["lease", "list", "--json"], "");
    assert!(ok && leases.trim() == "[]", "{leases}");
}

fn lease_of(lab: &Lab, user: &str) -> Option<serde_json::Value> {
    let (ok, out) = lab.zeroth(&["lease", "list", "--json"], "");
    assert!(ok, "{out}");
    let leases: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    leases.into_iter().find(|l| l["external_name"] == user)
}

const SHORT_PG: &str = r#"
[[proxy]]
name = "short-pg"
role = "app-ro"
engine = "postgres"
listen = "@DIR@/pg"
allow_uids = [@UID@]
ttl = "10s"
"#;

#[test]
fn a_session_outlives_its_lease_ttl_answers_ctrl_c_and_ends_when_its_lease_is_revoked() {
    let lab = lab();
    lab.add_connections();
    let host = ProxyHost::short_pg(&lab);
    let mut session = Interactive::start(psql_via(&host.pg_dir()));
    let user = session.ask("SELECT current_user;");
    let first = lease_of(&lab, &user).unwrap();
    let first_expiry = first["expires"].as_i64().unwrap();
    // Past the first expiry the lease was renewed and the session works.
    let renewed = eventually(Duration::from_secs(20), || {
        let l = lease_of(&lab, &user).ok_or_else(|| "the lease is gone".to_owned())?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        match l["expires"].as_i64().unwrap() > first_expiry && now > first_expiry + 1 {
            true => Ok(l),
            false => Err(format!("not renewed past {first_expiry}: {l}")),
        }
    });
    assert_eq!(renewed["state"], "active");
    assert_eq!(session.ask("SELECT 'alive';"), "alive");

    // Ctrl-C: psql's cancel goes through the proxy to the right backend.
    writeln!(session.stdin.as_mut().unwrap(), "SELECT pg_sleep(30);").unwrap();
    let backend = eventually(Duration::from_secs(5), || {
        super::psql_super_with(
            &lab.pg,
            lab.pg.password().expose_secret(),
            &format!("SELECT pid FROM pg_stat_activity WHERE usename = '{user}' AND query LIKE 'SELECT pg_sleep%' AND state = 'active'"),
        )
        .ok()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| "the sleep has not started".to_owned())
    });
    let pressed = Instant::now();
    let pid = rustix::process::Pid::from_raw(session.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    // psql reading a pipe stops after a cancel; at the terminal it would
    // prompt again. Either way the statement ends now, not in 30 s.
    let (_, err) = session.finish();
    assert!(
        pressed.elapsed() < Duration::from_secs(2),
        "{:?}",
        pressed.elapsed()
    );
    assert!(
        err.contains("canceling statement due to user request"),
        "backend {backend}: {err}"
    );

    // The operator revokes a session's lease: the live session ends at once.
    let mut session = Interactive::start(psql_via(&host.pg_dir()));
    let user = session.ask("SELECT current_user;");
    let lease = lease_of(&lab, &user).unwrap();
    let (ok, out) = lab.zeroth(&["lease", "revoke", lease["id"].as_str().unwrap()], "");
    assert!(ok, "{out}");
    writeln!(session.stdin.as_mut().unwrap(), "SELECT 'still';").unwrap();
    let (rest, err) = session.finish();
    assert!(!rest.contains("still"), "{rest}");
    assert!(
        err.contains("terminat") || err.contains("closed"),
        "the session did not end: {err}"
    );
    assert!(!pg_user_exists(&lab, &user));
}

#[test]
fn with_the_server_down_open_sessions_go_on_new_ones_are_told_why_and_use_events_wait_across_an_agent_restart(
) {
    let mut lab = lab();
    lab.add_connections();
    let host = ProxyHost::short_pg(&lab);
    let mut open = Interactive::start(psql_via(&host.pg_dir()));
    let user = open.ask("SELECT current_user;");
    // Its opening is on record before the server goes away.
    eventually(Duration::from_secs(10), || {
        let n = lab.server.audit_details("db.session.opened").unwrap().len();
        (n == 1).then_some(()).ok_or(format!("{n} opened events"))
    });
    lab.server.stop();
    assert_eq!(open.ask("SELECT 'still here';"), "still here");
    let out = psql_via(&host.pg_dir())
        .args(["-c", "SELECT 1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("FATAL")
            && err.contains("zeroth proxy short-pg: no database user")
            && err.contains("unreachable"),
        "{err}"
    );
    // Closed while the server is away: its events wait on the agent's disk.
    let _ = open.finish();
    let queue = host.dir.join("state").join("session-events");
    eventually(Duration::from_secs(5), || {
        let n = std::fs::read_dir(&queue).map(|d| d.count()).unwrap_or(0);
        (n == 1).then_some(()).ok_or(format!("{n} events queued"))
    });
    // The agent may be stopped while it still writes the event (a `.tmp`
    // file): it finishes the write before it exits, and the next start
    // queues it.
    // The agent restarts meanwhile: the queue is on its disk.
    let ProxyHost { dir, agent } = host;
    agent.stop().unwrap();
    assert_eq!(std::fs::read_dir(&queue).unwrap().count(), 1);
    lab.server.resume().unwrap();
    let mut agent = AgentProcess::start(
        Path::new(env!("CARGO_BIN_EXE_zeroth")),
        &dir.join("agent.toml"),
    )
    .unwrap();
    agent
        .expect(Duration::from_secs(30), |l| {
            l.starts_with("token rotated: ")
        })
        .unwrap();
    let host = ProxyHost { dir, agent };
    let closed = eventually(Duration::from_secs(60), || {
        let c = lab.server.audit_details("db.session.closed").unwrap();
        c.into_iter()
            .find(|d| d["user"] == user.as_str())
            .ok_or_else(|| {
                let queued: Vec<_> = std::fs::read_dir(&queue)
                    .map(|d| d.flatten().map(|e| e.file_name()).collect())
                    .unwrap_or_default();
                format!(
                    "the closed event has not arrived; queued: {queued:?}; the agent said:\n{}",
                    host.agent.seen().join("\n")
                )
            })
    });
    assert_eq!(closed["proxy"], "short-pg");
    assert_eq!(
        lab.server.audit_details("db.session.opened").unwrap().len(),
        1
    );
    // The user that could not be given back ends with its lease (10 s),
    // by the server's revoker and by PostgreSQL's VALID UNTIL.
    eventually(Duration::from_secs(30), || {
        match pg_user_exists(&lab, &user) {
            false => Ok(()),
            true => Err(format!("{user} outlived its lease")),
        }
    });

    // The agent killed outright mid-session: nothing gives the user back,
    // and still it does not outlive its lease.
    let mut open = Interactive::start(psql_via(&host.pg_dir()));
    let user = open.ask("SELECT current_user;");
    let pid = rustix::process::Pid::from_raw(host.agent.pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    let killed = Instant::now();
    let _ = open.finish();
    eventually(Duration::from_secs(30), || {
        match pg_user_exists(&lab, &user) {
            false => Ok(()),
            true => Err(format!("{user} outlived its lease after the agent died")),
        }
    });
    assert!(
        killed.elapsed() < Duration::from_secs(25),
        "{:?}",
        killed.elapsed()
    );
}

#[test]
fn the_proxy_reaches_the_database_over_tls_verified_against_its_ca_only() {
    let lab = lab();
    let c = zeroth::wire::db::CredsResponse {
        lease_id: "none".into(),
        username: "postgres".into(),
        password: lab.pg.password().expose_secret().to_owned().into(),
        expires: 0,
        engine: "postgres".into(),
        host: "127.0.0.1".into(),
        port: lab.pg.port(),
        database: "postgres".into(),
        tls_ca: Some(std::fs::read_to_string(lab.pg.tls_ca()).unwrap()),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    use zeroth::agent::proxy::postgres::upstream;
    let addr = format!("127.0.0.1:{}", lab.pg.port());
    rt.block_on(async {
        let mut up = upstream::connect(&c, &addr).await.unwrap();
        upstream::authenticate(
            &mut up,
            &c,
            &[("application_name".into(), "proxy-tls".into())],
        )
        .await
        .unwrap();
    });
    let wrong = zeroth::wire::db::CredsResponse {
        tls_ca: Some(std::fs::read_to_string(lab.maria.tls_ca()).unwrap()),
        ..c
    };
    let e = rt
        .block_on(upstream::connect(&wrong, &addr))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("TLS to the database") && e.to_lowercase().contains("certificate"),
        "{e}"
    );
}

const DRIVERS: &str = r#"
import sys, psycopg2, pymysql
pg = psycopg2.connect(host=sys.argv[1], port=5432, dbname="postgres")
cur = pg.cursor()
cur.execute("SELECT current_user, text FROM greetings")
print(*cur.fetchone())
pg.close()
my = pymysql.connect(unix_socket=sys.argv[2], database="shop")
cur = my.cursor()
cur.execute("SELECT CURRENT_USER(), item FROM orders")
print(*cur.fetchone())
my.close()
"#;

#[test]
fn python_programs_use_debians_drivers_through_the_proxies_unchanged() {
    let lab = lab();
    lab.add_connections();
    let tcp = zeroth::lab::ports::free_port().unwrap();
    let host = ProxyHost::start(&lab, &proxies(tcp));
    let out = Command::new(tools::DEBIAN_PYTHON3.path().unwrap())
        .args(["-c", DRIVERS])
        .arg(host.pg_dir())
        .arg(host.maria_socket())
        .env_remove("PGPASSWORD")
        .env_remove("MYSQL_PWD")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{} (needs python3-psycopg2 and python3-pymysql: make deps)",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("zt_app_ro_") && lines[0].ends_with(" hello"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("zt_shop_rw_") && lines[1].ends_with(" tea"),
        "{stdout}"
    );
    eventually(Duration::from_secs(5), || {
        let (ok, leases) = lab.zeroth(&["lease", "list", "--json"], "");
        (ok && leases.trim() == "[]")
            .then_some(())
            .ok_or(format!("leases left: {leases}"))
    });
}

#[test]
fn proxied_sessions_reach_databases_that_require_tls_encrypted() {
    let lab = lab();
    for (name, ca) in [("pg", lab.pg.tls_ca()), ("maria", lab.maria.tls_ca())] {
        let (ok, out) = lab.add_tls_connection(name, ca);
        assert!(ok, "{out}");
    }
    let tcp = zeroth::lab::ports::free_port().unwrap();
    let host = ProxyHost::start(&lab, &proxies(tcp));
    let out = psql_via(&host.pg_dir())
        .args([
            "-c",
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t", "{out:?}");
    let out = mariadb_via(&host.maria_socket())
        .args(["-e", "SHOW SESSION STATUS LIKE 'Ssl_cipher'"])
        .output()
        .unwrap();
    let cipher = String::from_utf8_lossy(&out.stdout);
    let cipher = cipher
        .trim()
        .strip_prefix("Ssl_cipher")
        .unwrap_or_default()
        .trim();
    assert!(!cipher.is_empty(), "{out:?}");
}

const ENTRY_PG: &str = r#"
[workload_api]
socket = "@DIR@/api.sock"
entry_refresh = "1s"

[[proxy]]
name = "entry-pg"
role = "app-ro"
engine = "postgres"
listen = "@DIR@/pg"
"#;

/// psql through `dir` as `uid`: (succeeded, stdout, stderr).
fn psql_as(uid: u32, dir: &Path, sql: &str) -> (bool, String, String) {
    let c = psql_via(dir);
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
        ])
        .arg(c.get_program())
        .args(c.get_args())
        .args(["-c", sql])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

#[test]
fn a_registration_entry_naming_the_role_admits_its_programs_to_the_proxy() {
    let lab = lab();
    lab.add_connections();
    let mut host = ProxyHost::start(&lab, ENTRY_PG);
    let (ok, _, err) = psql_as(65534, &host.pg_dir(), "SELECT current_user");
    assert!(!ok);
    assert!(
        err.contains("zeroth proxy entry-pg refuses uid 65534 pid ")
            && err.contains("registration entry names role app-ro"),
        "{err}"
    );
    let (ok, out) = lab.zeroth(
        &[
            "entry",
            "create",
            "--group",
            "edge",
            "--spiffe-id",
            "spiffe://lab.zeroth/app/reporting",
            "--selector",
            "unix:uid:65534",
            "--role",
            "app-ro",
        ],
        "",
    );
    assert!(ok, "{out}");
    host.agent
        .expect(Duration::from_secs(30), |l| {
            l.starts_with("workload SVID issued: spiffe://lab.zeroth/app/reporting ")
        })
        .unwrap();
    let (ok, user, err) = psql_as(65534, &host.pg_dir(), "SELECT current_user");
    assert!(ok, "{err}");
    assert!(user.starts_with("zt_app_ro_"), "{user}");
    // The entry names uid 65534 only.
    let (ok, _, err) = psql_as(65533, &host.pg_dir(), "SELECT current_user");
    assert!(!ok && err.contains("refuses uid 65533"), "{err}");
}

/// PyMySQL (Debian's) on the proxy's socket: what it says when refused.
const PYMYSQL_REFUSED: &str = r#"
import sys, pymysql
try:
    pymysql.connect(unix_socket=sys.argv[1], user="anyone", connect_timeout=5)
    print("connected")
except pymysql.err.MySQLError as e:
    print(repr(e))
"#;

/// Two more MariaDB proxies of role shop-rw whose route to the database
/// fails: one reaches nothing, one reaches a database whose certificate the
/// connection's CA did not sign.
const BROKEN_MARIA: &str = r#"
[[proxy]]
name = "maria-unreachable"
role = "shop-rw"
engine = "mariadb"
listen = "@DIR@/unreachable.sock"
connect_to = "127.0.0.1:@NOTHING@"
allow_uids = [@UID@]

[[proxy]]
name = "maria-other-ca"
role = "shop-rw"
engine = "mariadb"
listen = "@DIR@/other-ca.sock"
connect_to = "127.0.0.1:@OTHER@"
allow_uids = [@UID@]
"#;

#[test]
fn mariadb_clients_print_each_refusal_in_the_proxys_words() {
    let mut lab = lab();
    lab.add_connections();
    // MariaDB over TLS, verified against the lab database's CA.
    let (ok, out) = lab.add_tls_connection("maria", lab.maria.tls_ca());
    assert!(ok, "{out}");
    // Another MariaDB, with a certificate from another CA.
    let other = zeroth::lab::MariaDb::start().unwrap();
    let nothing = zeroth::lab::ports::free_port().unwrap();
    let tcp = zeroth::lab::ports::free_port().unwrap();
    let config = format!(
        "{}{}",
        proxies(tcp),
        BROKEN_MARIA
            .replace("@UID@", &rustix::process::geteuid().as_raw().to_string())
            .replace("@NOTHING@", &nothing.to_string())
            .replace("@OTHER@", &other.port().to_string())
    );
    let host = ProxyHost::start(&lab, &config);
    // The working route first: TLS to the database, verified.
    let out = mariadb_via(&host.maria_socket())
        .args(["-e", "SELECT 1"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "1",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refused = |socket: &Path, proxy: &str, what: &str, why: &str| {
        let out = mariadb_via(socket)
            .args(["-e", "SELECT 1"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success()
                && err.contains("ERROR 1105")
                && err.contains(&format!("zeroth proxy {proxy}"))
                && err.contains(why)
                && !err.contains("malformed"),
            "{what}: the mariadb client printed: {err}"
        );
        let py = Command::new(tools::DEBIAN_PYTHON3.path().unwrap())
            .args(["-c", PYMYSQL_REFUSED])
            .arg(socket)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&py.stdout);
        assert!(
            said.contains("(1105, ")
                && said.contains(&format!("zeroth proxy {proxy}"))
                && said.contains(why),
            "{what}: PyMySQL said: {said}{}",
            String::from_utf8_lossy(&py.stderr)
        );
        println!("{what}: {}", err.trim());
    };
    refused(
        &host.dir.join("unreachable.sock"),
        "maria-unreachable",
        "database unreachable from the proxy",
        "cannot reach the database",
    );
    refused(
        &host.dir.join("other-ca.sock"),
        "maria-other-ca",
        "TLS failure",
        "TLS to the database",
    );
    // The database is down: the server cannot make a user.
    lab.maria.stop();
    refused(
        &host.maria_socket(),
        "lab-maria",
        "database down",
        "no database user",
    );
    // The zeroth server is down too.
    lab.server.stop();
    refused(
        &host.maria_socket(),
        "lab-maria",
        "server down",
        "unreachable",
    );
}

#[test]
fn an_unused_users_give_back_waits_in_the_queue_while_no_server_answers() {
    let mut lab = lab();
    lab.add_connections();
    // The node's route to the database reaches a listener that accepts and
    // never greets, so the user is issued and the session waits.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = format!(
        "{}\n[[proxy]]\nname = \"maria-silent\"\nrole = \"shop-rw\"\nengine = \"mariadb\"\nlisten = \"@DIR@/silent.sock\"\nconnect_to = \"{}\"\nallow_uids = [{}]\n",
        proxies(zeroth::lab::ports::free_port().unwrap()),
        silent.local_addr().unwrap(),
        rustix::process::geteuid().as_raw()
    );
    let mut host = ProxyHost::start(&lab, &config);
    let users = || {
        lab.maria
            .query("SELECT count(*) FROM mysql.user WHERE user LIKE 'zt_shop_rw_%'")
            .unwrap()
            .trim()
            .parse::<u32>()
            .unwrap()
    };
    let client = mariadb_via(&host.dir.join("silent.sock"))
        .args(["-e", "SELECT 1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (database_side, _) = silent.accept().unwrap();
    assert_eq!(users(), 1, "the connection's user was made");
    // No server answers when the session fails and its user is given back.
    lab.server.stop();
    drop(database_side);
    let out = client.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("zeroth proxy maria-silent"),
        "{err}"
    );
    host.agent
        .expect(Duration::from_secs(30), |l| {
            l.starts_with("session events wait on disk for the server")
        })
        .unwrap();
    assert_eq!(users(), 1, "nobody could drop it yet");
    // A server is back: the queued event gives the user back.
    lab.server.resume().unwrap();
    host.agent
        .expect(Duration::from_secs(30), |l| {
            l.starts_with("session events: the queue is delivered")
        })
        .unwrap();
    eventually(Duration::from_secs(10), || match users() {
        0 => Ok(()),
        n => Err(format!("{n} users left")),
    });
}

#[test]
fn session_events_of_a_revoked_host_leave_its_queue() {
    let lab = lab();
    lab.add_connections();
    let mut host = ProxyHost::short_pg(&lab);
    let mut open = Interactive::start(psql_via(&host.pg_dir()));
    let _user = open.ask("SELECT current_user;");
    // The host's one token chain is revoked while the session is open.
    let chain: String = rusqlite::Connection::open(lab.server.database())
        .unwrap()
        .query_row("SELECT DISTINCT chain_id FROM tokens", [], |r| r.get(0))
        .unwrap();
    let (ok, out) = lab.zeroth(&["token", "revoke", &chain], "");
    assert!(ok, "{out}");
    // The session's end is refused by the server (403): the event leaves
    // the queue rather than waiting on the host's disk for ever.
    let _ = open.finish();
    let queue = host.dir.join("state").join("session-events");
    host.agent
        .expect(Duration::from_secs(30), |l| {
            l.starts_with("session events: the server refuses them")
        })
        .unwrap();
    eventually(Duration::from_secs(10), || {
        let left: Vec<_> = std::fs::read_dir(&queue)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        left.is_empty()
            .then_some(())
            .ok_or(format!("still queued: {left:?}"))
    });
}

/// Sends one JSON request to an agent's workload API as `uid` (python3,
/// so the kernel reports that uid); the answer line.
fn workload_request_as(uid: u32, socket: &Path, request: &serde_json::Value) -> serde_json::Value {
    let out = Command::new("setpriv")
        .args([&format!("--reuid={uid}"), &format!("--regid={uid}"), "--clear-groups"])
        .arg(tools::DEBIAN_PYTHON3.path().unwrap())
        .args([
            "-c",
            "import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\ns.sendall(sys.argv[2].encode() + b'\\n')\nprint(s.makefile().readline())",
        ])
        .arg(socket)
        .arg(request.to_string())
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn another_program_cannot_end_or_renew_a_proxied_session_or_another_programs_lease() {
    let lab = lab();
    lab.add_connections();
    let tcp = zeroth::lab::ports::free_port().unwrap();
    let host = ProxyHost::start(
        &lab,
        &format!(
            "[workload_api]\nsocket = \"@DIR@/api.sock\"\n[workload_api.roles]\n65533 = [\"shop-rw\"]\n65532 = [\"shop-rw\"]\n\n{}",
            proxies(tcp)
        ),
    );
    let api = host.dir.join("api.sock");
    // Program A's proxied session, and its lease (which A never sees).
    let mut open = Interactive::start(psql_via(&host.pg_dir()));
    let user = open.ask("SELECT current_user;");
    let lease = lease_of(&lab, &user).expect("the session's lease");
    let id = lease["id"].as_str().unwrap().to_owned();
    // Program B, admitted to the agent for a role of its own, knows the id.
    for op in ["lease.revoke", "lease.renew"] {
        let answer = workload_request_as(65533, &api, &serde_json::json!({"op": op, "id": id}));
        assert_eq!(answer["ok"], false, "{op}: {answer}");
        assert_eq!(answer["status"], 403, "{op}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains("only its own leases"),
            "{op}: {answer}"
        );
    }
    assert_eq!(open.ask("SELECT 'still mine';"), "still mine");
    assert_eq!(lease_of(&lab, &user).unwrap()["state"], "active");
    // A lease one program got through the API is that program's alone.
    let got = workload_request_as(
        65532,
        &api,
        &serde_json::json!({"op": "db.creds", "role": "shop-rw"}),
    );
    assert_eq!(got["ok"], true, "{got}");
    let theirs = got["lease_id"].as_str().unwrap();
    let stolen = workload_request_as(
        65533,
        &api,
        &serde_json::json!({"op": "lease.revoke", "id": theirs}),
    );
    assert_eq!(stolen["status"], 403, "{stolen}");
    let given_back = workload_request_as(
        65532,
        &api,
        &serde_json::json!({"op": "lease.revoke", "id": theirs}),
    );
    assert_eq!(given_back["ok"], true, "{given_back}");
    let _ = open.finish();
}

#[test]
fn the_postgres_proxy_passes_only_the_roles_database_and_stock_parameters() {
    let lab = lab();
    lab.add_connections();
    let tcp = zeroth::lab::ports::free_port().unwrap();
    let host = ProxyHost::start(&lab, &proxies(tcp));
    // `options` may set any server setting: refused before any user is made.
    let out = psql_via(&host.pg_dir())
        .env("PGOPTIONS", "-c work_mem=64kB")
        .args(["-c", "SELECT 1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("the start-up parameter \"options\" is not passed on"),
        "{err}"
    );
    // Another database than the role's: refused, and its user given back.
    let out = Command::new(tools::PSQL.path().unwrap())
        .arg(format!(
            "host={} port=5432 dbname=template1 user=anyone connect_timeout=5",
            host.pg_dir().display()
        ))
        .args(["-XAtqc", "SELECT 1"])
        .env_remove("PGPASSWORD")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("reaches database \"postgres\", not \"template1\""),
        "{err}"
    );
    eventually(Duration::from_secs(10), || {
        let (ok, leases) = lab.zeroth(&["lease", "list", "--json"], "");
        (ok && leases.trim() == "[]")
            .then_some(())
            .ok_or(format!("leases left: {leases}"))
    });
    // Stock clients with their usual parameters still pass.
    let out = psql_via(&host.pg_dir())
        .env("PGAPPNAME", "shop")
        .env("PGCLIENTENCODING", "UTF8")
        .args(["-c", "SELECT current_setting('application_name')"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "shop");
}

#[test]
fn a_give_back_the_server_missed_arrives_with_the_sessions_closed_event() {
    let mut lab = lab();
    lab.add_connections();
    let tcp = zeroth::lab::ports::free_port().unwrap();
    let host = ProxyHost::start(&lab, &proxies(tcp));
    let mut open = Interactive::start(psql_via(&host.pg_dir()));
    let user = open.ask("SELECT current_user;");
    // The session ends while the server is away: the give-back fails, the
    // closed event waits on the agent's disk.
    lab.server.stop();
    let _ = open.finish();
    let queue = host.dir.join("state").join("session-events");
    eventually(Duration::from_secs(10), || {
        let n = std::fs::read_dir(&queue).map(|d| d.count()).unwrap_or(0);
        (n >= 1).then_some(()).ok_or(format!("{n} events queued"))
    });
    lab.server.resume().unwrap();
    // The lease had ten minutes left; the user goes with the event.
    eventually(Duration::from_secs(60), || {
        match pg_user_exists(&lab, &user) {
            false => Ok(()),
            true => Err(format!(
                "{user} still exists after its session's end was reported"
            )),
        }
    });
    assert_eq!(lease_of(&lab, &user).map(|l| l["state"].clone()), None);
    let revoked = lab.server.audit_details("db.creds.revoked").unwrap();
    assert!(
        revoked
            .iter()
            .any(|d| d["user"] == user.as_str() && d["reason"] == "session closed"),
        "{revoked:?}"
    );
}

/// Python, as uid 65534 (which no proxy admits): opens `n` connections to
/// the socket and sends nothing; prints how many the agent had closed after
/// 0.3 s and after 2 s.
const IDLE_CONNECTIONS: &str = r#"
import socket, sys, time, select
path, n = sys.argv[1], int(sys.argv[2])
conns = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    conns.append(s)
def closed():
    r, _, _ = select.select(conns, [], [], 0)
    gone = 0
    for s in r:
        try:
            if s.recv(65536, socket.MSG_PEEK) == b"":
                gone += 1
            else:
                # An answer (a refusal) then the close: read it all.
                while s.recv(65536):
                    pass
                gone += 1
        except OSError:
            gone += 1
    return gone
time.sleep(0.3)
print(closed())
time.sleep(1.7)
print(closed())
"#;

#[test]
fn a_uid_no_proxy_admits_cannot_hold_the_proxy_with_idle_connections() {
    let lab = lab();
    lab.add_connections();
    let tcp = zeroth::lab::ports::free_port().unwrap();
    let host = ProxyHost::start(&lab, &proxies(tcp));
    let socket = host.pg_dir().join(".s.PGSQL.5432");
    let mut attacker = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(tools::DEBIAN_PYTHON3.path().unwrap())
        .args(["-c", IDLE_CONNECTIONS])
        .arg(&socket)
        .arg("100")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Meanwhile an admitted program connects and is served.
    let started = Instant::now();
    let out = psql_via(&host.pg_dir())
        .args(["-c", "SELECT 'served'"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "served");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let mut said = String::new();
    attacker
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    assert!(attacker.wait().unwrap().success(), "{said}");
    let counts: Vec<usize> = said.lines().map(|l| l.trim().parse().unwrap()).collect();
    // All but a few closed at once; the few refused within a second.
    assert!(counts[0] >= 100 - 8, "closed at once: {counts:?}");
    assert_eq!(counts[1], 100, "closed after 2 s: {counts:?}");
}
