//! The ledger's side of every lease change: each change and its audit
//! event are written in one transaction, so the log and the leases never
//! disagree.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::audit::{self, Event};
use crate::creds::CredsError;
use crate::store::group_commit::GroupWriter;
use crate::store::leader::Leadership;
use crate::store::leases::{self, Lease, LeaseState};
use crate::store::sql::Tx;
use crate::store::{Store, StoreError};

/// The lease table and the writer that shares issuances' commits.
pub struct Ledger {
    store: Arc<Store>,
    writer: Arc<GroupWriter>,
    /// The newest lease row when this server started: `creating` leases up
    /// to it were left by an earlier run, not by an issuance under way.
    earlier_run: i64,
}

/// How a settled issuance is recorded: its event when the credential was
/// made, or when it was not.
pub struct Settlement {
    pub issued: &'static str,
    pub failed: &'static str,
    /// Detail shared by both events; `expires` or `reason` is added.
    pub detail: serde_json::Value,
    /// Why the credential was not made, when it was not.
    pub failure: Option<String>,
}

impl Ledger {
    pub fn new(store: Arc<Store>) -> Result<Self, CredsError> {
        // Leases still `creating` from before this start were left by a
        // crash, unless other servers share the store: then only the grace
        // tells an abandoned lease from one another server is making.
        let earlier_run = if store.is_shared() {
            0
        } else {
            leases::last_row(&store.lock())?
        };
        Ok(Self {
            writer: Arc::new(GroupWriter::spawn(store.clone())),
            store,
            earlier_run,
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The writer issuances share their commits through.
    pub fn writer(&self) -> &Arc<GroupWriter> {
        &self.writer
    }

    pub(super) fn earlier_run(&self) -> i64 {
        self.earlier_run
    }

    /// Writes `lease` `creating`: the ledger knows a credential that lives
    /// outside it before it exists there.
    pub async fn begin(&self, lease: &Lease) -> Result<(), CredsError> {
        let l = lease.clone();
        self.writer
            .write_async(move |tx| leases::insert(tx, &l))
            .await?;
        Ok(())
    }

    /// Moves a lease [`Ledger::begin`] wrote to `active` (the credential was
    /// made) or `revoked` (it was not), with one audit event. Ok(false) when
    /// the lease was no longer `creating`: the revoker took it for
    /// abandoned meanwhile.
    pub async fn settle(&self, lease: &Lease, how: Settlement) -> Result<bool, CredsError> {
        let Settlement {
            issued,
            failed,
            mut detail,
            failure,
        } = how;
        let (state, kind) = match &failure {
            None => (LeaseState::Active, issued),
            Some(_) => (LeaseState::Revoked, failed),
        };
        if let Some(d) = detail.as_object_mut() {
            match failure {
                None => d.insert("expires".into(), lease.expires.into()),
                Some(why) => d.insert("reason".into(), why.into()),
            };
        }
        let moved = Arc::new(AtomicBool::new(false));
        let (flag, id) = (moved.clone(), lease.id.clone());
        self.writer
            .write_async(move |tx| {
                if !leases::transition(tx, &id, LeaseState::Creating, state)? {
                    return Ok(());
                }
                flag.store(true, Ordering::Relaxed);
                audit::append(
                    tx,
                    &Event {
                        kind,
                        subject: &format!("lease/{id}"),
                        detail,
                    },
                )
                .map_err(|e| StoreError::Writer(e.to_string()))?;
                Ok(())
            })
            .await?;
        Ok(moved.load(Ordering::Relaxed))
    }

    /// The lease `id`, if `holder` holds it (operators pass `None`).
    pub fn lease(&self, id: &str, holder: Option<&str>) -> Result<Lease, CredsError> {
        // One indexed read on a read-only connection, which never waits
        // for the writer.
        match leases::get(&*self.store.read()?, id)? {
            Some(l) if holder.is_none_or(|h| h == l.holder) => Ok(l),
            _ => Err(CredsError::NotFound(format!("no lease {id} of yours"))),
        }
    }
}

/// Runs a store (or HSM) call off the async reactor.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CredsError> + Send + 'static,
) -> Result<T, CredsError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CredsError::Unavailable(format!("a worker failed: {e}")))?
}

/// Makes `change` and records `event` in one transaction; when `change`
/// finds nothing to do (false), nothing is written and the answer is false.
pub(crate) fn record(
    store: &Store,
    change: impl FnOnce(&Tx<'_>) -> Result<bool, StoreError>,
    event: Event<'_>,
) -> Result<bool, CredsError> {
    let mut conn = store.lock();
    let tx = conn
        .transaction()
        .map_err(StoreError::sql("starting a transaction"))?;
    if !change(&tx)? {
        return Ok(false);
    }
    audit::append(&tx, &event)?;
    tx.commit()
        .map_err(StoreError::sql("committing a lease change"))?;
    Ok(true)
}

/// Whether a job's change to `seen` may go ahead in this transaction: a
/// request (`job` None) always may; the revoker only while the store still
/// names its server the leader and the lease's state and expiry are what it
/// saw when it found the lease due.
pub(super) fn job_may_act(
    tx: &Tx<'_>,
    job: Option<&Leadership>,
    seen: &Lease,
) -> Result<bool, StoreError> {
    let Some(lead) = job else {
        return Ok(true);
    };
    if !lead.still_leads(tx)? {
        return Ok(false);
    }
    leases::unchanged_since(tx, seen)
}

/// After the last allowed attempt at `id` failed: the lease is left for an
/// operator, with an audit event (`lease.irrevocable`) and an error in the
/// log saying what to do.
pub(super) fn give_up_if_spent(store: &Store, id: &str, why: &str) -> Result<(), CredsError> {
    if leases::attempts(&store.lock(), id)? != leases::MAX_ATTEMPTS {
        return Ok(());
    }
    tracing::error!(
        lease = %id, error = %why,
        "revocation failed {} times; no longer retried: fix the cause, then `zeroth lease retry {id}`, or `zeroth lease mark-revoked {id}` once the credential is gone by hand",
        leases::MAX_ATTEMPTS
    );
    record(
        store,
        |_| Ok(true),
        Event {
            kind: "lease.irrevocable",
            subject: &format!("lease/{id}"),
            detail: serde_json::json!({"attempts": leases::MAX_ATTEMPTS, "last_error": why}),
        },
    )
    .map(drop)
}
