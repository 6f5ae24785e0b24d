//! The demo's database steps: users for an enrolled node's program, a
//! host without a TPM living on a token, and a service granted roles by
//! its systemd unit.

use anyhow::Result;
use secrecy::ExposeSecret;

use crate::lab::{self, Postgres};

use super::demo::admin_call;

pub(super) fn psql_as(
    pg: &Postgres,
    user: &str,
    password: &str,
    sql: &str,
) -> Result<String, String> {
    let psql = lab::tools::PSQL.path().map_err(|e| e.to_string())?;
    let out = std::process::Command::new(psql)
        .arg(pg.conninfo(user, "postgres"))
        .args(["-XAtqc", sql])
        .env("PGPASSWORD", password)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// The demo table's greeting, read as the issued user.
fn greeting(pg: &Postgres, creds: &crate::wire::db::CredsResponse) -> Result<String> {
    psql_as(
        pg,
        &creds.username,
        creds.password.expose_secret(),
        "SELECT text FROM greetings",
    )
    .map_err(anyhow::Error::msg)
}

pub(super) fn show_db_creds(
    options: &crate::agent::EnrolOptions,
    server: &crate::lab::ZerothServer,
    pg: &Postgres,
) -> Result<()> {
    use crate::server::admin::AdminRequest;
    psql_as(
        pg,
        lab::postgres::SUPERUSER,
        pg.password().expose_secret(),
        "CREATE TABLE greetings (text text); INSERT INTO greetings VALUES ('hello from a user that lives 10 minutes')",
    )
    .map_err(anyhow::Error::msg)?;
    println!("$ zeroth db connection create pg --engine postgres --port {} --admin-user postgres < password; zeroth db rotate-root pg", pg.port());
    admin_call(
        server,
        AdminRequest {
            op: "db.connection.add".into(),
            params: serde_json::json!({"name": "pg", "engine": "postgres", "host": "127.0.0.1", "port": pg.port(), "dbname": "postgres", "admin_user": "postgres"}),
            secret: Some(pg.password().clone()),
            ..Default::default()
        },
    )?;
    admin_call(
        server,
        AdminRequest {
            op: "db.rotate-root".into(),
            id: Some("pg".into()),
            ..Default::default()
        },
    )?;
    let old = psql_as(
        pg,
        lab::postgres::SUPERUSER,
        pg.password().expose_secret(),
        "SELECT 1",
    );
    anyhow::ensure!(old.is_err(), "the old admin password still works");
    println!("           admin password sealed under store-kek, then replaced: the old one is refused, nobody knows the new one");

    println!("$ zeroth db creds app-ro --exec psql -c 'SELECT text FROM greetings'");
    let svid = std::fs::read_to_string(options.state_dir.join("svid.pem"))?;
    let e = crate::agent::enrol::Enrolment::open(&options.tcti, &options.state_dir)?;
    let http = e.mtls_client(&options.ca_bundle, &svid)?;
    let creds: crate::wire::db::CredsResponse = crate::agent::enrol::post_json(
        &http,
        &format!("{}/v1/db/creds/app-ro", options.server),
        &crate::wire::db::CredsRequest::default(),
    )?;
    drop((http, e));
    let answer = greeting(pg, &creds)?;
    println!(
        "           user {} (VALID UNTIL in {}s, password only in psql's environment): {answer}",
        creds.username,
        creds.expires - crate::store::now()
    );
    println!("$ zeroth lease revoke {}", creds.lease_id);
    admin_call(
        server,
        AdminRequest {
            op: "lease.revoke".into(),
            id: Some(creds.lease_id.clone()),
            ..Default::default()
        },
    )?;
    match psql_as(
        pg,
        &creds.username,
        creds.password.expose_secret(),
        "SELECT 1",
    ) {
        Ok(_) => anyhow::bail!("the revoked user still logs in"),
        Err(e) => println!(
            "           login refused: {}",
            e.lines().last().unwrap_or_default()
        ),
    }
    Ok(())
}

/// A host without a TPM for the demo: a token made by the operator (its
/// file 0600), and an agent.toml ending in `extra`. Returns the host's
/// directory, the configuration's path and the token chain.
pub(super) fn token_host(
    server: &crate::lab::ZerothServer,
    name: &str,
    extra: &str,
) -> Result<(lab::LabDir, std::path::PathBuf, String)> {
    use crate::server::admin::AdminRequest;
    use std::os::unix::fs::PermissionsExt;
    let made = admin_call(
        server,
        AdminRequest {
            op: "token.create".into(),
            group: Some("edge".into()),
            ttl_secs: Some(600),
            ..Default::default()
        },
    )?;
    let chain = made["chain"].as_str().unwrap_or_default().to_owned();
    let host = lab::LabDir::new(name)?;
    let bootstrap = host.join("token");
    std::fs::write(&bootstrap, made["token"].as_str().unwrap_or_default())?;
    std::fs::set_permissions(&bootstrap, std::fs::Permissions::from_mode(0o600))?;
    let config = host.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "server = \"{}\"\nca_bundle = \"{}\"\ntoken_file = \"{}\"\nstate_dir = \"{}\"\nretry_max = \"1s\"\n{extra}",
            server.url(),
            server.bundle().display(),
            bootstrap.display(),
            host.join("state").display(),
        ),
    )?;
    Ok((host, config, chain))
}

