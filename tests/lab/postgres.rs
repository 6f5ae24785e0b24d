use std::process::{Command, Output};

use secrecy::ExposeSecret;
use zeroth::lab::{postgres::SUPERUSER, tools::PSQL, Postgres};

fn psql(pg: &Postgres, password: &str, sql: &str) -> Output {
    Command::new(PSQL.path().unwrap())
        .arg(pg.conninfo(SUPERUSER, "postgres"))
        .args(["-XAtq", "-c", sql])
        .env("PGPASSWORD", password)
        .output()
        .unwrap()
}

#[test]
fn psql_logs_in_with_the_password_and_not_with_a_wrong_one() {
    let pg = Postgres::start().unwrap();
    let ok = psql(&pg, pg.password().expose_secret(), "SELECT 40 + 2");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "42");

    let method = psql(
        &pg,
        pg.password().expose_secret(),
        "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = current_user",
    );
    assert_eq!(String::from_utf8_lossy(&method.stdout).trim(), "t");

    let bad = psql(&pg, "not-the-password", "SELECT 1");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("password authentication failed"), "{err}");
}
