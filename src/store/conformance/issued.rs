//! Scenarios on what is issued: leases, database connections, SSH serials,
//! revocations and CA keys, and the retention sweep.

use super::*;

pub(super) fn lease(id: &str, state: LeaseState, created: i64) -> Lease {
    Lease {
        id: id.into(),
        kind: "db".into(),
        role: "r".into(),
        connection: "c".into(),
        holder: "h".into(),
        external_name: format!("zt_{id}"),
        state,
        created,
        expires: created + 600,
        max_expires: created + 3600,
    }
}

pub(super) fn add(s: &Store, l: Lease) {
    commit(s, |tx| leases::insert(tx, &l).unwrap());
}

pub(super) fn a_revoked_lease_never_becomes_active_again(f: &mut Fixture) {
    let s = f.store();
    commit(s, |tx| {
        leases::insert(tx, &lease("a", LeaseState::Creating, crate::store::now())).unwrap()
    });
    // A second lease with the same id fails, and so does its transaction:
    // nothing of it is kept, on either engine.
    {
        let mut conn = s.lock();
        let tx = conn.transaction().unwrap();
        leases::insert(&tx, &lease("b", LeaseState::Active, 0)).unwrap();
        assert!(leases::insert(&tx, &lease("a", LeaseState::Active, 0)).is_err());
        assert!(matches!(
            tx.commit(),
            Err(crate::store::sql::SqlError::Aborted)
        ));
    }
    commit(s, |tx| {
        use LeaseState::*;
        assert!(leases::transition(tx, "a", Creating, Revoking).unwrap());
        assert!(leases::transition(tx, "a", Revoking, Revoked).unwrap());
        // An issuance finishing late expects `creating`: nothing changes.
        assert!(!leases::transition(tx, "a", Creating, Active).unwrap());
        assert!(!leases::transition(tx, "a", Active, Revoking).unwrap());
        assert!(!leases::set_expires(tx, "a", crate::store::now() + 60).unwrap());
    });
    assert_eq!(
        leases::get(&s.lock(), "a").unwrap().unwrap().state,
        LeaseState::Revoked
    );
    assert!(leases::get(&s.lock(), "b").unwrap().is_none());
}

pub(super) fn only_unfinished_or_expired_leases_are_due(f: &mut Fixture) {
    let s = f.store();
    let t = crate::store::now();
    // Left by the run before this one, in this very second.
    add(s, lease("earlier", LeaseState::Creating, t));
    let started = leases::last_row(&s.lock()).unwrap();
    // Under way on this run: left alone.
    add(s, lease("live", LeaseState::Creating, t));
    // This run's, but abandoned longer than the grace.
    add(s, lease("stuck", LeaseState::Creating, t - CREATING_GRACE));
    add(s, lease("retry", LeaseState::Revoking, t));
    add(s, lease("fresh", LeaseState::Active, t));
    add(s, lease("old", LeaseState::Active, t - 600));
    let conn = s.lock();
    let ids = |at| {
        let mut v: Vec<String> = leases::due(&conn, at, started, 100)
            .unwrap()
            .into_iter()
            .map(|l| l.id)
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(t), ["earlier", "old", "retry", "stuck"]);
    // A failed attempt is put off with backoff, then comes back.
    leases::retry_later(&conn, "retry", t).unwrap();
    assert_eq!(ids(t), ["earlier", "old", "stuck"]);
    assert_eq!(ids(t + 2), ["earlier", "old", "retry", "stuck"]);
    leases::retry_later(&conn, "retry", t).unwrap();
    assert_eq!(ids(t + 3), ["earlier", "old", "stuck"]);
    assert_eq!(ids(t + 4), ["earlier", "old", "retry", "stuck"]);
    for _ in 0..10 {
        leases::retry_later(&conn, "retry", t).unwrap();
    }
    assert!(!ids(t + 59).contains(&"retry".to_string()));
    assert!(
        ids(t + 60).contains(&"retry".to_string()),
        "backoff stops at a minute"
    );
    let mut counts = leases::counts(&conn).unwrap();
    counts.sort_by_key(|(state, _)| state.as_str());
    assert_eq!(
        counts,
        [
            (LeaseState::Active, 2),
            (LeaseState::Creating, 3),
            (LeaseState::Revoking, 1)
        ]
    );
}

pub(super) fn leases_are_listed_by_holder_and_prefix(f: &mut Fixture) {
    let s = f.store();
    let t = crate::store::now();
    for (id, role, holder) in [
        ("l1", "app", "h1"),
        ("l2", "app", "h2"),
        ("l3", "ops", "h1"),
    ] {
        add(
            s,
            Lease {
                role: role.into(),
                holder: holder.into(),
                ..lease(id, LeaseState::Active, t)
            },
        );
    }
    add(s, lease("gone", LeaseState::Revoked, t));
    let ids = |holder: Option<&str>, prefix: Option<&str>| {
        let mut v: Vec<String> = leases::live(&s.lock(), holder, prefix)
            .unwrap()
            .into_iter()
            .map(|l| l.id)
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(None, None), ["l1", "l2", "l3"]);
    assert_eq!(ids(Some("h1"), None), ["l1", "l3"]);
    assert_eq!(ids(None, Some("app/")), ["l1", "l2"]);
    assert_eq!(ids(None, Some("app/l2")), ["l2"]);
    assert_eq!(ids(Some("h2"), Some("ops")), Vec::<String>::new());
    let mut names = leases::known_names(&s.lock(), "c").unwrap();
    names.sort();
    assert_eq!(names, ["zt_l1", "zt_l2", "zt_l3"]);
}

