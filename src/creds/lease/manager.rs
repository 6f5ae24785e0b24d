//! The lease manager: renewal, revocation (by request, and of what falls
//! due: expired leases, those of revoked holders and unfinished work,
//! retried with backoff until a lease is left `irrevocable` for an
//! operator) and the reconciler. It knows engines only through
//! [`Engine`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::engine::Engine;
use super::ledger::{blocking, give_up_if_spent, job_may_act, record, Ledger};
use crate::audit::Event;
use crate::creds::CredsError;
use crate::store::leader::Leadership;
use crate::store::leases::{self, Lease, LeaseState};
use crate::store::{now, Store, StoreError};

/// Revocations run at once by the background revoker (of a database admin
/// pool's eight connections, the rest stay free for issuance).
const REVOKE_CONCURRENCY: usize = 4;

/// Revocations under way at once where the engine batches them: one
/// batch's worth.
pub const BATCHED_REVOKE_CONCURRENCY: usize = 100;

/// The extension of a renewal when neither the holder nor the role says.
const FALLBACK_RENEWAL: Duration = Duration::from_secs(600);

pub struct LeaseManager {
    ledger: Arc<Ledger>,
    engines: Vec<Arc<dyn Engine>>,
}

impl LeaseManager {
    /// A manager over `ledger` and the engines whose leases it holds; a
    /// lease kind no engine names cannot be renewed or revoked.
    pub fn new(ledger: Arc<Ledger>, engines: Vec<Arc<dyn Engine>>) -> Self {
        Self { ledger, engines }
    }

    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    pub fn store(&self) -> &Arc<Store> {
        self.ledger.store()
    }

    fn engine(&self, lease: &Lease) -> Result<&Arc<dyn Engine>, CredsError> {
        self.engines
            .iter()
            .find(|e| e.kinds().contains(&lease.kind.as_str()))
            .ok_or_else(|| {
                CredsError::Unavailable(format!(
                    "lease {} is of kind {:?}, which no credential engine of this server makes",
                    lease.id, lease.kind
                ))
            })
    }

    /// The lease `id`, if `holder` holds it (operators pass `None`).
    pub async fn lease(&self, id: &str, holder: Option<&str>) -> Result<Lease, CredsError> {
        self.ledger.lease(id, holder)
    }

    /// Extends an active lease by `increment` from now (the role's default
    /// when `None`), never beyond its maximum.
    pub async fn renew(
        &self,
        lease: &Lease,
        increment: Option<Duration>,
    ) -> Result<Lease, CredsError> {
        if lease.state != LeaseState::Active || lease.expires <= now() {
            return Err(CredsError::Forbidden(format!(
                "lease {} is {} and cannot be renewed",
                lease.id,
                if lease.state == LeaseState::Active {
                    "expired"
                } else {
                    lease.state.as_str()
                }
            )));
        }
        let engine = self.engine(lease)?;
        let increment = increment
            .or_else(|| engine.default_ttl(&lease.role))
            .unwrap_or(FALLBACK_RENEWAL);
        let increment = i64::try_from(increment.as_secs()).unwrap_or(i64::MAX);
        let expires = now().saturating_add(increment).min(lease.max_expires);
        engine.renew(lease, expires).await?;
        let names = engine.audit_names();
        let (st, l) = (self.store().clone(), lease.clone());
        let renewed = blocking(move || {
            record(
                &st,
                |tx| leases::set_expires(tx, &l.id, expires),
                Event {
                    kind: &format!("{}.renewed", names.events),
                    subject: &format!("lease/{}", l.id),
                    detail: serde_json::json!({
                        names.credential: l.external_name, "expires": expires, "max_expires": l.max_expires
                    }),
                },
            )
        })
        .await?;
        if !renewed {
            return Err(CredsError::Forbidden(format!(
                "lease {} was revoked while it was renewed",
                lease.id
            )));
        }
        Ok(Lease {
            expires,
            ..lease.clone()
        })
    }

