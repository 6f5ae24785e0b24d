//! `zeroth bench db`: dynamic users per second through zeroth (HTTPS, mTLS,
//! lease durable before the reply) against the physical limit measured in
//! the same run: CREATE ROLE/USER + grant on one raw admin connection.

use std::time::Instant;

use anyhow::{Context, Result};
use secrecy::ExposeSecret;

use super::bench_load::{enrolled_node, percentile, requests};
use crate::agent::enrol::post_json;
use crate::lab::{LabDir, MariaDb, Postgres, SoftHsm, Swtpm, ZerothServer};
use crate::wire::db::{CredsRequest, CredsResponse};

/// CREATE ROLE … LOGIN PASSWORD … VALID UNTIL … IN ROLE (the grant) per
/// second, one statement after another on one connection.
async fn raw_postgres(pg: &Postgres, n: usize) -> Result<f64> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(pg.port())
        .user(crate::lab::postgres::SUPERUSER)
        .password(pg.password().expose_secret().as_bytes())
        .dbname("postgres");
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    client
        .batch_execute("CREATE ROLE bench_grp NOLOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO bench_grp")
        .await?;
    let start = Instant::now();
    for i in 0..n {
        let pw = crate::creds::db::secret::password();
        client
            .batch_execute(&format!(
                "CREATE ROLE bench_raw_{i} LOGIN PASSWORD '{}' VALID UNTIL 'infinity' IN ROLE bench_grp",
                pw.expose_secret()
            ))
            .await?;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    for i in 0..n {
        client
            .batch_execute(&format!("DROP ROLE bench_raw_{i}"))
            .await?;
    }
    Ok(rate)
}