pub(super) fn leases_of_revoked_nodes_are_found(f: &mut Fixture) {
    let s = f.store();
    let t = crate::store::now();
    commit(s, |tx| {
        nodes::upsert_node(tx, &node("n1", "ek1"), None).unwrap();
        nodes::upsert_node(tx, &node("n2", "ek2"), None).unwrap();
        nodes::set_node_state(tx, "n1", NodeState::Pending, NodeState::Revoked).unwrap();
        tokens::create_chain(tx, "ch", "edge", 60, &[1; 32]).unwrap();
        tokens::revoke_chain(tx, "ch").unwrap();
    });
    for (id, holder) in [
        ("of-n1", "spiffe://td/node/n1"),
        ("of-n2", "spiffe://td/node/n2"),
        ("of-ch", "spiffe://td/token/ch"),
    ] {
        add(
            s,
            Lease {
                holder: holder.into(),
                ..lease(id, LeaseState::Active, t)
            },
        );
    }
    let mut ids: Vec<String> = leases::of_revoked_nodes(&s.lock(), 10)
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["of-ch", "of-n1"]);
}

pub(super) fn connections_are_saved_and_their_password_switched(f: &mut Fixture) {
    let s = f.store();
    let row = db_connections::DbConnectionRow {
        name: "main".into(),
        engine: "postgres".into(),
        host: "db1".into(),
        port: 5432,
        dbname: "app".into(),
        admin_user: "zeroth".into(),
        sealed_password: vec![1; 48],
        created: 5,
        rotated: None,
        tls_ca: Some(b"-----BEGIN CERTIFICATE-----".to_vec()),
        pending_password: None,
    };
    commit(s, |tx| db_connections::save_connection(tx, &row).unwrap());
    commit(s, |tx| {
        assert!(db_connections::set_pending_password(tx, "main", &[2; 48]).unwrap());
        assert!(db_connections::switch_to_pending(tx, "main").unwrap());
        assert!(!db_connections::set_pending_password(tx, "other", &[2; 48]).unwrap());
    });
    let got = db_connections::connection(&s.lock(), "main")
        .unwrap()
        .unwrap();
    assert_eq!(got.sealed_password, vec![2; 48]);
    assert_eq!(got.pending_password, None);
    assert_eq!((got.port, got.tls_ca), (5432, row.tls_ca.clone()));
    assert_eq!(db_connections::connections(&s.lock()).unwrap().len(), 1);
    assert!(commit(s, |tx| db_connections::remove_connection(tx, "main")).unwrap());
    assert!(db_connections::connection(&s.lock(), "main")
        .unwrap()
        .is_none());
}

pub(super) fn ssh_serial_blocks_never_overlap_across_reopening(f: &mut Fixture) {
    let a = ssh_certs::reserve_ssh_serials(&mut f.store().lock(), 256).unwrap();
    assert_eq!(a, (1, 256));
    // A restart (maybe after a crash mid-block) starts past the block.
    let b = ssh_certs::reserve_ssh_serials(&mut f.reopen().unwrap().lock(), 256).unwrap();
    assert_eq!(b, (257, 512));
    // A serial recorded beyond the reservations is never handed out again.
    commit(f.store(), |tx| {
        ssh_certs::record_ssh_cert(tx, 900, "l", "k", "h", "r", &[], 0).unwrap();
    });
    let twice = {
        let mut conn = f.store().lock();
        let tx = conn.transaction().unwrap();
        ssh_certs::record_ssh_cert(&tx, 900, "l2", "k", "h", "r", &[], 0)
    };
    let err = twice.expect_err("a serial is used once");
    assert!(
        matches!(&err, StoreError::Sql { source, .. } if source.is_unique_violation()),
        "{err}"
    );
    let c = ssh_certs::reserve_ssh_serials(&mut f.store().lock(), 10).unwrap();
    assert_eq!(c, (901, 910));
}

