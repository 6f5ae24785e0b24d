//! MariaDB expiry keeps up with issuance: 8 clients asking for users with
//! a 10 s lifetime for 15 s, and no user can log in more than 5 s after its
//! expiry (the database locks due accounts itself, then drops them).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use secrecy::ExposeSecret;
use zeroth::agent::enrol::post_json;
use zeroth::wire::db::{CredsRequest, CredsResponse};

use super::lab;

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn mariadb_users_made_under_load_log_in_no_more_5_s_after_their_expiry() {
    let lab = lab();
    lab.add_connections();
    let clients = lab.node_clients(8);
    let url = format!("{}/v1/db/creds/shop-rw", lab.server.url());
    let issued: Mutex<Vec<CredsResponse>> = Mutex::new(Vec::new());
    let until = Instant::now() + Duration::from_secs(15);
    std::thread::scope(|s| {
        for http in &clients {
            let (url, issued) = (&url, &issued);
            s.spawn(move || {
                while Instant::now() < until {
                    match post_json::<_, CredsResponse>(
                        http,
                        url,
                        &CredsRequest {
                            ttl_seconds: Some(10),
                        },
                    ) {
                        Ok(c) => issued.lock().unwrap().push(c),
                        // Pushed back while expiry catches up: asked later.
                        Err(zeroth::agent::enrol::AgentError::Refused { status: 503, .. }) => {
                            std::thread::sleep(Duration::from_millis(50))
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            });
        }
    });
    let issued = issued.into_inner().unwrap();
    assert!(issued.len() > 100, "only {} users made", issued.len());
    let expires: BTreeMap<String, i64> = issued
        .iter()
        .map(|c| (c.username.clone(), c.expires))
        .collect();
    let last = *expires.values().max().unwrap() as f64;

    // Watch the database until the last user's expiry has passed by 5 s:
    // an account still there and not locked could log in.
    let mut late: BTreeMap<String, f64> = BTreeMap::new();
    let mut tried_login = 0;
    loop {
        let now = unix_now();
        let present = lab
            .maria
            .query(
                "SELECT User FROM mysql.global_priv WHERE User LIKE 'zt%' \
                 AND COALESCE(JSON_VALUE(Priv, '$.account_locked'), 0) = 0",
            )
            .unwrap();
        for user in present.lines().map(str::trim) {
            if let Some(&exp) = expires.get(user) {
                let over = now - exp as f64;
                if over > 5.0 {
                    let worst = late.entry(user.to_owned()).or_insert(over);
                    *worst = worst.max(over);
                }
            }
        }
        // Now and then, a user past its expiry by 5 s tries to log in.
        if let Some(c) = issued
            .iter()
            .filter(|c| now - c.expires as f64 > 5.0)
            .nth(tried_login * 7)
        {
            tried_login += 1;
            let login = std::process::Command::new("mariadb")
                .args([
                    "--no-defaults",
                    "--protocol=TCP",
                    "-h",
                    "127.0.0.1",
                    "-N",
                    "-B",
                ])
                .arg(format!("-P{}", lab.maria.port()))
                .arg(format!("-u{}", c.username))
                .env("MYSQL_PWD", c.password.expose_secret())
                .args(["-e", "SELECT 1"])
                .output()
                .unwrap();
            if login.status.success() {
                late.entry(format!("{} (logged in)", c.username))
                    .or_insert(now - c.expires as f64);
            }
        }
        if now > last + 6.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let left = lab
        .maria
        .query("SELECT COUNT(*) FROM mysql.user WHERE User LIKE 'zt%'")
        .unwrap();
    println!(
        "{} users made, {tried_login} logins tried past expiry + 5 s, {} accounts not yet dropped 6 s after the last expiry",
        issued.len(),
        left.trim()
    );
    assert!(tried_login >= 5, "only {tried_login} logins tried");
    let worst = late.values().cloned().fold(0.0, f64::max);
    assert!(
        late.is_empty(),
        "{} of {} users could log in more than 5 s after their expiry (worst {worst:.1} s), e.g. {:?}",
        late.len(),
        issued.len(),
        late.iter().take(5).collect::<Vec<_>>()
    );
}

#[test]
fn new_mariadb_users_wait_while_expired_ones_are_not_yet_dropped() {
    let lab = lab();
    lab.add_connections();
    // A backlog well past the bound: 6,000 MariaDB users expired a minute ago
    // and not yet dropped, as after an outage of the revoker.
    {
        let db = rusqlite::Connection::open(lab.server.database()).unwrap();
        db.busy_timeout(Duration::from_secs(30)).unwrap();
        let tx = db.unchecked_transaction().unwrap();
        let past = unix_now() as i64 - 60;
        for i in 0..6_000 {
            tx.execute(
                "INSERT INTO leases (id, kind, role, connection, holder, external_name, state, created, expires, max_expires)
                 VALUES (?1, 'db', 'shop-rw', 'maria', 'spiffe://lab.zeroth/backlog', ?2, 'active', ?3, ?3, ?3)",
                rusqlite::params![format!("backlog{i:05}"), format!("zt_backlog_{i}"), past],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    // A new MariaDB user is refused for now, saying why and when to ask
    // again; PostgreSQL (whose users expire by themselves) is not held up.
    let url = format!("{}/v1/db/creds/shop-rw", lab.server.url());
    let http = &lab.node_clients(1)[0];
    let refused = http.post(&url).json(&serde_json::json!({})).send().unwrap();
    assert_eq!(refused.status().as_u16(), 503);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some("2".to_owned())
    );
    let body: serde_json::Value = refused.json().unwrap();
    assert_eq!(body["error"], "busy", "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("revocation is behind"),
        "{body}"
    );
    lab.creds("app-ro", None).unwrap();
    // Once the revoker has dropped enough of them, users are made again.
    super::eventually(Duration::from_secs(120), || {
        match lab.creds("shop-rw", None) {
            Ok(_) => Ok(()),
            Err(zeroth::agent::enrol::AgentError::Refused {
                status: 503,
                reason,
            }) => Err(reason),
            Err(e) => panic!("{e}"),
        }
    });
}
