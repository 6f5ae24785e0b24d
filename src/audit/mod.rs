//! The audit log: append-only, hash-chained, checkpointed by an HSM key.
//!
//! Each event's hash covers its sequence number, time, kind, subject,
//! detail and the previous event's hash, so editing, deleting or reordering
//! a row breaks the chain. Someone with write access to the database could
//! rebuild the whole chain; checkpoints stop that: every so often the head
//! hash is signed by the `audit-checkpoint` key, which never leaves the HSM.

use crate::store::sql::{params, Conn, OptionalExtension, Tx};
use sha2::{Digest, Sha256};
use zeroth_hsm::{HsmError, KeyName, KeyStore, PublicKey};

use crate::store::{now, StoreError};

/// The HSM key that signs checkpoints.
pub const CHECKPOINT_KEY: &str = "audit-checkpoint";

/// Why an audit operation failed or the chain is not intact.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the audit checkpoint key: {0}")]
    Hsm(#[from] HsmError),
    #[error("audit chain broken at event {seq}: {reason}")]
    Broken { seq: i64, reason: String },
    #[error("audit checkpoint at event {seq} is invalid: {reason}")]
    BadCheckpoint { seq: i64, reason: String },
}

/// An event to record.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    /// What happened, e.g. `node.enrolled`, `svid.issued`, `token.theft`.
    pub kind: &'a str,
    /// Who or what it happened to, e.g. `node/7f3a…`.
    pub subject: &'a str,
    /// Why and how, as JSON. Never a secret.
    pub detail: serde_json::Value,
}

/// A recorded event, as read back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Record {
    pub seq: i64,
    pub time: i64,
    pub kind: String,
    pub subject: String,
    pub detail: String,
}

const GENESIS: [u8; 32] = [0; 32];

fn event_hash(
    seq: i64,
    time: i64,
    kind: &str,
    subject: &str,
    detail: &str,
    prev: &[u8],
) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"zeroth audit event v1");
    h.update(seq.to_be_bytes());
    h.update(time.to_be_bytes());
    for part in [kind.as_bytes(), subject.as_bytes(), detail.as_bytes(), prev] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().to_vec()
}

fn checkpoint_message(seq: i64, hash: &[u8]) -> Vec<u8> {
    [&b"zeroth audit checkpoint v1"[..], &seq.to_be_bytes(), hash].concat()
}

/// The last event's sequence number and hash.
fn head(conn: &Conn) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
    conn.prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        .and_then(|mut s| s.query_row((), |r| Ok((r.get(0)?, r.get(1)?))))
        .optional()
        .map_err(StoreError::sql("reading the audit head"))
}

/// Records a retention sweep's batch (`store.swept`: what went, and the
/// horizon), in the batch's transaction.
pub fn record_sweep(
    tx: &Tx<'_>,
    swept: crate::store::retention::Swept,
    horizon: i64,
) -> Result<(), StoreError> {
    let mut detail = serde_json::to_value(swept).unwrap_or_default();
    detail["ended_before"] = horizon.into();
    append(
        tx,
        &Event {
            kind: "store.swept",
            subject: "store",
            detail,
        },
    )
    .map(drop)
    .map_err(|e| StoreError::Writer(e.to_string()))
}