/// CREATE USER + GRANT + the one-shot expiry event per second on one connection.
async fn raw_mariadb(db: &MariaDb, n: usize) -> Result<f64> {
    use mysql_async::prelude::Queryable;
    let opts: mysql_async::Opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(db.port())
        .user(Some("root"))
        .pass(Some(db.password().expose_secret()))
        .prefer_socket(false)
        .into();
    let mut conn = mysql_async::Conn::new(opts).await?;
    conn.query_drop("CREATE DATABASE IF NOT EXISTS bench_events")
        .await?;
    let start = Instant::now();
    for i in 0..n {
        let pw = crate::creds::db::secret::password();
        conn.query_drop(format!(
            "CREATE USER 'bench_raw_{i}'@'%' IDENTIFIED BY '{}'",
            pw.expose_secret()
        ))
        .await?;
        conn.query_drop(format!("GRANT SELECT ON shop.* TO 'bench_raw_{i}'@'%'"))
            .await?;
        conn.query_drop(format!(
            "CREATE EVENT bench_events.e{i} ON SCHEDULE AT CURRENT_TIMESTAMP + INTERVAL 1 HOUR DO DROP USER IF EXISTS 'bench_raw_{i}'@'%'"
        ))
        .await?;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    for i in 0..n {
        conn.query_drop(format!("DROP USER 'bench_raw_{i}'@'%'"))
            .await?;
    }
    conn.query_drop("DROP DATABASE bench_events").await?;
    Ok(rate)
}

fn admin(server: &ZerothServer, op: &str, params: serde_json::Value, secret: &str) -> Result<()> {
    crate::server::admin::call(
        &server.admin_socket(),
        &crate::server::admin::AdminRequest {
            op: op.into(),
            params,
            secret: Some(secret.into()),
            ..Default::default()
        },
    )
    .map_err(anyhow::Error::msg)?;
    Ok(())
}

pub fn run(clients: usize, per_client: usize, raw: Option<usize>) -> Result<()> {
    let clients = clients.max(1);
    // The warm-up request of each client makes a user too.
    let raw = raw.unwrap_or(clients * (per_client + 1));
    let tpm = Swtpm::start().context("start a lab TPM")?;
    let hsm = SoftHsm::start().context("start a lab SoftHSM token")?;
    let pg = Postgres::start().context("start a lab PostgreSQL")?;
    let maria = MariaDb::start().context("start a lab MariaDB")?;
    maria.query("CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY)")?;
    let roots = LabDir::new("bench-roots")?;
    std::fs::copy(tpm.ca_root_pem(), roots.join("root.pem"))?;
    let groups = format!(
        "[[group]]\nname = \"bench\"\nek_roots = \"{}\"\nek_intermediates = \"{}\"\nauto_approve = true\n\n[[db_role]]\nname = \"pg\"\nconnection = \"pg\"\nschema = \"public\"\nallow_groups = [\"bench\"]\n\n[[db_role]]\nname = \"maria\"\nconnection = \"maria\"\nschema = \"shop\"\nallow_groups = [\"bench\"]\n",
        roots.path().display(),
        tpm.ca_intermediate_pem().display()
    );
    let exe = std::env::current_exe().context("find the zeroth binary")?;
    let server = ZerothServer::start(&exe, &hsm, &groups)?;
    admin(
        &server,
        "db.connection.add",
        serde_json::json!({"name": "pg", "engine": "postgres", "host": "127.0.0.1", "port": pg.port(), "dbname": "postgres", "admin_user": "postgres"}),
        pg.password().expose_secret(),
    )?;
    admin(
        &server,
        "db.connection.add",
        serde_json::json!({"name": "maria", "engine": "mariadb", "host": "127.0.0.1", "port": maria.port(), "dbname": "mysql", "admin_user": "root"}),
        maria.password().expose_secret(),
    )?;
    let (_agent, opts, e) = enrolled_node(&server, &tpm)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!(
        "dynamic users: {clients} HTTPS clients x {per_client} requests through zeroth (mTLS, lease fsync'd before the reply, audit on) vs {raw} on one raw admin connection; then each user given back by its holder (DROP, lease revoked, audited)"
    );
    println!(
        "{:<11} {:>12} {:>12} {:>7} {:>9} {:>9} {:>12} {:>9}",
        "engine", "raw/s", "zeroth/s", "ratio", "p50 ms", "p99 ms", "revoked/s", "p99 ms"
    );
    let store = crate::store::Store::open(&server.database())?;
    let expected = clients * (per_client + 1);
    for (engine, role) in [("postgres", "pg"), ("mariadb", "maria")] {
        let raw_rate = match engine {
            "postgres" => rt.block_on(raw_postgres(&pg, raw))?,
            _ => rt.block_on(raw_mariadb(&maria, raw))?,
        };
        let url = format!("{}/v1/db/creds/{role}", opts.server);
        let issued = std::sync::Mutex::new(Vec::with_capacity(expected));
        let (rate, lat) = requests(&e, &opts, clients, per_client, |h| {
            let c: CredsResponse = post_json(h, &url, &CredsRequest::default())?;
            issued
                .lock()
                .map_err(|_| anyhow::anyhow!("a bench client panicked"))?
                .push(c.lease_id);
            Ok(())
        })?;
        // Every reply stood for a durable lease.
        let active = crate::store::leases::live(&*store.read()?, None, None)?.len();
        anyhow::ensure!(
            active == expected,
            "{engine}: {active} leases live for {expected} replies"
        );
        // Each user given back by its holder, as fast as the clients can.
        let (revoked_rate, revoked_lat) = requests(&e, &opts, clients, per_client, |h| {
            let id = issued
                .lock()
                .map_err(|_| anyhow::anyhow!("a bench client panicked"))?
                .pop()
                .context("more give-backs than users")?;
            let status = h
                .post(format!("{}/v1/leases/{id}/revoke", opts.server))
                .send()?
                .status();
            anyhow::ensure!(status.as_u16() == 204, "give-back of {id}: {status}");
            Ok(())
        })?;
        println!(
            "{engine:<11} {raw_rate:>12.0} {rate:>12.0} {:>7.2} {:>9.1} {:>9.1} {revoked_rate:>12.0} {:>9.1}",
            rate / raw_rate,
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            percentile(&revoked_lat, 0.99)
        );
    }
    let left = crate::store::leases::live(&*store.read()?, None, None)?.len();
    println!("leases live in the store after the give-backs: {left}");
    anyhow::ensure!(left == 0, "{left} leases outlived their give-back");
    Ok(())
}
