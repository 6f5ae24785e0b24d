//! The store's contract, run on both engines: every scenario runs once on
//! a SQLite file and once on a PostgreSQL database of its own (the lab's
//! private server). A behaviour that differs between the engines fails
//! here, whatever the SQL looked like.

use std::future::Future;
use std::sync::Arc;

use secrecy::ExposeSecret;

use super::leases::{self, Lease, LeaseState, CREATING_GRACE};
use super::nodes::{self, Challenge, ChallengeRefusal, Node, NodeState};
use super::sql::{Conn, PgRuntime, PgTarget};
use super::{entries, migrations, ssh_cas, tokens, Location, Store, StoreError};
use crate::wire::entry::{Entry, Parent, Selector};

/// A store under test, which a scenario may close and open again.
struct Fixture {
    at: Location,
    store: Option<Store>,
}

impl Fixture {
    fn store(&self) -> &Store {
        self.store.as_ref().expect("the fixture's store is open")
    }

    fn reopen(&mut self) -> Result<&Store, StoreError> {
        self.store = None;
        self.store = Some(Store::open_at(&self.at)?);
        Ok(self.store())
    }
}

type Scenario = fn(&mut Fixture);

const SCENARIOS: &[(&str, Scenario)] = &[
    ("schema", schema_is_latest_and_a_newer_one_is_refused),
    ("nodes", node_states_move_only_as_allowed),
    ("challenges", a_challenge_is_taken_once_and_not_after_expiry),
    ("ca certificates", the_first_ca_certificate_saved_stays),
    ("tokens", token_chains_rotate_and_revoke),
    ("lease states", a_revoked_lease_never_becomes_active_again),
    ("due leases", only_unfinished_or_expired_leases_are_due),
    ("lease listing", leases_are_listed_by_holder_and_prefix),
    ("leases of revoked nodes", leases_of_revoked_nodes_are_found),
    (
        "db connections",
        connections_are_saved_and_their_password_switched,
    ),
    (
        "ssh serials",
        ssh_serial_blocks_never_overlap_across_reopening,
    ),
    (
        "ssh revocations",
        revoked_ssh_certificates_are_listed_until_expiry,
    ),
    ("ssh cas", ssh_ca_keys_move_between_states),
    ("entries", a_holder_sees_its_node_and_group_entries_only),
    ("audit", the_audit_chain_verifies_and_tampering_is_found),
    (
        "group commit",
        group_commit_keeps_every_job_and_drops_a_failed_one,
    ),
    ("readers", readers_see_commits_and_cannot_write),
    ("leadership", a_deposed_leaders_jobs_change_nothing),
    (
        "retention",
        what_ended_before_the_horizon_is_swept_and_audited,
    ),
];

fn run_all(open: impl Fn(usize) -> Location) {
    for (i, (name, scenario)) in SCENARIOS.iter().enumerate() {
        let at = open(i);
        eprintln!("store scenario {name:?} on {at:?}");
        let store = Store::open_at(&at).unwrap_or_else(|e| panic!("{name}: open: {e}"));
        scenario(&mut Fixture {
            at,
            store: Some(store),
        });
    }
}

#[test]
fn every_scenario_holds_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    run_all(|i| Location::File(dir.path().join(format!("s{i}.db"))));
}

#[test]
fn every_scenario_holds_on_postgres() {
    let pg = crate::lab::Postgres::start()
        .expect("a private PostgreSQL server for the store suite (`make deps` installs it)");
    let target = |db: &str| PgTarget {
        url: format!(
            "postgres://{}@127.0.0.1:{}/{db}",
            crate::lab::postgres::SUPERUSER,
            pg.port()
        ),
        password: Some(pg.password().expose_secret().to_owned().into()),
        ca_pem: None,
    };
    let runtime = PgRuntime::start().unwrap();
    let admin = Conn::postgres(&target("postgres"), &runtime).unwrap();
    run_all(|i| {
        let db = format!("conformance_{i}");
        admin
            .execute_batch(&format!("CREATE DATABASE {db}"))
            .unwrap();
        Location::Postgres(target(&db))
    });
}

