//! Unfinished lease work is finished on the running server: revocations
//! that failed are retried until done, and a lease left `creating` with a
//! real user behind it is undone, without a restart.

use std::time::Duration;

use super::{eventually, lab, psql, users_of, Lab};

fn lease_state(lab: &Lab, id: &str) -> String {
    let db = rusqlite::Connection::open(lab.server.database()).unwrap();
    db.query_row("SELECT state FROM leases WHERE id = ?1", [id], |r| r.get(0))
        .unwrap()
}

fn metric(lab: &Lab, line_start: &str) -> String {
    let http = zeroth::agent::enrol::client(&lab.server.bundle()).unwrap();
    let text = http
        .get(format!("{}/metrics", lab.server.url()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in:\n{text}"))
        .to_owned()
}

#[test]
fn a_revocation_the_database_refused_is_retried_until_the_user_is_gone() {
    let lab = lab();
    lab.add_connections();
    let c = lab.creds("logged", None).unwrap();
    assert_eq!(psql(&c, "SELECT text FROM greetings").unwrap(), "hello");
    // The role's revocation statement needs a table that is not there yet:
    // the database refuses the revocation, as it would while it is down.
    assert_eq!(lab.give_back(&c.lease_id), 502);
    assert_eq!(lease_state(&lab, &c.lease_id), "revoking");
    let (ok, out) = lab.zeroth(&["lease", "list"], "");
    assert!(ok && out.contains("revoking"), "{out}");
    assert_eq!(
        metric(&lab, "zeroth_leases{state=\"revoking\"}"),
        "zeroth_leases{state=\"revoking\"} 1"
    );
    assert!(users_of(&lab, "postgres").contains(&c.username));

    // The database accepts it again: the revoker finishes the job by itself.
    super::psql_as_superuser(&lab.pg, "CREATE TABLE revocations (name text)");
    eventually(Duration::from_secs(30), || {
        match lease_state(&lab, &c.lease_id).as_str() {
            "revoked" => Ok(()),
            other => Err(format!("lease still {other}")),
        }
    });
    assert!(!users_of(&lab, "postgres").contains(&c.username));
    let err = psql(&c, "SELECT 1").unwrap_err();
    assert!(err.contains("authentication failed"), "{err}");
    assert_eq!(
        metric(&lab, "zeroth_leases{state=\"revoking\"}"),
        "zeroth_leases{state=\"revoking\"} 0"
    );
    let revoked = lab.server.audit_details("db.creds.revoked").unwrap();
    assert_eq!(revoked.len(), 1, "one revocation, one event: {revoked:?}");
    assert_eq!(revoked[0]["reason"], "revocation retried");
}

#[test]
fn a_lease_left_creating_with_a_real_user_is_undone_while_the_server_runs() {
    let lab = lab();
    lab.add_connections();
    // A user zeroth made whose lease never became active (the ledger write
    // after CREATE ROLE failed): a login-enabled user under `creating`.
    let name = "zt_app_ro_abandoned";
    super::psql_as_superuser(
        &lab.pg,
        &format!("CREATE ROLE {name} LOGIN PASSWORD 'left-behind-secret-1'"),
    );
    let made = zeroth::store::now() - 3600;
    let db = rusqlite::Connection::open(lab.server.database()).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute(
        "INSERT INTO leases (id, kind, role, connection, holder, external_name, state, created, expires, max_expires)
         VALUES ('abandoned', 'db', 'app-ro', 'pg', 'spiffe://lab.zeroth/node/x', ?1, 'creating', ?2, ?3, ?3)",
        rusqlite::params![name, made, made + 7200],
    )
    .unwrap();
    eventually(Duration::from_secs(30), || {
        match lease_state(&lab, "abandoned").as_str() {
            "revoked" => Ok(()),
            other => Err(format!("lease still {other}")),
        }
    });
    assert!(!users_of(&lab, "postgres").contains(&name.to_owned()));
    let revoked = lab.server.audit_details("db.creds.revoked").unwrap();
    assert_eq!(revoked[0]["reason"], "left half-made", "{revoked:?}");
    assert_eq!(revoked[0]["user_existed"], true);
}

#[test]
fn a_huge_renewal_increment_is_clamped_to_the_lease_maximum() {
    let lab = lab();
    lab.add_connections();
    let c = lab.creds("app-ro", Some(60)).unwrap();
    // Beyond what a body may ask for: refused, naming the limit.
    match lab.try_renew(&c.lease_id, u64::MAX) {
        Err(zeroth::agent::enrol::AgentError::Refused { status, reason }) => {
            assert_eq!(status, 400);
            assert!(
                reason.contains("more than the most a request may ask for"),
                "{reason}"
            );
        }
        other => panic!("an increment of u64::MAX seconds: {other:?}"),
    }
    // The most a body may ask for: clamped to the lease's maximum.
    let renewed = lab.renew(&c.lease_id, zeroth::wire::seconds::MAX);
    let db = rusqlite::Connection::open(lab.server.database()).unwrap();
    let max: i64 = db
        .query_row(
            "SELECT max_expires FROM leases WHERE id = ?1",
            [&c.lease_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(renewed["expires"].as_i64().unwrap(), max, "{renewed}");
    assert_eq!(psql(&c, "SELECT text FROM greetings").unwrap(), "hello");
}

fn attempts(lab: &Lab, id: &str) -> i64 {
    let db = rusqlite::Connection::open(lab.server.database()).unwrap();
    db.query_row("SELECT attempts FROM leases WHERE id = ?1", [id], |r| {
        r.get(0)
    })
    .unwrap()
}

/// The state `zeroth lease list --json` shows for `id`.
fn listed_state(lab: &Lab, id: &str) -> Option<String> {
    let (ok, out) = lab.zeroth(&["lease", "list", "--json"], "");
    assert!(ok, "{out}");
    let leases: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    leases
        .iter()
        .find(|l| l["id"] == id)
        .map(|l| l["state"].as_str().unwrap().to_owned())
}

#[test]
fn a_revocation_that_keeps_failing_is_left_for_an_operator_who_retries_or_marks_it_done() {
    let lab = lab();
    lab.add_connections();
    let a = lab.creds("logged", None).unwrap();
    let b = lab.creds("logged", None).unwrap();
    // Both revocations refused by the database (the role's statement needs
    // a table that is not there).
    assert_eq!(lab.give_back(&a.lease_id), 502);
    assert_eq!(lab.give_back(&b.lease_id), 502);
    // As after half an hour of failed attempts: one attempt left each.
    let max = zeroth::store::leases::MAX_ATTEMPTS;
    {
        let db = rusqlite::Connection::open(lab.server.database()).unwrap();
        db.busy_timeout(Duration::from_secs(30)).unwrap();
        db.execute(
            "UPDATE leases SET attempts = ?1, retry_at = 0 WHERE role = 'logged'",
            [max - 1],
        )
        .unwrap();
    }
    // The last attempt fails: the leases are given up on, shown and
    // counted as irrevocable, with an audit event each, and no longer tried.
    eventually(Duration::from_secs(60), || {
        match (
            listed_state(&lab, &a.lease_id),
            listed_state(&lab, &b.lease_id),
        ) {
            (Some(x), Some(y)) if x == "irrevocable" && y == "irrevocable" => Ok(()),
            other => Err(format!("leases listed as {other:?}")),
        }
    });
    assert_eq!(attempts(&lab, &a.lease_id), max);
    assert_eq!(
        metric(&lab, "zeroth_leases{state=\"irrevocable\"}"),
        "zeroth_leases{state=\"irrevocable\"} 2"
    );
    let given_up = lab.server.audit_details("lease.irrevocable").unwrap();
    assert_eq!(given_up.len(), 2, "{given_up:?}");
    assert!(
        given_up[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("revocations"),
        "{given_up:?}"
    );
    let (ok, out) = lab.zeroth(&["lease", "list"], "");
    assert!(ok && out.contains("irrevocable"), "{out}");

    // The cause fixed, the operator retries one: the revoker finishes it.
    super::psql_as_superuser(&lab.pg, "CREATE TABLE revocations (name text)");
    let (ok, out) = lab.zeroth(&["lease", "retry", &a.lease_id], "");
    assert!(ok, "{out}");
    eventually(Duration::from_secs(30), || {
        match lease_state(&lab, &a.lease_id).as_str() {
            "revoked" => Ok(()),
            other => Err(format!("lease still {other}")),
        }
    });
    assert!(!users_of(&lab, "postgres").contains(&a.username));
    // Meanwhile the revoker passed several times, and left the other alone.
    assert_eq!(
        attempts(&lab, &b.lease_id),
        max,
        "tried after it was given up"
    );
    // The other, whose user the operator removed by hand, is marked done
    // without asking the database.
    super::psql_as_superuser(&lab.pg, &format!("DROP ROLE {}", b.username));
    let (ok, out) = lab.zeroth(&["lease", "mark-revoked", &b.lease_id], "");
    assert!(ok, "{out}");
    assert_eq!(lease_state(&lab, &b.lease_id), "revoked");
    let marked = lab.server.audit_details("lease.marked_revoked").unwrap();
    assert_eq!(marked.len(), 1, "{marked:?}");
    assert_eq!(marked[0]["was"], "revoking");
    assert_eq!(
        metric(&lab, "zeroth_leases{state=\"irrevocable\"}"),
        "zeroth_leases{state=\"irrevocable\"} 0"
    );
    // Neither can be retried or marked again.
    let (ok, out) = lab.zeroth(&["lease", "retry", &b.lease_id], "");
    assert!(!ok && out.contains("no unfinished lease"), "{out}");
}
