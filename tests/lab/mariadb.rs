use std::process::Command;
use std::time::{Duration, Instant};

use zeroth::lab::{tools::MARIADB, MariaDb};

#[test]
fn event_scheduler_is_on_and_a_one_shot_event_runs() {
    let db = MariaDb::start().unwrap();
    assert_eq!(db.query("SELECT @@event_scheduler").unwrap().trim(), "ON");
    db.query(
        "CREATE DATABASE lab; CREATE TABLE lab.fired (at DATETIME(6));\
         CREATE EVENT lab.once ON SCHEDULE AT CURRENT_TIMESTAMP + INTERVAL 1 SECOND \
         DO INSERT INTO lab.fired VALUES (NOW(6));",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = db.query("SELECT COUNT(*) FROM lab.fired").unwrap();
        if n.trim() == "1" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the event did not run within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50)); // polling the table, with a deadline
    }
    // A one-shot event without ON COMPLETION PRESERVE removes itself.
    let left = db
        .query("SELECT COUNT(*) FROM information_schema.events WHERE event_schema = 'lab'")
        .unwrap();
    assert_eq!(left.trim(), "0");
}

#[test]
fn root_needs_its_password() {
    let db = MariaDb::start().unwrap();
    let out = Command::new(MARIADB.path().unwrap())
        .args([
            "--no-defaults",
            "--protocol=TCP",
            "-h",
            "127.0.0.1",
            "-uroot",
        ])
        .arg(format!("-P{}", db.port()))
        .env("MYSQL_PWD", "not-the-password")
        .args(["-e", "SELECT 1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Access denied"), "{err}");
    assert_eq!(db.query("SELECT 1").unwrap().trim(), "1");
}