    /// Revokes a lease for an operator or its holder. Where the credential
    /// lives outside the ledger, `revoking` is recorded first, so a failure
    /// or a crash midway is retried by the revoker, and a credential already
    /// gone counts as revoked. Revoking a lease someone else is revoking is
    /// harmless: whoever records it revoked writes the one audit event.
    pub async fn revoke(&self, lease: &Lease, reason: &str) -> Result<(), CredsError> {
        self.revoke_as(lease, reason, None).await
    }

    /// Revokes `lease` for the caller: an operator or the lease's holder
    /// (`job` None: whatever the lease's state now), or the cluster's
    /// revoker, which acts only while it still leads and the lease is as it
    /// saw it due (not renewed, finished or revoked since).
    async fn revoke_as(
        &self,
        lease: &Lease,
        reason: &str,
        job: Option<Arc<Leadership>>,
    ) -> Result<(), CredsError> {
        let engine = self.engine(lease)?.clone();
        let names = engine.audit_names();
        let mut detail = serde_json::json!({
            names.credential: lease.external_name, "holder": lease.holder, "reason": reason
        });
        if !engine.lives_outside() {
            // Nothing to undo elsewhere: the record is the revocation.
            return self
                .mark_revoked(lease, LeaseState::Active, names.events, detail, job)
                .await;
        }
        let (st, seen) = (self.store().clone(), lease.clone());
        let state = blocking(move || {
            let mut conn = st.lock();
            let tx = conn
                .transaction()
                .map_err(StoreError::sql("starting a transaction"))?;
            if !job_may_act(&tx, job.as_deref(), &seen)? {
                return Ok(None);
            }
            // What the caller saw may be stale: move from what is there now.
            let now_in = leases::get(&tx, &seen.id)?.map_or(seen.state, |l| l.state);
            if matches!(now_in, LeaseState::Creating | LeaseState::Active)
                && leases::transition(&tx, &seen.id, now_in, LeaseState::Revoking)?
            {
                tx.commit().map_err(StoreError::sql("committing a lease"))?;
                return Ok(Some(LeaseState::Revoking));
            }
            Ok(Some(now_in))
        })
        .await?;
        let Some(state) = state else {
            tracing::info!(lease = %lease.id, "not revoked: this server no longer leads, or the lease changed since it fell due");
            return Ok(());
        };
        if state == LeaseState::Revoked {
            return Ok(());
        }
        let existed = engine.revoke(lease).await?;
        detail["user_existed"] = existed.into();
        self.mark_revoked(lease, LeaseState::Revoking, names.events, detail, None)
            .await
    }

    /// Records the lease revoked (from `from`), with its audit event
    /// `EVENTS.revoked`, in one transaction; if it is no longer in `from`,
    /// someone else did.
    async fn mark_revoked(
        &self,
        lease: &Lease,
        from: LeaseState,
        events: &'static str,
        detail: serde_json::Value,
        job: Option<Arc<Leadership>>,
    ) -> Result<(), CredsError> {
        let (st, id, seen) = (self.store().clone(), lease.id.clone(), lease.clone());
        blocking(move || {
            record(
                &st,
                |tx| {
                    Ok(job_may_act(tx, job.as_deref(), &seen)?
                        && leases::transition(tx, &id, from, LeaseState::Revoked)?)
                },
                Event {
                    kind: &format!("{events}.revoked"),
                    subject: &format!("lease/{id}"),
                    detail,
                },
            )
        })
        .await
        .map(drop)
    }