pub(super) fn revoked_ssh_certificates_are_listed_until_expiry(f: &mut Fixture) {
    let s = f.store();
    let t = crate::store::now();
    for (serial, state) in [(7u64, LeaseState::Revoked), (8, LeaseState::Active)] {
        add(
            s,
            Lease {
                kind: "ssh".into(),
                external_name: serial.to_string(),
                ..lease(&format!("s{serial}"), state, t)
            },
        );
        commit(s, |tx| {
            ssh_certs::record_ssh_cert(
                tx,
                serial,
                "l",
                &format!("key-{serial}"),
                "h",
                "r",
                &["ops".into()],
                t + 600,
            )
            .unwrap()
        });
    }
    add(s, lease("db-lease", LeaseState::Revoked, t));
    let r = ssh_certs::revoked_ssh_certs(&s.lock(), t, "ssh").unwrap();
    assert_eq!((r.serials, r.key_ids), (vec![7], vec!["key-7".to_string()]));
    assert!(ssh_certs::revoked_ssh_certs(&s.lock(), t + 600, "ssh")
        .unwrap()
        .serials
        .is_empty());
    assert_eq!(ssh_certs::last_ssh_revocation(&s.lock()).unwrap(), (0, 0));
    commit(s, |tx| {
        crate::audit::append(
            tx,
            &crate::audit::Event {
                kind: "ssh.cert.revoked",
                subject: "lease/s7",
                detail: serde_json::json!({}),
            },
        )
        .unwrap()
    });
    assert_eq!(ssh_certs::last_ssh_revocation(&s.lock()).unwrap().0, 1);
}

pub(super) fn ssh_ca_keys_move_between_states(f: &mut Fixture) {
    let s = f.store();
    let conn = s.lock();
    assert!(ssh_cas::insert(&conn, "user-1", "user", "active").unwrap());
    // A second server starting at the same time records nothing new.
    assert!(!ssh_cas::insert(&conn, "user-1", "user", "active").unwrap());
    ssh_cas::insert(&conn, "user-2", "user", "next").unwrap();
    ssh_cas::insert(&conn, "host-1", "host", "active").unwrap();
    assert_eq!(
        ssh_cas::move_state(&conn, "user", "active", "retired").unwrap(),
        1
    );
    assert_eq!(
        ssh_cas::move_state(&conn, "user", "next", "active").unwrap(),
        1
    );
    let mut user: Vec<(String, String)> = ssh_cas::list(&conn, "user")
        .unwrap()
        .into_iter()
        .map(|r| (r.key_name, r.state))
        .collect();
    user.sort();
    assert_eq!(
        user,
        [
            ("user-1".to_string(), "retired".to_string()),
            ("user-2".to_string(), "active".to_string())
        ]
    );
    assert_eq!(ssh_cas::list(&conn, "host").unwrap().len(), 1);
}

/// The sweep removes revoked leases past their expiry and expired SSH
/// certificate records, leaves everything that may still matter (live,
/// not yet revoked, revoked but unexpired, the newest row), and says what
/// it removed in one audit event.
pub(super) fn what_ended_before_the_horizon_is_swept_and_audited(f: &mut Fixture) {
    use crate::store::retention;
    let s = f.store();
    let t = crate::store::now();
    let ended = |id: &str, expires: i64, revoke: bool| {
        add(
            s,
            Lease {
                expires,
                ..lease(id, LeaseState::Active, t - 1000)
            },
        );
        if revoke {
            commit(s, |tx| {
                assert!(
                    leases::transition(tx, id, LeaseState::Active, LeaseState::Revoked).unwrap()
                )
            });
        }
    };
    for id in ["old1", "old2", "old3"] {
        ended(id, t - 500, true);
    }
    ended("expired-not-yet-revoked", t - 500, false);
    ended("revoked-not-yet-expired", t + 600, true);
    ended("live", t + 600, false);
    ended("newest", t - 500, true);
    for (serial, valid_before) in [(1u64, t - 500), (2, t + 600)] {
        commit(s, |tx| {
            ssh_certs::record_ssh_cert(
                tx,
                serial,
                "l",
                "k",
                "h",
                "r",
                &["ops".into()],
                valid_before,
            )
            .unwrap()
        });
    }
    let swept = retention::sweep(s, t + 1, &crate::audit::record_sweep).unwrap();
    assert_eq!((swept.leases, swept.ssh_certs), (3, 1), "{swept:?}");
    for id in ["old1", "old2", "old3"] {
        assert!(leases::get(&s.lock(), id).unwrap().is_none(), "{id}");
    }
    for id in [
        "expired-not-yet-revoked",
        "revoked-not-yet-expired",
        "live",
        "newest",
    ] {
        assert!(leases::get(&s.lock(), id).unwrap().is_some(), "{id}");
    }
    let last = crate::audit::tail(&s.lock(), 1).unwrap().remove(0);
    assert_eq!(last.kind, "store.swept");
    let detail: serde_json::Value = serde_json::from_str(&last.detail).unwrap();
    assert_eq!(detail["leases"], 3);
    assert_eq!(detail["ssh_certs"], 1);
    // Nothing more to sweep: no event either.
    assert_eq!(
        retention::sweep(s, t + 1, &crate::audit::record_sweep)
            .unwrap()
            .total(),
        0
    );
    assert_eq!(crate::audit::tail(&s.lock(), 1).unwrap()[0].seq, last.seq);
}