fn commit<T>(store: &Store, f: impl FnOnce(&super::sql::Tx<'_>) -> T) -> T {
    let mut conn = store.lock();
    let tx = conn.transaction().unwrap();
    let out = f(&tx);
    tx.commit().unwrap();
    out
}

fn schema_is_latest_and_a_newer_one_is_refused(f: &mut Fixture) {
    assert_eq!(f.store().schema_version().unwrap(), migrations::LATEST);
    assert_eq!(
        f.reopen().unwrap().schema_version().unwrap(),
        migrations::LATEST
    );
    f.store()
        .lock()
        .execute("UPDATE schema_version SET version = 999", ())
        .unwrap();
    match f.reopen() {
        Err(StoreError::TooNew { found: 999, .. }) => {}
        other => panic!("a newer schema must be refused, got {other:?}"),
    }
}

fn node(id: &str, ek: &str) -> Node {
    Node {
        id: id.into(),
        group: "edge".into(),
        state: NodeState::Pending,
        ek_hash: ek.into(),
        ek_public: vec![1, 2, 3],
        ak_public: vec![4, 5],
        hostname: format!("{id}.local"),
        clock: u64::MAX >> 2,
        reset_count: 3,
        restart_count: 4,
        created: 0,
        updated: 0,
    }
}

fn node_states_move_only_as_allowed(f: &mut Fixture) {
    let s = f.store();
    let a = node("a", "ek-a");
    assert!(commit(s, |tx| nodes::upsert_node(tx, &a, Some(&[9, 9]))).unwrap());
    let got = nodes::node(&s.lock(), "a").unwrap().unwrap();
    assert_eq!(
        (got.clock, got.reset_count, got.ek_public.clone()),
        (u64::MAX >> 2, 3, vec![1, 2, 3])
    );
    assert_eq!(
        nodes::node_by_ek(&s.lock(), "ek-a").unwrap().unwrap().id,
        "a"
    );
    // Another EK under the same id, or another group, is not written.
    let thief = Node {
        ek_hash: "ek-b".into(),
        ..a.clone()
    };
    let err = commit(s, |tx| nodes::upsert_node(tx, &thief, None));
    assert!(
        matches!(err, Ok(false)) || err.is_err(),
        "a node's EK never changes"
    );
    commit(s, |tx| {
        assert!(nodes::set_node_state(tx, "a", NodeState::Pending, NodeState::Approved).unwrap());
        assert!(!nodes::set_node_state(tx, "a", NodeState::Pending, NodeState::Revoked).unwrap());
        assert!(nodes::set_node_state(tx, "a", NodeState::Approved, NodeState::Revoked).unwrap());
    });
    // A revoked node is not brought back by re-enrolling.
    let again = Node {
        state: NodeState::Approved,
        ..a.clone()
    };
    assert!(!commit(s, |tx| nodes::upsert_node(tx, &again, None)).unwrap());
    assert_eq!(
        nodes::node(&s.lock(), "a").unwrap().unwrap().state,
        NodeState::Revoked
    );
    assert_eq!(nodes::count(&s.lock(), NodeState::Revoked).unwrap(), 1);
    assert_eq!(nodes::nodes(&s.lock()).unwrap().len(), 1);
    commit(s, |tx| {
        nodes::record_svid(tx, "01ab", "a", "spiffe://td/node/a", 99).unwrap()
    });
    let mut conn = s.lock();
    let tx = conn.transaction().unwrap();
    assert!(
        nodes::record_svid(&tx, "02ab", "nobody", "spiffe://td/node/x", 99).is_err(),
        "an SVID names a known node"
    );
}

fn challenge(id: &str, expires: i64) -> Challenge {
    Challenge {
        id: id.into(),
        group: "edge".into(),
        ek_hash: "ek".into(),
        ek_public: vec![1],
        ek_cert: None,
        ak_public: vec![2],
        hostname: "h".into(),
        nonce: vec![3; 32],
        secret_hash: vec![4; 32],
        expires,
    }
}

fn a_challenge_is_taken_once_and_not_after_expiry(f: &mut Fixture) {
    let s = f.store();
    let t = super::now();
    nodes::insert_challenge(&s.lock(), &challenge("c1", t + 60)).unwrap();
    nodes::insert_challenge(&s.lock(), &challenge("c2", t - 1)).unwrap();
    assert_eq!(
        nodes::open_challenges(&s.lock(), "ek").unwrap(),
        (1, t + 60)
    );
    commit(s, |tx| {
        let c = nodes::take_challenge(tx, "c1").unwrap().unwrap();
        assert_eq!(c.nonce, vec![3; 32]);
        assert_eq!(
            nodes::take_challenge(tx, "c1").unwrap().unwrap_err(),
            ChallengeRefusal::AlreadyUsed
        );
        assert_eq!(
            nodes::take_challenge(tx, "c2").unwrap().unwrap_err(),
            ChallengeRefusal::Expired
        );
        assert_eq!(
            nodes::take_challenge(tx, "c3").unwrap().unwrap_err(),
            ChallengeRefusal::Unknown
        );
    });
    assert_eq!(nodes::open_challenges(&s.lock(), "ek").unwrap().0, 0);
}

fn the_first_ca_certificate_saved_stays(f: &mut Fixture) {
    let s = f.store();
    assert_eq!(nodes::ca_certificate(&s.lock(), "x509").unwrap(), None);
    nodes::save_ca_certificate(&s.lock(), "x509", &[1, 2]).unwrap();
    nodes::save_ca_certificate(&s.lock(), "x509", &[3, 4]).unwrap();
    assert_eq!(
        nodes::ca_certificate(&s.lock(), "x509").unwrap(),
        Some(vec![1, 2])
    );
}

fn token_chains_rotate_and_revoke(f: &mut Fixture) {
    let s = f.store();
    let t = super::now();
    commit(s, |tx| {
        tokens::create_chain(tx, "ch", "edge", 3600, &[1; 32]).unwrap();
        let row = tokens::find(tx, &[1; 32]).unwrap().unwrap();
        assert_eq!(
            (row.generation, row.rotated, row.chain_revoked),
            (1, false, false)
        );
        assert!(row.rotation.is_none());
        tokens::insert_token(tx, "ch", 2, &[2; 32], t + 60).unwrap();
        tokens::mark_rotated(tx, &[1; 32], &[7; 32], &[8; 40], Some(0)).unwrap();
        let row = tokens::find(tx, &[1; 32]).unwrap().unwrap();
        assert!(row.rotated);
        let rotation = row.rotation.unwrap();
        assert_eq!(
            (
                rotation.key_hash,
                rotation.next_sealed,
                rotation.last_attempt
            ),
            (vec![7; 32], vec![8; 40], Some(0))
        );
        // Each attempt is taken once, and only upwards.
        assert!(!tokens::take_attempt(tx, &[1; 32], 0).unwrap());
        assert!(tokens::take_attempt(tx, &[1; 32], 2).unwrap());
        assert!(!tokens::take_attempt(tx, &[1; 32], 1).unwrap());
        assert!(!tokens::take_attempt(tx, &[1; 32], 2).unwrap());
        assert!(tokens::take_attempt(tx, &[1; 32], 3).unwrap());
        assert_eq!(tokens::unused(tx, "ch", 2).unwrap(), Some(t + 60));
        assert_eq!(tokens::unused(tx, "ch", 1).unwrap(), None);
        assert!(tokens::find(tx, &[5; 32]).unwrap().is_none());
        tokens::revoke_chain(tx, "ch").unwrap();
        assert!(tokens::find(tx, &[2; 32]).unwrap().unwrap().chain_revoked);
    });
    let chain = tokens::chain(&s.lock(), "ch").unwrap().unwrap();
    assert!(chain.revoked);
    assert_eq!(chain.group, "edge");
}

fn lease(id: &str, state: LeaseState, created: i64) -> Lease {
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

fn add(s: &Store, l: Lease) {
    commit(s, |tx| leases::insert(tx, &l).unwrap());
}

fn a_revoked_lease_never_becomes_active_again(f: &mut Fixture) {
    let s = f.store();
    commit(s, |tx| {
        leases::insert(tx, &lease("a", LeaseState::Creating, super::now())).unwrap()
    });
    // A second lease with the same id fails, and so does its transaction:
    // nothing of it is kept, on either engine.
    {
        let mut conn = s.lock();
        let tx = conn.transaction().unwrap();
        leases::insert(&tx, &lease("b", LeaseState::Active, 0)).unwrap();
        assert!(leases::insert(&tx, &lease("a", LeaseState::Active, 0)).is_err());
        assert!(matches!(tx.commit(), Err(super::sql::SqlError::Aborted)));
    }
    commit(s, |tx| {
        use LeaseState::*;
        assert!(leases::transition(tx, "a", Creating, Revoking).unwrap());
        assert!(leases::transition(tx, "a", Revoking, Revoked).unwrap());
        // An issuance finishing late expects `creating`: nothing changes.
        assert!(!leases::transition(tx, "a", Creating, Active).unwrap());
        assert!(!leases::transition(tx, "a", Active, Revoking).unwrap());
        assert!(!leases::set_expires(tx, "a", super::now() + 60).unwrap());
    });
    assert_eq!(
        leases::get(&s.lock(), "a").unwrap().unwrap().state,
        LeaseState::Revoked
    );
    assert!(leases::get(&s.lock(), "b").unwrap().is_none());
}

fn only_unfinished_or_expired_leases_are_due(f: &mut Fixture) {
    let s = f.store();
    let t = super::now();
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

fn leases_are_listed_by_holder_and_prefix(f: &mut Fixture) {
    let s = f.store();
    let t = super::now();
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

fn leases_of_revoked_nodes_are_found(f: &mut Fixture) {
    let s = f.store();
    let t = super::now();
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

fn connections_are_saved_and_their_password_switched(f: &mut Fixture) {
    let s = f.store();
    let row = leases::DbConnectionRow {
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
    commit(s, |tx| leases::save_connection(tx, &row).unwrap());
    commit(s, |tx| {
        assert!(leases::set_pending_password(tx, "main", &[2; 48]).unwrap());
        assert!(leases::switch_to_pending(tx, "main").unwrap());
        assert!(!leases::set_pending_password(tx, "other", &[2; 48]).unwrap());
    });
    let got = leases::connection(&s.lock(), "main").unwrap().unwrap();
    assert_eq!(got.sealed_password, vec![2; 48]);
    assert_eq!(got.pending_password, None);
    assert_eq!((got.port, got.tls_ca), (5432, row.tls_ca.clone()));
    assert_eq!(leases::connections(&s.lock()).unwrap().len(), 1);
    assert!(commit(s, |tx| leases::remove_connection(tx, "main")).unwrap());
    assert!(leases::connection(&s.lock(), "main").unwrap().is_none());
}

fn ssh_serial_blocks_never_overlap_across_reopening(f: &mut Fixture) {
    let a = leases::reserve_ssh_serials(&mut f.store().lock(), 256).unwrap();
    assert_eq!(a, (1, 256));
    // A restart (maybe after a crash mid-block) starts past the block.
    let b = leases::reserve_ssh_serials(&mut f.reopen().unwrap().lock(), 256).unwrap();
    assert_eq!(b, (257, 512));
    // A serial recorded beyond the reservations is never handed out again.
    commit(f.store(), |tx| {
        leases::record_ssh_cert(tx, 900, "l", "k", "h", "r", &[], 0).unwrap();
    });
    let twice = {
        let mut conn = f.store().lock();
        let tx = conn.transaction().unwrap();
        leases::record_ssh_cert(&tx, 900, "l2", "k", "h", "r", &[], 0)
    };
    let err = twice.expect_err("a serial is used once");
    assert!(
        matches!(&err, StoreError::Sql { source, .. } if source.is_unique_violation()),
        "{err}"
    );
    let c = leases::reserve_ssh_serials(&mut f.store().lock(), 10).unwrap();
    assert_eq!(c, (901, 910));
}

fn revoked_ssh_certificates_are_listed_until_expiry(f: &mut Fixture) {
    let s = f.store();
    let t = super::now();
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
            leases::record_ssh_cert(
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
    let r = leases::revoked_ssh_certs(&s.lock(), t, "ssh").unwrap();
    assert_eq!((r.serials, r.key_ids), (vec![7], vec!["key-7".to_string()]));
    assert!(leases::revoked_ssh_certs(&s.lock(), t + 600, "ssh")
        .unwrap()
        .serials
        .is_empty());
    assert_eq!(leases::last_ssh_revocation(&s.lock()).unwrap(), (0, 0));
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
    assert_eq!(leases::last_ssh_revocation(&s.lock()).unwrap().0, 1);
}

fn ssh_ca_keys_move_between_states(f: &mut Fixture) {
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

fn entry(id: &str, parent: Parent, selectors: Vec<Selector>) -> Entry {
    Entry {
        id: id.into(),
        spiffe_id: "spiffe://td/app/shop".into(),
        parent,
        selectors,
        ttl_seconds: 3600,
        dns_names: vec!["shop.local".into()],
        roles: vec!["app-ro".into()],
        hint: "internal".into(),
        created: 1,
    }
}

fn a_holder_sees_its_node_and_group_entries_only(f: &mut Fixture) {
    let s = f.store();
    let mine = entry("a", Parent::Node("n1".into()), vec![Selector::Uid(1)]);
    let group = entry("b", Parent::Group("edge".into()), vec![Selector::Uid(2)]);
    let other = entry("c", Parent::Node("n2".into()), vec![Selector::Uid(1)]);
    commit(s, |tx| {
        for e in [&mine, &group, &other] {
            assert!(entries::create(tx, e).unwrap());
        }
        let dup = Entry {
            id: "d".into(),
            ..mine.clone()
        };
        assert!(
            !entries::create(tx, &dup).unwrap(),
            "a duplicate is refused"
        );
    });
    let conn = s.lock();
    assert_eq!(
        entries::for_holder(&conn, Some("n1"), "edge").unwrap(),
        vec![mine.clone(), group.clone()]
    );
    assert_eq!(
        entries::for_holder(&conn, None, "edge").unwrap(),
        vec![group.clone()]
    );
    let all: Vec<String> = entries::all(&conn)
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(all, ["a", "b", "c"], "in the order they were made");
    drop(conn);
    commit(s, |tx| {
        entries::record_svid(
            tx,
            "5e",
            "a",
            "spiffe://td/node/n1",
            "spiffe://td/app/shop",
            9,
        )
        .unwrap();
        assert_eq!(entries::delete(tx, "a").unwrap(), Some(mine.clone()));
        assert_eq!(entries::delete(tx, "a").unwrap(), None);
    });
    assert!(entries::get(&s.lock(), "a").unwrap().is_none());
}

fn the_audit_chain_verifies_and_tampering_is_found(f: &mut Fixture) {
    use zeroth_hsm::{KeyKind, KeyName, KeyStore, SoftwareKeyStore};
    let s = f.store();
    let keys = SoftwareKeyStore::new_insecure();
    let info = keys
        .get_or_generate(
            &KeyName::new(crate::audit::CHECKPOINT_KEY).unwrap(),
            KeyKind::Ed25519,
        )
        .unwrap();
    let pk = info.public.unwrap();
    for i in 0..5 {
        commit(s, |tx| {
            crate::audit::append(
                tx,
                &crate::audit::Event {
                    kind: "node.enrolled",
                    subject: &format!("node/{i}"),
                    detail: serde_json::json!({"i": i}),
                },
            )
            .unwrap()
        });
    }
    assert_eq!(crate::audit::unsigned_events(&s.lock()).unwrap(), 5);
    assert_eq!(
        crate::audit::checkpoint(&mut s.lock(), &keys).unwrap(),
        Some(5)
    );
    assert_eq!(crate::audit::unsigned_events(&s.lock()).unwrap(), 0);
    let report = crate::audit::verify(&s.lock(), &pk).unwrap();
    assert_eq!((report.events, report.checkpoints), (5, 1));
    let tail: Vec<i64> = crate::audit::tail(&s.lock(), 2)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(tail, [4, 5]);
    s.lock()
        .execute("UPDATE audit SET subject = 'node/x' WHERE seq = 3", ())
        .unwrap();
    assert!(crate::audit::verify(&s.lock(), &pk).is_err());
}

fn group_commit_keeps_every_job_and_drops_a_failed_one(f: &mut Fixture) {
    let store = Arc::new(f.store.take().unwrap());
    store
        .lock()
        .execute_batch("CREATE TABLE t (v BIGINT PRIMARY KEY)")
        .unwrap();
    let w = Arc::new(super::group_commit::GroupWriter::spawn(store.clone()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..4i64)
            .map(|k| {
                let w = w.clone();
                tokio::spawn(async move {
                    for i in 0..25 {
                        let v = k * 1000 + i;
                        w.write_async(move |tx| {
                            tx.execute("INSERT INTO t VALUES (?1)", [v])
                                .map_err(StoreError::sql("test insert"))?;
                            Ok(())
                        })
                        .await
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        // A job that writes, then fails: its write is rolled back, and the
        // transaction it shared goes on.
        let failed = w
            .write_async(|tx| {
                tx.execute("INSERT INTO t VALUES (-1)", ())
                    .map_err(StoreError::sql("test insert"))?;
                tx.execute("INSERT INTO t VALUES (0)", ())
                    .map_err(StoreError::sql("duplicate insert"))?;
                Ok(())
            })
            .await;
        assert!(failed.is_err());
        w.write_async(|tx| {
            tx.execute("INSERT INTO t VALUES (-2)", ())
                .map_err(StoreError::sql("test insert"))?;
            Ok(())
        })
        .await
        .unwrap();
        // Three jobs queued while the writer is held by a fourth share one
        // transaction; the failing one among them leaves no trace, the
        // others are kept.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let holder = w.write_async(move |_| {
            let _ = held.recv();
            Ok(())
        });
        let insert = |v: i64, fail: bool| {
            w.write_async(move |tx| {
                tx.execute("INSERT INTO t VALUES (?1)", [v])
                    .map_err(StoreError::sql("test insert"))?;
                if fail {
                    tx.execute("INSERT INTO t VALUES (0)", ())
                        .map_err(StoreError::sql("duplicate insert"))?;
                }
                Ok(())
            })
        };
        type Queued<'a> = std::pin::Pin<Box<dyn Future<Output = Result<(), StoreError>> + 'a>>;
        let mut queued: Vec<Queued<'_>> = vec![
            Box::pin(holder),
            Box::pin(insert(-3, false)),
            Box::pin(insert(-4, true)),
            Box::pin(insert(-5, false)),
        ];
        // One poll each hands every job to the writer, in this order.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for q in queued.iter_mut() {
            assert!(q.as_mut().poll(&mut cx).is_pending());
        }
        release.send(()).unwrap();
        let mut results = Vec::new();
        for q in queued {
            results.push(q.await.is_ok());
        }
        assert_eq!(results, [true, true, false, true]);
    });
    let n: i64 = store
        .lock()
        .query_row("SELECT COUNT(*) FROM t", (), |r| r.get(0))
        .unwrap();
    assert_eq!(n, 103);
    let gone: i64 = store
        .lock()
        .query_row("SELECT COUNT(*) FROM t WHERE v IN (-1, -4)", (), |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(gone, 0);
}

fn readers_see_commits_and_cannot_write(f: &mut Fixture) {
    let s = f.store();
    s.lock()
        .execute_batch("CREATE TABLE t (v BIGINT); INSERT INTO t VALUES (7);")
        .unwrap();
    let read_v = |c: &Conn| -> i64 { c.query_row("SELECT v FROM t", (), |r| r.get(0)).unwrap() };
    let r = s.read().unwrap();
    assert_eq!(read_v(&r), 7);
    assert!(r.execute("INSERT INTO t VALUES (8)", ()).is_err());
    drop(r);
    {
        let mut w = s.lock();
        let tx = w.transaction().unwrap();
        tx.execute("UPDATE t SET v = 9", ()).unwrap();
        // Uncommitted: a reader answers at once with the committed value.
        assert_eq!(read_v(&s.read().unwrap()), 7);
        tx.commit().unwrap();
    }
    assert_eq!(read_v(&s.read().unwrap()), 9);
}

/// One leader at a time; a leader paused past its term (its own clock
/// still says it leads) sees in its job's transaction that a successor
/// took over, and a lease renewed after the job found it due is no longer
/// as the job saw it. On SQLite the one server always leads.
fn a_deposed_leaders_jobs_change_nothing(f: &mut Fixture) {
    use super::leader::{Change, Leadership};
    let s = f.store();
    let shared = s.is_shared();
    let (a, b) = (
        Leadership::new("a".into(), shared),
        Leadership::new("b".into(), shared),
    );
    let t = super::now();
    add(s, lease("due", LeaseState::Active, t - 700));
    let seen = leases::due(&s.lock(), t, 0, 10).unwrap().remove(0);
    assert_eq!(seen.id, "due");
    commit(s, |tx| assert!(leases::unchanged_since(tx, &seen).unwrap()));
    // Renewed (say by a server that read it just before it fell due).
    commit(s, |tx| {
        assert!(leases::set_expires(tx, "due", t + 600).unwrap())
    });
    commit(
        s,
        |tx| assert!(!leases::unchanged_since(tx, &seen).unwrap()),
    );
    if !shared {
        assert_eq!(a.renew(&mut s.lock()).unwrap(), Change::None);
        assert!(a.is_leader() && b.is_leader());
        commit(s, |tx| assert!(a.still_leads(tx).unwrap()));
        return;
    }
    assert_eq!(a.renew(&mut s.lock()).unwrap(), Change::Gained { epoch: 1 });
    assert_eq!(b.renew(&mut s.lock()).unwrap(), Change::None);
    assert!(a.is_leader() && !b.is_leader());
    commit(s, |tx| {
        assert!(a.still_leads(tx).unwrap());
        assert!(!b.still_leads(tx).unwrap());
    });
    // A's term runs out in the store while A is paused; B takes over.
    s.lock()
        .execute("UPDATE leader SET expires = 0 WHERE id = 1", ())
        .unwrap();
    assert_eq!(b.renew(&mut s.lock()).unwrap(), Change::Gained { epoch: 2 });
    assert!(a.is_leader(), "A's own clock has not run out yet");
    commit(s, |tx| {
        assert!(!a.still_leads(tx).unwrap());
        assert!(b.still_leads(tx).unwrap());
    });
    // A's next renewal finds it out.
    assert_eq!(a.renew(&mut s.lock()).unwrap(), Change::Lost);
    assert!(!a.is_leader());
}

/// The sweep removes revoked leases past their expiry and expired SSH
/// certificate records, leaves everything that may still matter (live,
/// not yet revoked, revoked but unexpired, the newest row), and says what
/// it removed in one audit event.
fn what_ended_before_the_horizon_is_swept_and_audited(f: &mut Fixture) {
    use super::retention;
    let s = f.store();
    let t = super::now();
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
            leases::record_ssh_cert(
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
