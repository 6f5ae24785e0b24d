//! Bounded growth: records of what ended more than the retention period ago
//! leave the hot tables, in batches, each batch with one audit event
//! (`store.swept`) saying what went. The audit chain keeps every issuance
//! and revocation, so nothing of the history is lost; the tables the
//! request path reads stay the size of what is live.
//!
//! Goes: revoked leases whose revocation and expiry are both past the
//! horizon (the newest lease row always stays, so row ids keep growing),
//! SSH certificate records past their expiry (serials come from their own
//! reservations, and a KRL lists only unexpired certificates), node and
//! workload SVID records past their expiry.

use crate::store::sql::{params, Conn, Tx};

use super::{Store, StoreError};

/// Rows each table gives up per transaction: one batch is what a writer
/// may wait behind a sweep.
pub const BATCH: i64 = 2_000;

/// The pause between batches, with the store's lock released, so writers
/// waiting for it go first.
const BETWEEN_BATCHES: std::time::Duration = std::time::Duration::from_millis(5);

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Swept {
    pub leases: u64,
    pub ssh_certs: u64,
    pub svids: u64,
    pub workload_svids: u64,
}

impl Swept {
    pub fn total(&self) -> u64 {
        self.leases + self.ssh_certs + self.svids + self.workload_svids
    }

    fn add(&mut self, other: Swept) {
        self.leases += other.leases;
        self.ssh_certs += other.ssh_certs;
        self.svids += other.svids;
        self.workload_svids += other.workload_svids;
    }
}

/// How a batch's removal is recorded, in the batch's own transaction (the
/// server appends the `store.swept` audit event): what went, and the
/// horizon.
pub type Record<'a> = dyn Fn(&Tx<'_>, Swept, i64) -> Result<(), StoreError> + 'a;

/// Removes what ended before `horizon` (Unix seconds), batch after batch
/// until a batch finds nothing more, each batch recorded by `record`. The
/// store's connection is taken for one batch at a time and given back
/// between them.
pub fn sweep(store: &Store, horizon: i64, record: &Record<'_>) -> Result<Swept, StoreError> {
    let mut all = Swept::default();
    let mut first = true;
    loop {
        if !std::mem::take(&mut first) {
            std::thread::sleep(BETWEEN_BATCHES);
        }
        let batch = sweep_batch(&mut store.lock(), horizon, record)?;
        all.add(batch);
        let full = [
            batch.leases,
            batch.ssh_certs,
            batch.svids,
            batch.workload_svids,
        ]
        .iter()
        .any(|n| *n as i64 >= BATCH);
        if !full {
            return Ok(all);
        }
    }
}

fn sweep_batch(conn: &mut Conn, horizon: i64, record: &Record<'_>) -> Result<Swept, StoreError> {
    let tx = conn
        .transaction()
        .map_err(StoreError::sql("starting a sweep"))?;
    let gone = |sql: &str, doing: &'static str| -> Result<u64, StoreError> {
        tx.execute(sql, params![horizon, BATCH])
            .map(|n| n as u64)
            .map_err(StoreError::sql(doing))
    };
    let swept = Swept {
        leases: gone(
            "DELETE FROM leases WHERE id IN (
                SELECT id FROM leases
                 WHERE state = 'revoked' AND revoked < ?1 AND expires < ?1
                   AND rowid < (SELECT MAX(rowid) FROM leases)
                 LIMIT ?2)",
            "sweeping ended leases",
        )?,
        ssh_certs: gone(
            "DELETE FROM ssh_certs WHERE serial IN (
                SELECT serial FROM ssh_certs WHERE valid_before < ?1 LIMIT ?2)",
            "sweeping expired SSH certificates",
        )?,
        svids: gone(
            "DELETE FROM svids WHERE serial IN (
                SELECT serial FROM svids WHERE not_after < ?1 LIMIT ?2)",
            "sweeping expired SVIDs",
        )?,
        workload_svids: gone(
            "DELETE FROM workload_svids WHERE serial IN (
                SELECT serial FROM workload_svids WHERE not_after < ?1 LIMIT ?2)",
            "sweeping expired workload SVIDs",
        )?,
    };
    if swept.total() == 0 {
        return Ok(swept);
    }
    record(&tx, swept, horizon)?;
    tx.commit().map_err(StoreError::sql("committing a sweep"))?;
    Ok(swept)
}
