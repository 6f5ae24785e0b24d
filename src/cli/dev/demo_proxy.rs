//! The demo's secretless step: a program in demo-shop.service runs the
//! stock psql and mariadb clients through the agent's proxies, with no
//! password anywhere; its user exists while the session is open and is
//! gone right after; issuance, use and revocation are three audit events.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::lab::{self, MariaDb, ZerothServer};
use crate::server::admin::AdminRequest;

const PROXIES: &str = r#"
[[proxy]]
name = "shop-pg"
role = "app-ro"
engine = "postgres"
listen = "@DIR@/pg"
allow_units = ["demo-shop.service"]

[[proxy]]
name = "shop-maria"
role = "shop-rw"
engine = "mariadb"
listen = "@DIR@/maria.sock"
allow_units = ["demo-shop.service"]
"#;

fn call(server: &ZerothServer, req: AdminRequest) -> Result<serde_json::Value> {
    crate::server::admin::call(&server.admin_socket(), &req).map_err(anyhow::Error::msg)
}

/// Runs `program args` as nobody inside demo-shop.service, `sql` on its
/// stdin, and returns its first output line while it is still connected,
/// plus the running child (connected until its stdin is closed).
fn one_line(mut cmd: Command, sql: &str) -> Result<(String, std::process::Child)> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    writeln!(child.stdin.as_mut().context("stdin")?, "{sql}")?;
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().context("stdout")?).read_line(&mut line)?;
    Ok((line.trim().to_owned(), child))
}

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + within;
    while !ok()? {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

pub fn show_proxies(server: &ZerothServer, maria: &MariaDb) -> Result<()> {
    use secrecy::ExposeSecret;
    maria
        .query("CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, item TEXT); INSERT INTO shop.orders VALUES (1, 'tea')")
        .map_err(|e| anyhow::anyhow!(e))?;
    println!("\n$ zeroth db connection create maria --engine mariadb --port {} --admin-user root < password", maria.port());
    call(
        server,
        AdminRequest {
            op: "db.connection.add".into(),
            params: serde_json::json!({"name": "maria", "engine": "mariadb", "host": "127.0.0.1", "port": maria.port(), "dbname": "mysql", "admin_user": "root"}),
            secret: Some(maria.password().expose_secret().to_owned().into()),
            ..Default::default()
        },
    )?;
    // The sockets' directory: nobody may pass through it (mode 0711).
    let dir = lab::LabDir::new("demo-proxy-sockets")?;
    let (host, config, _) = super::demo_db::token_host(
        server,
        "demo-proxy-host",
        &PROXIES.replace("@DIR@", &dir.path().display().to_string()),
    )?;
    println!("$ zeroth agent run   # [[proxy]] shop-pg and shop-maria, for demo-shop.service only");
    let exe = std::env::current_exe()?;
    let mut agent = lab::AgentProcess::start(&exe, &config)?;
    agent.expect(Duration::from_secs(30), |l| {
        l.starts_with("token rotated: ")
    })?;
    for line in agent.seen().iter().filter(|l| l.starts_with("proxy ")) {
        println!("           {line}");
    }

    let unit = lab::ServiceCgroup::new("demo-shop.service").map_err(|e| anyhow::anyhow!(e))?;
    let psql = lab::tools::PSQL.path()?;
    let pg_dir = dir.join("pg");
    let conninfo = format!("host={} port=5432 dbname=postgres", pg_dir.display());
    let in_shop = |program: &Path, args: &[&str]| {
        let mut c = unit.command_as(65534, program, args);
        c.env_clear().env("PATH", "/usr/bin:/bin");
        c
    };
    println!("$ psql \"host=<proxy dir> port=5432 dbname=postgres\"   # nobody, in demo-shop.service: no password, no PGPASSWORD, no .pgpass");
    let (user, session) = one_line(
        in_shop(&psql, &[&conninfo, "-XAtq"]),
        "SELECT current_user || ' sees ' || text FROM greetings;",
    )?;
    println!("           {user}");
    let user = user.split(' ').next().unwrap_or_default().to_owned();
    let environ =
        std::fs::read_to_string(format!("/proc/{}/environ", session.id())).unwrap_or_default();
    println!(
        "           psql's environment: {}",
        environ.replace('\0', " ").trim()
    );
    let exists = |name: &str| -> Result<bool> {
        let out = in_shop(
            &psql,
            &[
                &conninfo,
                "-XAtqc",
                &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{name}'"),
            ],
        )
        .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim() == "1")
    };
    anyhow::ensure!(
        exists(&user)?,
        "{user} is not there while its session is open"
    );
    println!("           while psql is connected, pg_roles has {user}");
    let mut session = session;
    drop(session.stdin.take());
    session.wait()?;
    let closed = Instant::now();
    wait_for(
        "dropping the session's user",
        Duration::from_secs(5),
        || Ok(!exists(&user)?),
    )?;
    println!(
        "           psql exits: {user} is gone {} ms later",
        closed.elapsed().as_millis()
    );

    let mariadb = lab::tools::MARIADB.path()?;
    let socket = dir.join("maria.sock");
    let socket_arg = format!("--socket={}", socket.display());
    println!("$ mariadb --socket=<proxy socket> -e 'SELECT CURRENT_USER(), item FROM shop.orders'   # the same program");
    let out = in_shop(
        &mariadb,
        &[
            "--no-defaults",
            "-N",
            "-B",
            &socket_arg,
            "-e",
            "SELECT CURRENT_USER(), item FROM shop.orders",
        ],
    )
    .output()?;
    anyhow::ensure!(
        out.status.success(),
        "mariadb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = String::from_utf8_lossy(&out.stdout)
        .trim()
        .replace('\t', " ");
    println!("           {row}");
    let maria_user = row.split('@').next().unwrap_or_default().to_owned();
    drop(unit);

    println!(
        "$ psql \"host=<proxy dir> port=5432 dbname=postgres\"   # nobody, outside the service"
    );
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&psql)
        .args([&conninfo, "-XAtqc", "SELECT 1"])
        .output()?;
    anyhow::ensure!(!out.status.success(), "a stranger got through the proxy");
    println!("           {}", String::from_utf8_lossy(&out.stderr).trim());

    println!("$ zeroth audit tail   # {user}'s lease: issued, used, revoked: separate events");
    let lease = {
        let issued = server.audit_details("db.creds.issued")?;
        issued
            .iter()
            .find(|d| d["user"] == user.as_str())
            .map(|d| d["workload"].as_str().unwrap_or_default().to_owned())
            .context("no issuance event for the session's user")?
    };
    println!("           db.creds.issued    {user} to \"{lease}\"");
    let mut shown = Vec::new();
    wait_for("the session's use events", Duration::from_secs(10), || {
        shown.clear();
        for kind in ["db.session.opened", "db.session.closed"] {
            if let Some(d) = server
                .audit_details(kind)?
                .into_iter()
                .find(|d| d["user"] == user.as_str())
            {
                shown.push((kind, d));
            }
        }
        Ok(shown.len() == 2)
    })?;
    for (kind, d) in &shown {
        let mut line = format!(
            "{kind:<18} {user} proxy {} uid {} unit {}",
            d["proxy"].as_str().unwrap_or_default(),
            d["workload"]["uid"],
            d["workload"]["unit"].as_str().unwrap_or("-")
        );
        if let (Some(ms), Some(up), Some(down)) = (
            d["duration_ms"].as_u64(),
            d["bytes_from_client"].as_u64(),
            d["bytes_to_client"].as_u64(),
        ) {
            line.push_str(&format!(", {ms} ms, {up} bytes in, {down} out"));
        }
        println!("           {line}");
    }
    let revoked = server
        .audit_details("db.creds.revoked")?
        .into_iter()
        .find(|d| d["user"] == user.as_str())
        .context("no revocation event for the session's user")?;
    println!(
        "           db.creds.revoked   {user}: {}",
        revoked["reason"].as_str().unwrap_or("revoked")
    );
    // Every use event delivered before the lab moves on: the MariaDB
    // session's closing event too, which is queued only after its lease
    // has been given back.
    wait_for(
        "the MariaDB session's closing event",
        Duration::from_secs(10),
        || {
            Ok(server
                .audit_details("db.session.closed")?
                .iter()
                .any(|d| d["user"] == maria_user.as_str()))
        },
    )?;
    let queue = host.join("state").join("session-events");
    wait_for(
        "the agent's queue to empty",
        Duration::from_secs(10),
        || {
            Ok(std::fs::read_dir(&queue)?
                .flatten()
                .all(|e| !e.file_name().to_string_lossy().ends_with(".json")))
        },
    )?;
    agent.stop()?;
    Ok(())
}
