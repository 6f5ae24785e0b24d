//! MariaDB accounts are revoked wherever they are: at every host a template
//! made them at, and with their sessions ended even when the expiry event
//! dropped the account first.

use std::time::Duration;

use super::{eventually, lab, mariadb, mariadb_session, session_across_revocation, Lab};

fn accounts(lab: &Lab, user: &str) -> String {
    lab.maria
        .query(&format!(
            "SELECT COUNT(*) FROM mysql.user WHERE User = '{user}'"
        ))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn a_user_made_at_another_host_is_revoked_and_expires_there() {
    let lab = lab();
    lab.add_connections();
    let c = lab.creds("maria-local", None).unwrap();
    let host = lab
        .maria
        .query(&format!(
            "SELECT Host FROM mysql.user WHERE User = '{}'",
            c.username
        ))
        .unwrap();
    assert_eq!(host.trim(), "127.0.0.1");
    assert_eq!(mariadb(&c, "SELECT item FROM shop.orders").unwrap(), "tea");
    assert_eq!(lab.give_back(&c.lease_id), 204);
    assert_eq!(accounts(&lab, &c.username), "0");
    let err = mariadb(&c, "SELECT 1").unwrap_err();
    assert!(err.contains("Access denied"), "{err}");

    // The database's own expiry drops it there too, with zeroth not asked.
    let c = lab.creds("maria-local", None).unwrap();
    lab.maria
        .query(&format!(
            "UPDATE zeroth.expiry SET expires = 0 WHERE user = '{}'",
            c.username
        ))
        .unwrap();
    eventually(Duration::from_secs(10), || {
        match accounts(&lab, &c.username).as_str() {
            "0" => Ok(()),
            n => Err(format!("{n} accounts left after their expiry")),
        }
    });
}

#[test]
fn sessions_of_a_user_the_expiry_already_dropped_are_ended_at_revocation() {
    let lab = lab();
    lab.add_connections();
    let c = lab.creds("shop-rw", None).unwrap();
    let out = session_across_revocation(&lab, &c, mariadb_session(&c), || {
        // The expiry event got there first: the account is gone, its
        // open session is not.
        lab.maria
            .query(&format!("DROP USER '{}'@'%'", c.username))
            .unwrap();
    });
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("still here"),
        "the open session survived"
    );
}

/// A global status counter of the lab's MariaDB (`Com_drop_user`, …).
fn status(maria: &zeroth::lab::MariaDb, name: &str) -> u64 {
    let out = maria
        .query(&format!("SHOW GLOBAL STATUS LIKE '{name}'"))
        .unwrap();
    out.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn revocations_asked_together_are_done_in_one_batch_each_answered() {
    use secrecy::ExposeSecret;
    use zeroth::creds::db::{DbAdmin, Engine, Target};
    let maria = zeroth::lab::MariaDb::start().unwrap();
    // 40 users, one of them also at another host; two more names that do
    // not exist (already gone: still revoked).
    let names: Vec<String> = (0..42).map(|i| format!("zt_batch_{i}")).collect();
    let mut sql = String::new();
    for n in &names[..40] {
        sql.push_str(&format!("CREATE USER '{n}'@'%' IDENTIFIED BY 'pw-{n}';\n"));
    }
    sql.push_str("CREATE USER 'zt_batch_7'@'127.0.0.1' IDENTIFIED BY 'pw-zt_batch_7';\n");
    maria.query(&sql).unwrap();
    // Three of them logged in, each in a session that would last a minute.
    let mut sessions: Vec<std::process::Child> = ["zt_batch_1", "zt_batch_7", "zt_batch_39"]
        .iter()
        .map(|n| {
            std::process::Command::new(zeroth::lab::tools::MARIADB.path().unwrap())
                .args(["--no-defaults", "--protocol=TCP", "-h", "127.0.0.1"])
                .arg(format!("-P{}", maria.port()))
                .arg(format!("-u{n}"))
                .arg(format!("-ppw-{n}"))
                .args(["-e", "SELECT SLEEP(60)"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    eventually(Duration::from_secs(10), || {
        let n = maria
            .query(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER LIKE 'zt_batch_%'",
            )
            .unwrap();
        (n.trim() == "3")
            .then_some(())
            .ok_or(format!("{n} sessions"))
    });
    let (drops, locks) = (
        status(&maria, "Com_drop_user"),
        status(&maria, "Com_alter_user"),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answers = rt.block_on(async {
        let admin = DbAdmin::connect(Target {
            engine: Engine::MariaDb,
            host: "127.0.0.1".into(),
            port: maria.port(),
            dbname: "mysql".into(),
            admin_user: "root".into(),
            admin_password: maria.password().expose_secret().to_owned().into(),
            tls_ca: None,
        })
        .await
        .unwrap();
        let admin = std::sync::Arc::new(admin);
        // All asked at once (the revoker's way with many due leases).
        let mut all = tokio::task::JoinSet::new();
        for (i, n) in names.iter().enumerate() {
            let (admin, n) = (admin.clone(), n.clone());
            all.spawn(async move { (i, admin.revoke(&n, &[]).await) });
        }
        let mut answers = vec![None; names.len()];
        while let Some(done) = all.join_next().await {
            let (i, answer) = done.unwrap();
            answers[i] = Some(answer.map_err(|e| e.to_string()));
        }
        answers
    });
    // Each revocation has its own answer: whether the user existed.
    for (i, (n, a)) in names.iter().zip(&answers).enumerate() {
        assert_eq!(a, &Some(Ok(i < 40)), "{n}");
    }
    let left = maria
        .query("SELECT COUNT(*) FROM mysql.user WHERE User LIKE 'zt_batch_%'")
        .unwrap();
    assert_eq!(left.trim(), "0");
    // One statement locked them all and one dropped them all.
    let (dropped_by, locked_by) = (
        status(&maria, "Com_drop_user") - drops,
        status(&maria, "Com_alter_user") - locks,
    );
    println!("41 accounts of 40 users: {locked_by} ALTER USER, {dropped_by} DROP USER");
    assert_eq!((locked_by, dropped_by), (1, 1));
    // Their sessions were ended.
    eventually(Duration::from_secs(10), || {
        let mut running = 0;
        for c in sessions.iter_mut() {
            if c.try_wait().unwrap().is_none() {
                running += 1;
            }
        }
        (running == 0)
            .then_some(())
            .ok_or(format!("{running} sessions still open"))
    });
}
