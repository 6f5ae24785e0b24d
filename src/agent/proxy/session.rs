//! What both protocols do around their handshakes: get the connection's
//! user, report the session's use, keep its lease alive while it relays,
//! and give the user back when it ends.

use std::time::{Instant, SystemTime};

use super::conn::Conn;
use super::lease::{self, IssueError};
use super::relay::{self, Relayed};
use super::Ctx;
use crate::agent::attest::Caller;
use crate::wire::db::{CredsResponse, SessionEvent, SessionEventKind, Workload};

/// One client connection's user.
pub struct Session {
    pub creds: CredsResponse,
    pub who: Caller,
    /// How the server's audit names the program.
    label: String,
    started: Instant,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// Gets a user of the proxy's role for `who`'s connection.
pub async fn open(ctx: &Ctx, who: Caller) -> Result<Session, IssueError> {
    let label = format!("{} via proxy {}", who.describe(), ctx.config.name);
    let creds = lease::issue(&ctx.upstream, &ctx.config.role, ctx.config.ttl, &label).await?;
    let session = Session {
        creds,
        who,
        label,
        started: Instant::now(),
    };
    let want = ctx.config.engine.as_str();
    if session.creds.engine != want {
        let engine = session.creds.engine.clone();
        abandon(ctx, session).await;
        return Err(IssueError::BadAnswer(format!(
            "role {} is a {engine} role, not {want}",
            ctx.config.role
        )));
    }
    Ok(session)
}

/// Gives back the user of a session that never started. When no server
/// takes it now, a closing event (with no duration: nothing was relayed)
/// joins the durable queue, and the server that records it gives the user
/// back.
pub async fn abandon(ctx: &Ctx, session: Session) {
    if let Err(e) = lease::give_back(&ctx.upstream, &session.creds.lease_id, &session.label).await {
        tracing::warn!(lease = %session.creds.lease_id, error = %e, "giving back an unused user failed; it is queued with the session events");
        report(ctx, event(ctx, &session, SessionEventKind::Closed, None)).await;
    }
}

fn event(ctx: &Ctx, s: &Session, kind: SessionEventKind, relayed: Option<Relayed>) -> SessionEvent {
    SessionEvent {
        id: hex::encode(rand::random::<[u8; 16]>()),
        kind,
        time: now(),
        proxy: ctx.config.name.clone(),
        role: ctx.config.role.clone(),
        lease: s.creds.lease_id.clone(),
        user: s.creds.username.clone(),
        workload: Workload {
            uid: s.who.uid,
            pid: (s.who.pid > 0).then_some(s.who.pid),
            unit: s.who.unit.clone(),
        },
        duration_ms: relayed.map(|_| s.started.elapsed().as_millis() as u64),
        bytes_from_client: relayed.map(|r| r.from_client),
        bytes_to_client: relayed.map(|r| r.to_client),
    }
}

async fn report(ctx: &Ctx, e: SessionEvent) {
    let queue = ctx.events.clone();
    let id = e.id.clone();
    let pushed = tokio::task::spawn_blocking(move || queue.push(&e)).await;
    if !matches!(pushed, Ok(Ok(()))) {
        tracing::error!(event = %id, "a session event could not be queued on disk");
    }
}

/// Relays between the authenticated `client` and `server` while keeping
/// the lease alive, then gives the user back; use events on both ends.
pub async fn run(ctx: &Ctx, session: Session, client: Conn, server: Conn) {
    report(ctx, event(ctx, &session, SessionEventKind::Opened, None)).await;
    println!(
        "proxy {}: session opened for {} as {} (lease {})",
        ctx.config.name,
        session.who.describe(),
        session.creds.username,
        session.creds.lease_id
    );
    let relayed = {
        let relay = relay::relay(client, server);
        let keep = lease::keep(
            &ctx.upstream,
            &session.creds.lease_id,
            session.creds.expires,
            &session.label,
        );
        tokio::pin!(relay, keep);
        // Once the lease cannot be renewed any more, the session lasts as
        // long as the lease does: only the relay's end ends it.
        let mut renewing = true;
        loop {
            tokio::select! {
                r = &mut relay => break r,
                () = &mut keep, if renewing => renewing = false,
            }
        }
    };
    let gone = lease::give_back(&ctx.upstream, &session.creds.lease_id, &session.label).await;
    if let Err(e) = &gone {
        tracing::warn!(lease = %session.creds.lease_id, error = %e, "giving back the session's user failed; the session's closing event, queued, gives it back");
    }
    report(
        ctx,
        event(ctx, &session, SessionEventKind::Closed, Some(relayed)),
    )
    .await;
    println!(
        "proxy {}: session closed for {} ({} bytes in, {} out); user {} {}",
        ctx.config.name,
        session.who.describe(),
        relayed.from_client,
        relayed.to_client,
        session.creds.username,
        if gone.is_ok() {
            "dropped"
        } else {
            "left to expire"
        }
    );
}
