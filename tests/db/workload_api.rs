//! The agent's workload API: programs get database users in the host's
//! name without its key. A host without a TPM gets them only this way (the
//! agent alone holds its SVID key), and revoking its token chain ends its
//! users; on a TPM node the program needs no access to the TPM.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use zeroth::wire::db::CredsResponse;

use super::{eventually, lab, mariadb};

/// `mysql://user:password@host:port/db`, as `zeroth db creds` prints it.
fn parse_url(url: &str, lease_id: &str) -> CredsResponse {
    let (scheme, rest) = url.trim().split_once("://").unwrap();
    let (auth, rest) = rest.rsplit_once('@').unwrap();
    let (username, password) = auth.split_once(':').unwrap();
    let (addr, database) = rest.split_once('/').unwrap();
    let (host, port) = addr.rsplit_once(':').unwrap();
    CredsResponse {
        lease_id: lease_id.to_owned(),
        username: username.to_owned(),
        password: password.to_owned().into(),
        expires: 0,
        engine: if scheme == "mysql" {
            "mariadb"
        } else {
            "postgres"
        }
        .to_owned(),
        host: host.to_owned(),
        port: port.parse().unwrap(),
        database: database.to_owned(),
        tls_ca: None,
    }
}

fn zeroth_db_creds(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_zeroth"))
        .args(["db", "creds", "--config"])
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_token_host_gets_database_users_through_its_agents_workload_api() {
    let lab = lab();
    lab.add_connections();
    let (ok, out) = lab.zeroth(&["token", "create", "--group", "edge", "--ttl", "5m"], "");
    assert!(ok, "{out}");
    let chain = out
        .split("token chain ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_owned();
    // stdout (the token) comes before stderr (what it is).
    let first = out.lines().next().unwrap().trim().to_owned();
    let host = zeroth::lab::LabDir::new("token-host").unwrap();
    let bootstrap = host.join("bootstrap-token");
    std::fs::write(&bootstrap, &first).unwrap();
    let socket = host.join("api.sock");
    let config = host.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "server = \"{}\"\nca_bundle = \"{}\"\ntoken_file = \"{}\"\nstate_dir = \"{}\"\nretry_max = \"1s\"\n\n[workload_api]\nsocket = \"{}\"\n[workload_api.roles]\n65533 = [\"shop-rw\"]\n[workload_api.units]\n\"zt-shop.service\" = [\"app-ro\"]\n",
            lab.server.url(),
            lab.server.bundle().display(),
            bootstrap.display(),
            host.join("state").display(),
            socket.display()
        ),
    )
    .unwrap();
    // Readable by the unprivileged caller below; it holds no secret.
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut agent = zeroth::lab::AgentProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_zeroth")),
        &config,
    )
    .unwrap();
    agent
        .expect(Duration::from_secs(30), |l| {
            l.starts_with("token rotated: ")
        })
        .unwrap();

    // psql runs with a user the token host was given; the lease goes back
    // when it exits.
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

    // A MariaDB user, held by the token host's SPIFFE ID.
    let out = zeroth_db_creds(&config, &["shop-rw", "--ttl", "10m"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, leases) = lab.zeroth(&["lease", "list", "--json"], "");
    assert!(ok, "{leases}");
    let live: Vec<serde_json::Value> = serde_json::from_str(&leases).unwrap();
    assert_eq!(live.len(), 1, "{leases}");
    assert_eq!(
        live[0]["holder"],
        format!("spiffe://lab.zeroth/token/{chain}"),
        "{leases}"
    );
    let m = parse_url(
        &String::from_utf8_lossy(&out.stdout),
        live[0]["id"].as_str().unwrap(),
    );
    assert_eq!(mariadb(&m, "SELECT item FROM shop.orders").unwrap(), "tea");
    // The program renews its lease through the agent too; the database's
    // own expiry moves with it.
    let renewed = zeroth::agent::workload_api::call(
        &socket,
        &zeroth::agent::workload_api::WorkloadRequest {
            op: "lease.renew".into(),
            id: Some(m.lease_id.clone()),
            increment_seconds: Some(1200),
            ..Default::default()
        },
    )
    .unwrap();
    let expires = renewed["expires"].as_i64().unwrap();
    assert!(
        expires >= live[0]["expires"].as_i64().unwrap() + 500,
        "{renewed} after {leases}"
    );
    let held = lab
        .maria
        .query(&format!(
            "SELECT expires FROM zeroth.expiry WHERE user = '{}'",
            m.username
        ))
        .unwrap();
    assert_eq!(held.trim().parse::<i64>().unwrap(), expires, "{renewed}");
    // The audit names the program the agent asked for.
    let issued = lab.server.audit_details("db.creds.issued").unwrap();
    assert_eq!(issued.len(), 2, "{issued:?}");
    let me = format!("uid {} pid ", rustix::process::geteuid().as_raw());
    for detail in &issued {
        let workload = detail["workload"].as_str().unwrap();
        assert!(workload.starts_with(&me), "{detail}");
    }

    // Another user of this host is refused by the agent (SO_PEERCRED),
    // before anything reaches the server.
    // Other uids run a copy they can reach, wherever the build tree is.
    let zeroth = zeroth::lab::RunnableCopy::of(Path::new(env!("CARGO_BIN_EXE_zeroth"))).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(zeroth.path())
        .args(["db", "creds", "app-ro", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("refused (403)")
            && stderr.contains("uid 65534 pid ")
            && stderr.contains("may not use"),
        "{stderr}"
    );

    // A user granted one role gets that role, and only that one.
    let as_user_with = |uid: &str, role: &str, extra: &[&Path]| {
        Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
            ])
            .arg(zeroth.path())
            .args(["db", "creds", "--config"])
            .arg(&config)
            .arg(role)
            .args(extra)
            .output()
            .unwrap()
    };
    let as_user = |uid: &str, role: &str| as_user_with(uid, role, &[]);
    let out = as_user("65533", "app-ro");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("refused (403)")
            && stderr.contains("uid 65533 pid ")
            && stderr.contains("may ask for [\"shop-rw\"] only"),
        "{stderr}"
    );
    let out = as_user("65533", "shop-rw");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("mysql://zt_shop_rw_"));

    // The agent's configuration as the package installs it, unreadable to
    // programs' users: they reach the agent by its socket without it.
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = as_user("65533", "shop-rw");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--socket"),
        "{stderr}"
    );
    let out = as_user_with("65533", "shop-rw", &[Path::new("--socket"), &socket]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("mysql://zt_shop_rw_"));
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

    // A program of a granted systemd service gets that service's roles,
    // whatever its uid; the same uid outside the service is a stranger.
    let unit = zeroth::lab::ServiceCgroup::new("zt-shop.service").unwrap();
    let in_unit = |role: &str| {
        unit.command_as(
            65532,
            zeroth.path(),
            &["db", "creds", "--config", config.to_str().unwrap(), role],
        )
        .output()
        .unwrap()
    };
    let out = in_unit("app-ro");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("postgresql://zt_app_ro_"));
    let issued = lab.server.audit_details("db.creds.issued").unwrap();
    let last = issued.last().unwrap()["workload"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        last.starts_with("uid 65532 pid ") && last.ends_with(" unit zt-shop.service"),
        "{last}"
    );
    let out = in_unit("shop-rw");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("unit zt-shop.service may ask for [\"app-ro\"] only"),
        "{stderr}"
    );
    let out = as_user("65532", "app-ro");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("may not use this agent"), "{stderr}");
    drop(unit);

    // As JSON, for scripts.
    let out = zeroth_db_creds(&config, &["app-ro", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["username"].as_str().unwrap().starts_with("zt_app_ro_"));
    assert_eq!(json["engine"], "postgres");
    assert!(
        json["password"].as_str().is_some_and(|p| p.len() >= 16),
        "{json}"
    );
    assert!(json["expires"].as_i64().is_some());
    let (ok, out) = lab.zeroth(&["lease", "revoke", json["lease_id"].as_str().unwrap()], "");
    assert!(ok, "{out}");

    // Revoking the chain revokes what the host holds, and it gets no more.
    let (ok, out) = lab.zeroth(&["token", "revoke", &chain], "");
    assert!(ok && out.contains("revoked"), "{out}");
    eventually(Duration::from_secs(10), || match mariadb(&m, "SELECT 1") {
        Ok(_) => Err("the revoked token host's user still works".to_owned()),
        Err(_) => Ok(()),
    });
    let out = zeroth_db_creds(&config, &["app-ro"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("refused (403)")
            && stderr.contains(&format!("token chain {chain} was revoked")),
        "{stderr}"
    );
    agent.stop().unwrap();
}

#[test]
fn programs_on_a_tpm_node_get_database_users_through_the_agent_without_the_tpm() {
    let lab = lab();
    lab.add_connections();
    let socket = lab.agent.join("api.sock");
    let config = |tcti: &str| {
        format!(
            "server = \"{}\"\nca_bundle = \"{}\"\ngroup = \"edge\"\ntcti = \"{tcti}\"\nstate_dir = \"{}\"\nretry_max = \"1s\"\n\n[workload_api]\nsocket = \"{}\"\n",
            lab.server.url(),
            lab.server.bundle().display(),
            lab.agent.path().display(),
            socket.display()
        )
    };
    let agent_config = lab.agent.join("agent.toml");
    std::fs::write(&agent_config, config(&lab.tpm.tcti())).unwrap();
    let mut agent = zeroth::lab::AgentProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_zeroth")),
        &agent_config,
    )
    .unwrap();
    agent
        .expect(Duration::from_secs(30), |l| {
            l.starts_with("identity renewed: ")
        })
        .unwrap();
    // The program's configuration names no usable TPM: only the agent's
    // socket can have served it.
    let program_config = lab.agent.join("program.toml");
    std::fs::write(&program_config, config("swtpm:host=127.0.0.1,port=1")).unwrap();
    let mariadb = zeroth::lab::tools::MARIADB.path().unwrap();
    let (user, item) = lab.run_with_creds(
        &program_config,
        "shop-rw",
        &[
            mariadb.to_str().unwrap(),
            "-N",
            "-B",
            "-e",
            "SELECT CONCAT(CURRENT_USER(), ':', item) FROM shop.orders",
        ],
    );
    assert!(user.starts_with("zt_shop_rw_"), "{user}");
    assert_eq!(item, "tea");
    agent.stop().unwrap();
}