/// Appends `event` inside the caller's transaction, so the event commits
/// with the action it records, or neither does.
pub fn append(tx: &Tx<'_>, event: &Event<'_>) -> Result<i64, AuditError> {
    let head = head(tx)?;
    let (seq, prev) = match head {
        Some((s, h)) => (s + 1, h),
        None => (1, GENESIS.to_vec()),
    };
    let time = now();
    let detail = event.detail.to_string();
    let hash = event_hash(seq, time, event.kind, event.subject, &detail, &prev);
    tx.prepare_cached(
        "INSERT INTO audit (seq, time, kind, subject, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| s.execute(params![seq, time, event.kind, event.subject, detail, prev, hash]))
    .map_err(StoreError::sql("appending an audit event"))?;
    Ok(seq)
}

/// Signs the current head with the HSM checkpoint key; returns its seq.
pub fn checkpoint(conn: &mut Conn, keys: &dyn KeyStore) -> Result<Option<i64>, AuditError> {
    let name = KeyName::new(CHECKPOINT_KEY)?;
    let tx = conn
        .transaction()
        .map_err(StoreError::sql("starting a checkpoint"))?;
    let head = head(&tx)?;
    let Some((seq, hash)) = head else {
        return Ok(None);
    };
    let signature = keys.sign(&name, &checkpoint_message(seq, &hash))?;
    tx.execute(
        "INSERT INTO audit_checkpoints (seq, hash, signature, time) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (seq) DO UPDATE SET hash = excluded.hash, signature = excluded.signature, time = excluded.time",
        params![seq, hash, signature, now()],
    )
    .map_err(StoreError::sql("recording a checkpoint"))?;
    tx.commit()
        .map_err(StoreError::sql("committing a checkpoint"))?;
    Ok(Some(seq))
}

/// Events appended since the last signed checkpoint.
pub fn unsigned_events(conn: &Conn) -> Result<i64, AuditError> {
    conn.query_row(
        "SELECT COALESCE((SELECT MAX(seq) FROM audit), 0)
              - COALESCE((SELECT MAX(seq) FROM audit_checkpoints), 0)",
        (),
        |r| r.get(0),
    )
    .map_err(|e| StoreError::sql("counting unsigned audit events")(e).into())
}

/// When the newest event was written (Unix seconds), if there is one.
pub fn last_time(conn: &Conn) -> Result<Option<i64>, AuditError> {
    conn.query_row("SELECT MAX(time) FROM audit", (), |r| r.get(0))
        .map_err(|e| StoreError::sql("reading the last audit event's time")(e).into())
}

/// What a verification of the whole chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub events: i64,
    pub checkpoints: i64,
    /// Events after the last checkpoint: intact, but protected by the chain only.
    pub unsigned_tail: i64,
}

/// Walks the whole chain and every checkpoint. `checkpoint_key` is the
/// public half of the HSM checkpoint key.
pub fn verify(conn: &Conn, checkpoint_key: &PublicKey) -> Result<ChainReport, AuditError> {
    let mut stmt = conn
        .prepare("SELECT seq, time, kind, subject, detail, prev_hash, hash FROM audit ORDER BY seq")
        .map_err(StoreError::sql("reading the audit log"))?;
    let rows = stmt
        .query_map((), |r| {
            Ok((
                r.get::<i64>(0)?,
                r.get::<i64>(1)?,
                r.get::<String>(2)?,
                r.get::<String>(3)?,
                r.get::<String>(4)?,
                r.get::<Vec<u8>>(5)?,
                r.get::<Vec<u8>>(6)?,
            ))
        })
        .map_err(StoreError::sql("reading the audit log"))?;
    let mut hashes: Vec<Vec<u8>> = Vec::new();
    let mut prev = GENESIS.to_vec();
    let mut expected_seq = 1;
    for row in rows {
        let (seq, time, kind, subject, detail, prev_hash, hash) =
            row.map_err(StoreError::sql("reading an audit event"))?;
        if seq != expected_seq {
            return Err(AuditError::Broken {
                seq: expected_seq,
                reason: format!("event {expected_seq} is missing (next is {seq})"),
            });
        }
        if prev_hash != prev {
            return Err(AuditError::Broken {
                seq,
                reason:
                    "its previous-hash does not match the event before it (deleted or reordered)"
                        .into(),
            });
        }
        if event_hash(seq, time, &kind, &subject, &detail, &prev_hash) != hash {
            return Err(AuditError::Broken {
                seq,
                reason: "its contents do not match its hash (edited)".into(),
            });
        }
        prev = hash.clone();
        hashes.push(hash);
        expected_seq += 1;
    }
    let events = expected_seq - 1;

    let mut stmt = conn
        .prepare("SELECT seq, hash, signature FROM audit_checkpoints ORDER BY seq")
        .map_err(StoreError::sql("reading audit checkpoints"))?;
    let cps = stmt
        .query_map((), |r| {
            Ok((r.get::<i64>(0)?, r.get::<Vec<u8>>(1)?, r.get::<Vec<u8>>(2)?))
        })
        .map_err(StoreError::sql("reading audit checkpoints"))?;
    let mut checkpoints = 0;
    let mut last_signed = 0;
    for cp in cps {
        let (seq, hash, signature) = cp.map_err(StoreError::sql("reading an audit checkpoint"))?;
        let bad = |reason: &str| AuditError::BadCheckpoint {
            seq,
            reason: reason.to_owned(),
        };
        if !verify_signature(checkpoint_key, &checkpoint_message(seq, &hash), &signature) {
            return Err(bad(
                "its signature does not verify under the HSM checkpoint key",
            ));
        }
        let chained = usize::try_from(seq - 1).ok().and_then(|i| hashes.get(i));
        match chained {
            None => return Err(bad("the log ends before it: events were deleted")),
            Some(h) if *h != hash => {
                return Err(bad(
                    "the chain at this point differs from what was signed: the log was rewritten",
                ))
            }
            Some(_) => {}
        }
        checkpoints += 1;
        last_signed = seq;
    }
    Ok(ChainReport {
        events,
        checkpoints,
        unsigned_tail: events - last_signed,
    })
}

