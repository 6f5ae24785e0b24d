//! Scenarios on who is known: the schema, nodes, challenges, the CA
//! certificate, token chains and registration entries.

use super::*;

pub(super) fn schema_is_latest_and_a_newer_one_is_refused(f: &mut Fixture) {
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

pub(super) fn node(id: &str, ek: &str) -> Node {
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

pub(super) fn node_states_move_only_as_allowed(f: &mut Fixture) {
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

pub(super) fn challenge(id: &str, expires: i64) -> Challenge {
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

pub(super) fn a_challenge_is_taken_once_and_not_after_expiry(f: &mut Fixture) {
    let s = f.store();
    let t = crate::store::now();
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

pub(super) fn the_first_ca_certificate_saved_stays(f: &mut Fixture) {
    let s = f.store();
    assert_eq!(nodes::ca_certificate(&s.lock(), "x509").unwrap(), None);
    nodes::save_ca_certificate(&s.lock(), "x509", &[1, 2]).unwrap();
    nodes::save_ca_certificate(&s.lock(), "x509", &[3, 4]).unwrap();
    assert_eq!(
        nodes::ca_certificate(&s.lock(), "x509").unwrap(),
        Some(vec![1, 2])
    );
}

pub(super) fn token_chains_rotate_and_revoke(f: &mut Fixture) {
    let s = f.store();
    let t = crate::store::now();
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

pub(super) fn entry(id: &str, parent: Parent, selectors: Vec<Selector>) -> Entry {
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

pub(super) fn a_holder_sees_its_node_and_group_entries_only(f: &mut Fixture) {
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
