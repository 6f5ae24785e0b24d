//! Use of proxied database sessions: the agents that relay them report
//! `db.session.opened` and `db.session.closed`, written to the audit apart
//! from the issuance and revocation of the session's user. An agent
//! redelivers what it could not hand over; each event id is recorded once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::audit::{self, Event};
use crate::creds::lease::LeaseManager;
use crate::creds::CredsError;
use crate::store::{leases, now, StoreError};
use crate::wire::db::{SessionEvent, SessionEventsRecorded};

/// Most events in one report.
pub const MAX_EVENTS: usize = 256;

/// Why an event is malformed (the whole report is refused: an agent only
/// sends what it made).
fn malformed(e: &SessionEvent) -> Option<String> {
    let plain = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
    };
    if !plain(&e.id, 64) {
        return Some(format!("event id {:?} is not a plain token", e.id));
    }
    for (what, v) in [
        ("proxy", &e.proxy),
        ("role", &e.role),
        ("lease", &e.lease),
        ("user", &e.user),
    ] {
        if !plain(v, 128) {
            return Some(format!(
                "event {}: `{what}` {v:?} is not a plain name",
                e.id
            ));
        }
    }
    if let Some(unit) = e.workload.unit.as_deref().filter(|u| !plain(u, 256)) {
        return Some(format!("event {}: unit {unit:?} is not a plain name", e.id));
    }
    None
}

/// Records `events` reported by `holder` (its SPIFFE ID). Events naming a
/// lease `holder` does not hold, or another user than the lease's, are
/// refused one by one; the others are written with one audit event each.
pub async fn record(
    manager: &LeaseManager,
    holder: &str,
    events: Vec<SessionEvent>,
) -> Result<SessionEventsRecorded, CredsError> {
    if events.len() > MAX_EVENTS {
        return Err(CredsError::BadRequest(format!(
            "{} events in one report; at most {MAX_EVENTS}",
            events.len()
        )));
    }
    if let Some(why) = events.iter().find_map(malformed) {
        return Err(CredsError::BadRequest(why));
    }
    let mut outcome = SessionEventsRecorded::default();
    let mut accepted = Vec::new();
    {
        let conn = manager.store().read()?;
        for e in events {
            match leases::get(&conn, &e.lease)? {
                Some(l) if l.holder == holder && l.external_name == e.user && l.role == e.role => {
                    accepted.push(e)
                }
                _ => outcome.refused.push(e.id),
            }
        }
    }
    if accepted.is_empty() {
        return Ok(outcome);
    }
    // A closed session's user is given back here too: the agent's own
    // give-back may have failed (a server away, a 503), and this report,
    // queued on the agent's disk until a server takes it, is durable.
    let closed: Vec<String> = accepted
        .iter()
        .filter(|e| e.kind == crate::wire::db::SessionEventKind::Closed)
        .map(|e| e.lease.clone())
        .collect();
    let written = Arc::new(AtomicUsize::new(0));
    let (count, holder) = (written.clone(), holder.to_owned());
    let total = accepted.len();
    manager
        .ledger()
        .writer()
        .write_async(move |tx| {
            for e in &accepted {
                let fresh = tx
                    .prepare_cached(
                        "INSERT INTO session_events (id, lease, recorded) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                    )
                    .and_then(|mut s| s.execute(crate::store::sql::params![e.id, e.lease, now()]))
                    .map_err(StoreError::sql("recording a session event"))?;
                if fresh == 0 {
                    continue;
                }
                let mut detail = serde_json::to_value(e)
                    .map_err(|err| StoreError::Writer(err.to_string()))?;
                if let Some(map) = detail.as_object_mut() {
                    map.remove("kind");
                    map.remove("lease");
                    map.insert("holder".into(), holder.clone().into());
                }
                audit::append(
                    tx,
                    &Event {
                        kind: e.kind.audit_kind(),
                        subject: &format!("lease/{}", e.lease),
                        detail,
                    },
                )
                .map_err(|err| StoreError::Writer(err.to_string()))?;
                count.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
        .await?;
    outcome.recorded = written.load(Ordering::Relaxed);
    outcome.duplicates = total - outcome.recorded;
    for id in closed {
        let lease = {
            let reader = manager.store().read()?;
            leases::get(&reader, &id)?
        };
        if let Some(l) = lease.filter(|l| l.state == leases::LeaseState::Active) {
            // A failure here fails the report: the agent sends it again
            // (its events are recorded once), and the give-back with it.
            manager.revoke(&l, "session closed").await?;
        }
    }
    Ok(outcome)
}
