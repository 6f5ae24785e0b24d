//! PostgreSQL refuses a change to a role's catalogue row that another
//! session changed meanwhile ("tuple concurrently updated"). That is a
//! collision, not a fault of the statement: zeroth tries again, and the
//! holder gets its renewal or give-back, not a 502.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use secrecy::ExposeSecret;
use zeroth::lab::tools;

use super::{eventually, lab, psql_super_with, users_of, Lab};

/// A superuser session with an uncommitted change to one role's row.
struct HeldRole {
    session: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl HeldRole {
    /// Changes `user`'s row in a transaction left open.
    fn hold(lab: &Lab, user: &str) -> Self {
        let mut session = Command::new(tools::PSQL.path().unwrap())
            .arg(
                lab.pg
                    .conninfo(zeroth::lab::postgres::SUPERUSER, "postgres"),
            )
            .args(["-XAtq", "-v", "ON_ERROR_STOP=1"])
            .env("PGPASSWORD", lab.pg.password().expose_secret())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = session.stdin.take().unwrap();
        let mut stdout = BufReader::new(session.stdout.take().unwrap());
        writeln!(
            stdin,
            "BEGIN; ALTER ROLE {user} CONNECTION LIMIT 7; SELECT 'held';"
        )
        .unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "held");
        Self {
            session,
            stdin,
            stdout,
        }
    }

    /// Commits the change, once zeroth's statement waits behind it.
    fn commit(mut self, lab: &Lab) {
        eventually(Duration::from_secs(20), || {
            let waiting = psql_super_with(
                &lab.pg,
                lab.pg.password().expose_secret(),
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'zeroth' AND wait_event_type = 'Lock'",
            )?;
            if waiting == "1" {
                Ok(())
            } else {
                Err(format!(
                    "{waiting} of zeroth's sessions wait for the held row"
                ))
            }
        });
        writeln!(self.stdin, "COMMIT; SELECT 'committed';").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "committed");
        drop(self.stdin);
        assert!(self.session.wait().unwrap().success());
    }
}

fn role_column(lab: &Lab, user: &str, column: &str) -> String {
    psql_super_with(
        &lab.pg,
        lab.pg.password().expose_secret(),
        &format!("SELECT {column} FROM pg_roles WHERE rolname = '{user}'"),
    )
    .unwrap()
}

#[test]
fn a_renewal_and_a_give_back_that_collide_with_a_change_to_the_role_are_tried_again() {
    let lab = lab();
    lab.add_connections();
    let c = lab.creds("app-ro", Some(60)).unwrap();

    // Renewal: ALTER ROLE … VALID UNTIL waits for the held row, then
    // collides with the committed change.
    let held = HeldRole::hold(&lab, &c.username);
    let renewed = std::thread::scope(|s| {
        let renewal = s.spawn(|| lab.try_renew(&c.lease_id, 1800));
        held.commit(&lab);
        renewal.join().unwrap()
    })
    .unwrap_or_else(|e| panic!("the renewal was refused: {e}"));
    let expires = renewed["expires"].as_i64().unwrap();
    assert_eq!(
        role_column(
            &lab,
            &c.username,
            "extract(epoch FROM rolvaliduntil)::bigint"
        ),
        expires.to_string()
    );
    // Both changes hold: the other session's and zeroth's.
    assert_eq!(role_column(&lab, &c.username, "rolconnlimit"), "7");

    // Give-back: ALTER ROLE … NOLOGIN collides the same way.
    let held = HeldRole::hold(&lab, &c.username);
    let status = std::thread::scope(|s| {
        let give_back = s.spawn(|| lab.give_back(&c.lease_id));
        held.commit(&lab);
        give_back.join().unwrap()
    });
    assert_eq!(status, 204);
    assert!(
        !users_of(&lab, "postgres").contains(&c.username),
        "the user outlived its give-back"
    );
    let (ok, out) = lab.zeroth(&["lease", "list", "--json"], "");
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "[]");
    let log = lab.server.log();
    assert!(
        log.contains("collided with a concurrent change"),
        "the collisions were not logged:\n{log}"
    );
}
