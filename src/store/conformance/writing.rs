//! Scenarios on how the store is written: the audit chain, group commit,
//! read-only readers and the leader's jobs.

use super::*;

pub(super) fn the_audit_chain_verifies_and_tampering_is_found(f: &mut Fixture) {
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

pub(super) fn group_commit_keeps_every_job_and_drops_a_failed_one(f: &mut Fixture) {
    let store = Arc::new(f.store.take().unwrap());
    store
        .lock()
        .execute_batch("CREATE TABLE t (v BIGINT PRIMARY KEY)")
        .unwrap();
    let w = Arc::new(crate::store::group_commit::GroupWriter::spawn(
        store.clone(),
    ));
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

pub(super) fn readers_see_commits_and_cannot_write(f: &mut Fixture) {
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
pub(super) fn a_deposed_leaders_jobs_change_nothing(f: &mut Fixture) {
    use crate::store::leader::{Change, Leadership};
    let s = f.store();
    let shared = s.is_shared();
    let (a, b) = (
        Leadership::new("a".into(), shared),
        Leadership::new("b".into(), shared),
    );
    let t = crate::store::now();
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
