//! MariaDB users asked for together are made by one GRANT; a batch the
//! server refuses is redone user by user, so one bad request fails alone.

use mysql_async::OptsBuilder;
use secrecy::ExposeSecret;
use zeroth::creds::db::mariadb_batch::{spawn, Job};
use zeroth::creds::db::DbError;
use zeroth::lab::MariaDb;

fn job(name: &str, hash: &str) -> (Job, tokio::sync::oneshot::Receiver<Result<usize, DbError>>) {
    let (done, answer) = tokio::sync::oneshot::channel();
    (
        Job {
            grant: "GRANT SELECT ON `shop`.* TO".into(),
            grantee: format!("'{name}'@'%' IDENTIFIED BY PASSWORD '{hash}'"),
            name: name.into(),
            expires: 2_000_000_000,
            done,
        },
        answer,
    )
}

#[test]
fn users_asked_for_together_share_one_grant_and_a_bad_one_fails_alone() {
    let maria = MariaDb::start().unwrap();
    maria
        .query("CREATE DATABASE shop; CREATE DATABASE zeroth; CREATE TABLE zeroth.expiry (user VARCHAR(80) PRIMARY KEY, expires BIGINT NOT NULL)")
        .unwrap();
    let hash = maria
        .query("SELECT PASSWORD('a long random password')")
        .unwrap()
        .trim()
        .to_owned();
    let opts = OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(maria.port())
        .user(Some("root"))
        .pass(Some(maria.password().expose_secret()))
        .prefer_socket(false);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let batches = spawn(mysql_async::Pool::new(opts), "lab MariaDB".into());
        // Queued before the batching task runs (one thread): one batch.
        let mut answers = Vec::new();
        for name in ["zt_batch_a", "zt_batch_b", "zt_batch_c"] {
            let (j, a) = job(name, &hash);
            batches.send(j).map_err(|_| ()).unwrap();
            answers.push(a);
        }
        for a in answers {
            assert_eq!(a.await.unwrap().unwrap(), 3, "made by one statement");
        }
        // A user name MariaDB refuses (over 80 characters) among good ones.
        let long = format!("zt_{}", "x".repeat(90));
        let mut answers = Vec::new();
        for name in ["zt_batch_d", long.as_str(), "zt_batch_e"] {
            let (j, a) = job(name, &hash);
            batches.send(j).map_err(|_| ()).unwrap();
            answers.push(a);
        }
        let mut results = Vec::new();
        for a in answers {
            results.push(a.await.unwrap());
        }
        assert_eq!(*results[0].as_ref().unwrap(), 1);
        assert_eq!(*results[2].as_ref().unwrap(), 1);
        let refused = results[1].as_ref().unwrap_err().to_string();
        assert!(refused.contains("too long"), "{refused}");
    });
    let users = maria
        .query("SELECT GROUP_CONCAT(User ORDER BY User) FROM mysql.user WHERE User LIKE 'zt\\_%'")
        .unwrap();
    assert_eq!(
        users.trim(),
        "zt_batch_a,zt_batch_b,zt_batch_c,zt_batch_d,zt_batch_e"
    );
    // Every user made has its expiry row (the bad one's may stay: it names
    // no user, and the sweep's DROP USER IF EXISTS clears it).
    let missing = maria
        .query("SELECT COUNT(*) FROM mysql.user u LEFT JOIN zeroth.expiry e ON e.user = u.User WHERE u.User LIKE 'zt\\_%' AND e.user IS NULL")
        .unwrap();
    assert_eq!(missing.trim(), "0");
    // And the users work.
    let login = std::process::Command::new(zeroth::lab::tools::MARIADB.path().unwrap())
        .args([
            "--no-defaults",
            "--protocol=TCP",
            "-N",
            "-B",
            "--host=127.0.0.1",
        ])
        .arg(format!("--port={}", maria.port()))
        .args(["--user=zt_batch_b", "-e", "SELECT CURRENT_USER()"])
        .env("MYSQL_PWD", "a long random password")
        .output()
        .unwrap();
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
}
