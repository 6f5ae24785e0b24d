//! `zeroth bench proxy`: the agent's database proxies against a direct
//! connection with a static password, same run, same databases: pgbench
//! `-S` and sysbench `oltp_read_only` throughput, connection set-up
//! latency (through the proxy it includes making the connection's user),
//! the agent's CPU per transaction, and its memory per open session.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use secrecy::ExposeSecret;

use super::bench_load::{cpu_seconds, percentile};
use crate::lab::{tools, AgentProcess, LabDir, MariaDb, Postgres, SoftHsm, ZerothServer};

const STATIC_PASSWORD: &str = "bench-static-password";

fn admin(
    server: &ZerothServer,
    req: crate::server::admin::AdminRequest,
) -> Result<serde_json::Value> {
    crate::server::admin::call(&server.admin_socket(), &req).map_err(anyhow::Error::msg)
}

fn run_tool(what: &str, cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("run {what}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The number after `label` in a tool's report.
fn figure(text: &str, label: &str) -> Result<f64> {
    text.lines()
        .find_map(|l| {
            let rest = &l[l.find(label)? + label.len()..];
            rest.trim_start_matches([' ', '=', '('])
                .split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .next()?
                .parse()
                .ok()
        })
        .with_context(|| format!("no {label:?} in:\n{text}"))
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")
}

/// Runs `proxied` (transactions per second through the proxy) and prints
/// it next to `direct`, with the agent's CPU per transaction meanwhile.
fn row(
    name: &str,
    direct: f64,
    agent: u32,
    seconds: u64,
    proxied: impl FnOnce() -> Result<f64>,
) -> Result<()> {
    let cpu = cpu_seconds(agent)?;
    let tps = proxied()?;
    let cpu = cpu_seconds(agent)? - cpu;
    println!(
        "{name:<28} {direct:>12.0} {tps:>12.0} {:>7.2} {:>13.1} µs",
        tps / direct,
        cpu * 1e6 / (tps * seconds as f64)
    );
    Ok(())
}

/// Connection set-up times (connect, one query, close), sorted.
async fn setups(n: usize, cfg: &tokio_postgres::Config) -> Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
        let task = tokio::spawn(conn);
        client.simple_query("SELECT 1").await?;
        times.push(t.elapsed());
        drop(client);
        let _ = task.await;
    }
    times.sort();
    Ok(times)
}

