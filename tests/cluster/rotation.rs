//! `zeroth db rotate-root` on one server of a cluster: the others find the
//! new password in the store and keep issuing, once their old pooled
//! connections are gone.

use std::time::Duration;

use super::{cluster, role_exists, within, zeroth};

#[test]
fn a_password_rotated_on_one_server_is_used_by_the_other() {
    let c = cluster();
    c.node.enrol_across(&c.a, &c.a);
    // An admin of its own, so the lab's superuser can end its sessions.
    c.pg.run_sql("CREATE ROLE rotated_admin LOGIN SUPERUSER PASSWORD 'first-password'")
        .unwrap();
    let port = c.pg.port().to_string();
    let (ok, out) = zeroth(
        &c.a,
        &[
            "db",
            "connection",
            "add",
            "pg",
            "--engine",
            "postgres",
            "--port",
            &port,
            "--admin-user",
            "rotated_admin",
        ],
        "first-password\n",
    );
    assert!(ok, "{out}");
    // Both servers have opened their pools with the first password.
    for s in [&c.a, &c.b] {
        let lease = c.node.creds(s, None).unwrap();
        assert!(role_exists(&c.pg, &lease.username));
    }
    let (ok, out) = zeroth(&c.a, &["db", "rotate-root", "pg"], "");
    assert!(ok, "{out}");
    // Pooled connections end (a database restart, an idle timeout): B
    // must log in again, with the password A set.
    c.pg.run_sql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'rotated_admin'",
    )
    .unwrap();
    let mut last = String::new();
    within(
        Duration::from_secs(10),
        "B issuing after the rotation",
        || match c.node.creds(&c.b, None) {
            Ok(lease) => role_exists(&c.pg, &lease.username),
            Err(e) => {
                last = e.to_string();
                false
            }
        },
    );
    // And A, which rotated it, still issues.
    let lease = c.node.creds(&c.a, None).unwrap();
    assert!(role_exists(&c.pg, &lease.username), "{last}");
}