    /// Revokes up to `limit` leases that are due: expired ones, those whose
    /// holder was revoked, and unfinished work (`revoking`, and `creating`
    /// left by an earlier run or abandoned), each retried with backoff
    /// until it is done or given up on. Returns how many were revoked.
    pub async fn revoke_due(self: &Arc<Self>, limit: usize, lead: &Arc<Leadership>) -> usize {
        let (st, earlier_run) = (self.store().clone(), self.ledger.earlier_run());
        let due = blocking(move || {
            let conn = st.read()?;
            let mut due = leases::due(&conn, now(), earlier_run, limit)?;
            due.extend(leases::of_revoked_nodes(&conn, limit)?);
            Ok(due)
        })
        .await;
        let due = match due {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot read due leases");
                return 0;
            }
        };
        // A lease can be both expired and its holder's: once is enough.
        let mut seen = HashSet::new();
        let due: Vec<Lease> = due
            .into_iter()
            .filter(|l| seen.insert(l.id.clone()))
            .collect();
        // A few at a time: faster than one by one, and the engines keep
        // capacity free for issuance. Where the engine batches them (one
        // database connection for many), a batch's worth at a time.
        let permits = Arc::new(tokio::sync::Semaphore::new(REVOKE_CONCURRENCY));
        let batched = Arc::new(tokio::sync::Semaphore::new(BATCHED_REVOKE_CONCURRENCY));
        let mut running = tokio::task::JoinSet::new();
        // Asked once per kind and connection, not once per lease.
        let mut batching: HashMap<(String, String), bool> = HashMap::new();
        for lease in due {
            let key = (lease.kind.clone(), lease.connection.clone());
            let batches = match batching.get(&key) {
                Some(b) => *b,
                None => {
                    let b = match self.engine(&lease) {
                        Ok(e) => e.batches_revocations(&lease).await,
                        Err(_) => false,
                    };
                    *batching.entry(key).or_insert(b)
                }
            };
            let pool = if batches { &batched } else { &permits };
            let Ok(permit) = pool.clone().acquire_owned().await else {
                break;
            };
            let (me, lead) = (self.clone(), lead.clone());
            running.spawn(async move {
                let _permit = permit;
                let reason = match lease.state {
                    LeaseState::Creating => "left half-made",
                    LeaseState::Revoking => "revocation retried",
                    _ if lease.expires <= now() => "expired",
                    _ => "holder revoked",
                };
                let result = me.revoke_as(&lease, reason, Some(lead)).await;
                if let Err(e) = &result {
                    tracing::warn!(lease = %lease.id, error = %e, "revocation failed; retrying later");
                    let (st, id, why) = (me.store().clone(), lease.id.clone(), e.to_string());
                    let _ = blocking(move || {
                        leases::retry_later(&st.lock(), &id, now())?;
                        give_up_if_spent(&st, &id, &why)
                    })
                    .await;
                }
                result
            });
        }
        let mut done = 0;
        while let Some(r) = running.join_next().await {
            if matches!(r, Ok(Ok(()))) {
                done += 1;
            }
        }
        done
    }

    /// Removes credentials carrying zeroth's mark that no live lease
    /// accounts for, in every engine's places; their names.
    pub async fn reconcile(&self) -> Result<Vec<String>, CredsError> {
        let mut dropped = Vec::new();
        for engine in &self.engines {
            let names = engine.audit_names();
            for place in engine.places().await? {
                // What exists first, then the ledger: a credential made in
                // between is in the ledger already (leases are written
                // before what they stand for).
                let existing = engine.existing(&place).await?;
                let (st, p) = (self.store().clone(), place.clone());
                let known: HashSet<String> =
                    blocking(move || Ok(leases::known_names(&st.lock(), &p)?))
                        .await?
                        .into_iter()
                        .collect();
                for name in existing.into_iter().filter(|n| !known.contains(n)) {
                    engine.drop_stray(&place, &name).await?;
                    let (st, p, n) = (self.store().clone(), place.clone(), name.clone());
                    blocking(move || {
                        record(
                            &st,
                            |_| Ok(true),
                            Event {
                                kind: &format!("{}.stray.dropped", names.place),
                                subject: &format!("{}/{p}", names.place),
                                detail: serde_json::json!({
                                    names.credential: n, "reason": "no lease accounts for it"
                                }),
                            },
                        )
                    })
                    .await?;
                    dropped.push(name);
                }
            }
        }
        Ok(dropped)
    }
}