pub fn run(seconds: u64, clients: usize, setups_n: usize, sessions: usize) -> Result<()> {
    let hsm = SoftHsm::start().context("start a lab SoftHSM token")?;
    let pg = Postgres::start().context("start a lab PostgreSQL")?;
    let maria = MariaDb::start().context("start a lab MariaDB")?;
    let pgbench = tools::PGBENCH.path()?;
    let sysbench = tools::SYSBENCH.path()?;
    let superuser = pg.password().expose_secret().to_owned();
    let port = pg.port().to_string();
    run_tool(
        "pgbench -i",
        Command::new(&pgbench)
            .args([
                "-i",
                "-q",
                "-s",
                "10",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "postgres",
            ])
            .env("PGPASSWORD", &superuser),
    )?;
    let psql = tools::PSQL.path()?;
    run_tool(
        "psql",
        Command::new(&psql)
            .arg(pg.conninfo("postgres", "postgres"))
            .args(["-XAtqc", &format!("CREATE ROLE bench_static LOGIN PASSWORD '{STATIC_PASSWORD}'; GRANT SELECT ON ALL TABLES IN SCHEMA public TO bench_static")])
            .env("PGPASSWORD", &superuser),
    )?;
    maria.query(&format!(
        "CREATE DATABASE shop; CREATE USER bench_static@'%' IDENTIFIED BY '{STATIC_PASSWORD}'; GRANT SELECT ON shop.* TO bench_static@'%'"
    ))?;
    let sb_common = [
        "oltp_read_only".to_owned(),
        "--db-driver=mysql".to_owned(),
        "--mysql-db=shop".to_owned(),
        "--tables=1".to_owned(),
        "--table-size=10000".to_owned(),
    ];
    run_tool(
        "sysbench prepare",
        Command::new(&sysbench)
            .args(&sb_common)
            .args([
                "--mysql-host=127.0.0.1",
                &format!("--mysql-port={}", maria.port()),
                "--mysql-user=root",
            ])
            .arg(format!(
                "--mysql-password={}",
                maria.password().expose_secret()
            ))
            .arg("prepare"),
    )?;

    // Token hosts only: the group trusts no TPM manufacturer.
    let roots = LabDir::new("bench-no-roots")?;
    let unused = rcgen::generate_simple_self_signed(vec!["no-tpm-vendor".to_owned()])?;
    std::fs::write(roots.join("unused.pem"), unused.cert.pem())?;
    let groups = format!("[[group]]\nname = \"bench\"\nek_roots = \"{}\"\n\n[[db_role]]\nname = \"pg\"\nconnection = \"pg\"\nschema = \"public\"\naccess = \"read-only\"\nallow_groups = [\"bench\"]\n\n[[db_role]]\nname = \"maria\"\nconnection = \"maria\"\nschema = \"shop\"\naccess = \"read-only\"\nallow_groups = [\"bench\"]\n", roots.path().display());
    let exe = std::env::current_exe().context("find the zeroth binary")?;
    let server = ZerothServer::start(&exe, &hsm, &groups)?;
    for (name, engine, port, user, password, dbname) in [
        (
            "pg",
            "postgres",
            pg.port(),
            "postgres",
            superuser.clone(),
            "postgres",
        ),
        (
            "maria",
            "mariadb",
            maria.port(),
            "root",
            maria.password().expose_secret().to_owned(),
            "mysql",
        ),
    ] {
        admin(
            &server,
            crate::server::admin::AdminRequest {
                op: "db.connection.add".into(),
                params: serde_json::json!({"name": name, "engine": engine, "host": "127.0.0.1", "port": port, "dbname": dbname, "admin_user": user}),
                secret: Some(password.into()),
                ..Default::default()
            },
        )?;
    }
    let token = admin(
        &server,
        crate::server::admin::AdminRequest {
            op: "token.create".into(),
            group: Some("bench".into()),
            ttl_secs: Some(3600),
            ..Default::default()
        },
    )?;
    let host = LabDir::new("bench-proxy-host")?;
    std::fs::write(
        host.join("token"),
        token["token"].as_str().unwrap_or_default(),
    )?;
    let uid = rustix::process::geteuid().as_raw();
    let config = host.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "server = \"{}\"\nca_bundle = \"{}\"\ntoken_file = \"{}\"\nstate_dir = \"{}\"\n\n[[proxy]]\nname = \"pg\"\nrole = \"pg\"\nengine = \"postgres\"\nlisten = \"{}\"\nallow_uids = [{uid}]\n\n[[proxy]]\nname = \"maria\"\nrole = \"maria\"\nengine = \"mariadb\"\nlisten = \"{}\"\nallow_uids = [{uid}]\n",
            server.url(),
            server.bundle().display(),
            host.join("token").display(),
            host.join("state").display(),
            host.join("pg").display(),
            host.join("maria.sock").display(),
        ),
    )?;
    let mut agent = AgentProcess::start(&exe, &config)?;
    agent.expect(Duration::from_secs(30), |l| {
        l.starts_with("token rotated: ")
    })?;
    let agent_pid = agent.pid();
    let pg_dir = host.join("pg");
    let maria_socket = host.join("maria.sock");

    println!("database proxies against direct connections with a static password (same run, same databases; pgbench -S -c {clients} -j 2 -T {seconds}, sysbench oltp_read_only --threads={clients} --time={seconds})");
    println!(
        "{:<28} {:>12} {:>12} {:>7} {:>16}",
        "workload", "direct/s", "proxy/s", "ratio", "agent CPU/txn"
    );
    let pgbench_tps = |host: &str, port: &str, user: &str| -> Result<f64> {
        let out = run_tool(
            "pgbench -S",
            Command::new(&pgbench)
                .args([
                    "-S",
                    "-n",
                    "-c",
                    &clients.to_string(),
                    "-j",
                    "2",
                    "-T",
                    &seconds.to_string(),
                ])
                .args(["-h", host, "-p", port, "-U", user, "postgres"])
                .env("PGPASSWORD", STATIC_PASSWORD),
        )?;
        figure(&out, "tps =")
    };
    let direct = pgbench_tps("127.0.0.1", &port, "bench_static")?;
    row(
        "PostgreSQL pgbench -S tps",
        direct,
        agent_pid,
        seconds,
        || pgbench_tps(&pg_dir.display().to_string(), "5432", "anyone"),
    )?;
    let sysbench_tps = |target: &[String]| -> Result<f64> {
        let out = run_tool(
            "sysbench run",
            Command::new(&sysbench)
                .args(&sb_common)
                .args([format!("--threads={clients}"), format!("--time={seconds}")])
                .args(target)
                .arg("run"),
        )?;
        figure(&out, "transactions:").and_then(|_| {
            let line = out
                .lines()
                .find(|l| l.contains("transactions:"))
                .unwrap_or_default();
            figure(line, "(")
        })
    };
    let direct = sysbench_tps(&[
        "--mysql-host=127.0.0.1".into(),
        format!("--mysql-port={}", maria.port()),
        "--mysql-user=bench_static".into(),
        format!("--mysql-password={STATIC_PASSWORD}"),
    ])?;
    row(
        "MariaDB oltp_read_only tps",
        direct,
        agent_pid,
        seconds,
        || {
            sysbench_tps(&[
                format!("--mysql-socket={}", maria_socket.display()),
                "--mysql-user=anyone".into(),
            ])
        },
    )?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut direct_cfg = tokio_postgres::Config::new();
    direct_cfg
        .host("127.0.0.1")
        .port(pg.port())
        .user("bench_static")
        .password(STATIC_PASSWORD)
        .dbname("postgres");
    let mut proxy_cfg = tokio_postgres::Config::new();
    proxy_cfg
        .host_path(&pg_dir)
        .port(5432)
        .user("anyone")
        .dbname("postgres");
    let direct = rt.block_on(setups(setups_n, &direct_cfg))?;
    let proxied = rt.block_on(setups(setups_n, &proxy_cfg))?;
    println!(
        "PostgreSQL connection set-up ({setups_n} in a row, connect + SELECT 1): direct p50 {:.1} ms p99 {:.1} ms; proxy (user made per connection) p50 {:.1} ms p99 {:.1} ms",
        percentile(&direct, 0.5),
        percentile(&direct, 0.99),
        percentile(&proxied, 0.5),
        percentile(&proxied, 0.99)
    );

    // Memory: the agent's resident set before and with N open sessions.
    let before = rss_kib(agent_pid)?;
    let open = rt.block_on(async {
        let mut open = Vec::new();
        for _ in 0..sessions {
            let (client, conn) = proxy_cfg.connect(tokio_postgres::NoTls).await?;
            let task = tokio::spawn(conn);
            client.simple_query("SELECT 1").await?;
            open.push((client, task));
        }
        anyhow::Ok(open)
    })?;
    let with = rss_kib(agent_pid)?;
    println!(
        "agent RSS: {before} KiB idle, {with} KiB with {sessions} open proxied sessions: {:.1} KiB per session",
        (with as f64 - before as f64) / sessions.max(1) as f64
    );
    drop(open);
    agent.stop()?;
    Ok(())
}
