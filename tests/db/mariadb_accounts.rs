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