fn verify_signature(key: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
    match key {
        PublicKey::Ed25519(pk) => {
            let (Ok(vk), Ok(sig)) = (
                ed25519_dalek::VerifyingKey::from_bytes(pk),
                ed25519_dalek::Signature::from_slice(signature),
            ) else {
                return false;
            };
            vk.verify_strict(message, &sig).is_ok()
        }
        PublicKey::EcdsaP256(_) => false,
    }
}

/// The last `n` events, newest last.
pub fn tail(conn: &Conn, n: i64) -> Result<Vec<Record>, AuditError> {
    let mut stmt = conn
        .prepare("SELECT seq, time, kind, subject, detail FROM (SELECT * FROM audit ORDER BY seq DESC LIMIT ?1) AS recent ORDER BY seq")
        .map_err(StoreError::sql("reading the audit log"))?;
    let rows = stmt
        .query_map([n], |r| {
            Ok(Record {
                seq: r.get(0)?,
                time: r.get(1)?,
                kind: r.get(2)?,
                subject: r.get(3)?,
                detail: r.get(4)?,
            })
        })
        .map_err(StoreError::sql("reading the audit log"))?;
    rows.map(|r| r.map_err(|e| StoreError::sql("reading an audit event")(e).into()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use zeroth_hsm::{KeyKind, SoftwareKeyStore};

    fn setup(n: usize) -> (Store, SoftwareKeyStore, PublicKey) {
        let store = Store::in_memory().unwrap();
        let keys = SoftwareKeyStore::new_insecure();
        let info = keys
            .get_or_generate(&KeyName::new(CHECKPOINT_KEY).unwrap(), KeyKind::Ed25519)
            .unwrap();
        {
            let mut conn = store.lock();
            for i in 0..n {
                let tx = conn.transaction().unwrap();
                append(
                    &tx,
                    &Event {
                        kind: "node.enrolled",
                        subject: &format!("node/{i}"),
                        detail: serde_json::json!({"group": "edge", "i": i}),
                    },
                )
                .unwrap();
                tx.commit().unwrap();
            }
        }
        (store, keys, info.public.unwrap())
    }

    #[test]
    fn an_intact_chain_verifies_with_its_checkpoints() {
        let (store, keys, pk) = setup(10);
        assert_eq!(checkpoint(&mut store.lock(), &keys).unwrap(), Some(10));
        let r = verify(&store.lock(), &pk).unwrap();
        assert_eq!(
            r,
            ChainReport {
                events: 10,
                checkpoints: 1,
                unsigned_tail: 0
            }
        );
        assert_eq!(
            tail(&store.lock(), 3)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>(),
            vec![8, 9, 10]
        );
    }

    #[test]
    fn an_edited_row_is_detected() {
        let (store, _, pk) = setup(5);
        store
            .lock()
            .execute(
                "UPDATE audit SET detail = '{\"group\":\"prod\"}' WHERE seq = 3",
                (),
            )
            .unwrap();
        let err = verify(&store.lock(), &pk).unwrap_err();
        assert!(matches!(err, AuditError::Broken { seq: 3, .. }), "{err}");
    }

    #[test]
    fn a_deleted_row_is_detected() {
        let (store, _, pk) = setup(5);
        store
            .lock()
            .execute("DELETE FROM audit WHERE seq = 2", ())
            .unwrap();
        let err = verify(&store.lock(), &pk).unwrap_err();
        assert!(matches!(err, AuditError::Broken { seq: 2, .. }), "{err}");
    }

    #[test]
    fn reordered_rows_are_detected() {
        let (store, _, pk) = setup(5);
        let conn = store.lock();
        // Swap the contents of events 2 and 4, keeping their sequence numbers.
        conn.execute_batch(
            "UPDATE audit SET seq = -2 WHERE seq = 2; UPDATE audit SET seq = 2 WHERE seq = 4; UPDATE audit SET seq = 4 WHERE seq = -2;",
        )
        .unwrap();
        let err = verify(&conn, &pk).unwrap_err();
        assert!(matches!(err, AuditError::Broken { seq: 2, .. }), "{err}");
    }

    #[test]
    fn a_rewritten_chain_is_caught_by_the_signed_checkpoint() {
        let (store, keys, pk) = setup(5);
        checkpoint(&mut store.lock(), &keys).unwrap();
        // An attacker edits event 3 and recomputes every hash after it.
        let conn = store.lock();
        conn.execute("UPDATE audit SET subject = 'node/forged' WHERE seq = 3", ())
            .unwrap();
        let mut prev: Vec<u8> = conn
            .query_row("SELECT hash FROM audit WHERE seq = 2", (), |r| r.get(0))
            .unwrap();
        for seq in 3..=5i64 {
            let (time, kind, subject, detail): (i64, String, String, String) = conn
                .query_row(
                    "SELECT time, kind, subject, detail FROM audit WHERE seq = ?1",
                    [seq],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .unwrap();
            let h = event_hash(seq, time, &kind, &subject, &detail, &prev);
            conn.execute(
                "UPDATE audit SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
                params![prev, h, seq],
            )
            .unwrap();
            prev = h;
        }
        let err = verify(&conn, &pk).unwrap_err();
        assert!(
            matches!(err, AuditError::BadCheckpoint { seq: 5, .. }),
            "{err}"
        );
        // Truncating the log below a checkpoint is caught too.
        conn.execute("DELETE FROM audit WHERE seq >= 4", ())
            .unwrap();
        let err = verify(&conn, &pk).unwrap_err();
        assert!(
            matches!(err, AuditError::BadCheckpoint { seq: 5, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_checkpoint_signed_by_another_key_is_refused() {
        let (store, _, pk) = setup(3);
        let other = SoftwareKeyStore::new_insecure();
        other
            .get_or_generate(&KeyName::new(CHECKPOINT_KEY).unwrap(), KeyKind::Ed25519)
            .unwrap();
        checkpoint(&mut store.lock(), &other).unwrap();
        let err = verify(&store.lock(), &pk).unwrap_err();
        assert!(
            matches!(err, AuditError::BadCheckpoint { seq: 3, .. }),
            "{err}"
        );
    }
}