/// A host without a TPM: it lives on a rotating token, and its programs get
/// database users through the agent, which alone holds its SVID key.
pub(super) fn show_token_host(server: &crate::lab::ZerothServer, pg: &Postgres) -> Result<()> {
    use crate::agent::workload_api::{self, WorkloadRequest};
    use crate::server::admin::AdminRequest;
    println!("$ zeroth token create --group edge --ttl 10m   # for a host without a TPM");
    let socket_dir = lab::LabDir::new("demo-token-socket")?;
    let socket = socket_dir.join("api.sock");
    let (_host, config, chain) = token_host(
        server,
        "demo-token-host",
        &format!(
            "[workload_api]\nsocket = \"{}\"\n[workload_api.units]\n\"demo-shop.service\" = [\"app-ro\"]\n",
            socket.display()
        ),
    )?;
    println!("$ zeroth agent run   # token_file + [workload_api]: the SVID key stays in the agent's memory");
    let exe = std::env::current_exe()?;
    let mut agent = lab::AgentProcess::start(&exe, &config)?;
    let line = agent.expect(std::time::Duration::from_secs(30), |l| {
        l.starts_with("token rotated: ")
    })?;
    println!("           {line}");
    println!(
        "$ zeroth db creds app-ro -- psql   # on the token host: asked through the agent's socket"
    );
    let answer = workload_api::call(
        &socket,
        &WorkloadRequest {
            op: "db.creds".into(),
            role: Some("app-ro".into()),
            ..Default::default()
        },
    )
    .map_err(|(status, reason)| anyhow::anyhow!("refused ({status}): {reason}"))?;
    let creds: crate::wire::db::CredsResponse = serde_json::from_value(answer)?;
    let text = greeting(pg, &creds)?;
    println!(
        "           user {} for spiffe://{}/token/{chain}: {text}",
        creds.username,
        crate::lab::zeroth_server::TRUST_DOMAIN
    );
    show_service_grant(server, &config)?;
    println!("$ zeroth token revoke {chain}");
    admin_call(
        server,
        AdminRequest {
            op: "token.revoke".into(),
            id: Some(chain.clone()),
            ..Default::default()
        },
    )?;
    // The revoker takes the chain's leases on its next pass.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match psql_as(
            pg,
            &creds.username,
            creds.password.expose_secret(),
            "SELECT 1",
        ) {
            Err(_) => break,
            Ok(_) if std::time::Instant::now() > deadline => {
                anyhow::bail!("the revoked token host's user still logs in")
            }
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
    match workload_api::call(
        &socket,
        &WorkloadRequest {
            op: "db.creds".into(),
            role: Some("app-ro".into()),
            ..Default::default()
        },
    ) {
        Ok(_) => anyhow::bail!("the revoked token host got credentials"),
        Err((status, reason)) => {
            println!("           its user is gone; asking again: refused ({status}): {reason}")
        }
    }
    agent.stop()?;
    Ok(())
}

/// `[workload_api.units]`: a program of a granted systemd service gets the
/// service's roles whatever its uid; the same uid elsewhere is a stranger.
fn show_service_grant(server: &crate::lab::ZerothServer, config: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // Read by the unprivileged program; it holds no secret.
    std::fs::set_permissions(config, std::fs::Permissions::from_mode(0o644))?;
    // nobody runs a copy it can reach, wherever this build is.
    let copy = lab::RunnableCopy::of(&std::env::current_exe()?)?;
    let exe = copy.path();
    let unit = lab::ServiceCgroup::new("demo-shop.service").map_err(|e| anyhow::anyhow!(e))?;
    let args = [
        "db",
        "creds",
        "--config",
        &config.to_string_lossy(),
        "app-ro",
    ];
    println!("$ zeroth db creds app-ro   # as nobody, in demo-shop.service (granted by [workload_api.units])");
    let out = unit.command_as(65534, exe, &args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "the service's program was refused: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let url = String::from_utf8_lossy(&out.stdout);
    let user = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .unwrap_or_default();
    let issued = server.audit_details("db.creds.issued")?;
    let workload = issued
        .last()
        .and_then(|d| d["workload"].as_str())
        .unwrap_or_default()
        .to_owned();
    anyhow::ensure!(
        workload.ends_with("unit demo-shop.service"),
        "the audit does not name the service: {workload:?}"
    );
    println!("           user {user}; audit: issued to \"{workload}\"");
    drop(unit);
    println!("$ zeroth db creds app-ro   # as nobody, outside the service");
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(exe)
        .args(args)
        .output()?;
    anyhow::ensure!(
        !out.status.success(),
        "nobody outside the service got credentials"
    );
    println!(
        "           {}",
        String::from_utf8_lossy(&out.stderr)
            .trim()
            .lines()
            .last()
            .unwrap_or_default()
    );
    Ok(())
}
