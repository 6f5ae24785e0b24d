//! Which server of a cluster runs the jobs that must run once (revoker,
//! reconciler, expiry sweeps, audit checkpoints): the holder of a lease row
//! in the store, renewed every second and taken over by another server
//! once it has run out (a few seconds after its holder died).
//!
//! Every takeover raises the row's epoch. A leader starts a job only while
//! the term it last renewed is still running by its own clock, minus a
//! margin; and each change a job makes is fenced: its transaction checks
//! that the store still names this server and epoch as the leader
//! ([`Leadership::still_leads`]) and that the row it changes is as the job
//! saw it, so a server that lost leadership mid-job (paused, partitioned)
//! changes nothing.
//!
//! On SQLite there is one server: it always leads.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::sql::{params, Conn, OptionalExtension};

use super::StoreError;

/// How often servers renew or claim leadership.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How long a renewed leadership lasts in the store.
pub const TERM: Duration = Duration::from_secs(3);
/// The leader stops acting this long before its term runs out, so it
/// stops before anyone else may start, even with some clock skew.
const MARGIN: Duration = Duration::from_millis(1000);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What one server knows of its own leadership.
#[derive(Debug)]
pub struct Leadership {
    me: String,
    shared: bool,
    held: Mutex<Option<Held>>,
    /// When leadership was last renewed or claimed, and why that failed.
    last: Mutex<Option<(Instant, Option<String>)>>,
}

/// What a server knows of its place in the cluster, for operators.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub me: String,
    /// `leader`, `follower`, or `single` (a SQLite store: always leads).
    pub role: &'static str,
    /// The epoch this server leads in.
    pub epoch: Option<i64>,
    /// Whether the last renewal reached the store.
    pub store_reachable: bool,
    /// How long ago the store was last asked.
    pub last_renewal_ms: Option<u64>,
    /// Why the last renewal failed.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    epoch: i64,
    until: Instant,
}

/// A change of leadership seen by [`Leadership::renew`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Gained { epoch: i64 },
    Lost,
    None,
}

impl Leadership {
    /// `me` names this server in the store (host and process).
    pub fn new(me: String, shared: bool) -> Self {
        Self {
            me,
            shared,
            held: Mutex::new(None),
            last: Mutex::new(None),
        }
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// Whether the store is shared with other servers.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Whether this server may run the cluster's jobs now.
    pub fn is_leader(&self) -> bool {
        if !self.shared {
            return true;
        }
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.is_some_and(|h| Instant::now() < h.until)
    }

    /// The epoch this server leads in, if it leads.
    pub fn epoch(&self) -> Option<i64> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.filter(|h| Instant::now() < h.until).map(|h| h.epoch)
    }

    /// Whether this server still leads per the store, asked inside the
    /// transaction of a job's change. Every write transaction takes the
    /// cluster's write lock and a takeover is one, so a change made in a
    /// transaction that saw this server's epoch was made before any
    /// successor began: a server paused past its term (by its own clock or
    /// not) changes nothing once another has taken over.
    pub fn still_leads(&self, conn: &Conn) -> Result<bool, StoreError> {
        if !self.shared {
            return Ok(true);
        }
        let Some(epoch) = self.epoch() else {
            return Ok(false);
        };
        let found = conn
            .query_row(
                "SELECT epoch FROM leader WHERE id = 1 AND holder = ?1 AND epoch = ?2",
                params![self.me, epoch],
                |r| r.get::<i64>(0),
            )
            .optional()
            .map_err(StoreError::sql("reading the leader"))?;
        Ok(found.is_some())
    }

    /// Renews this server's term or takes over an expired one; called
    /// every second. A store error counts as not leading.
    pub fn renew(&self, conn: &mut Conn) -> Result<Change, StoreError> {
        if !self.shared {
            return Ok(Change::None);
        }
        let asked = Instant::now();
        let before = self.epoch();
        let outcome = claim(conn, &self.me, before);
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let was = held.filter(|h| Instant::now() < h.until).map(|h| h.epoch);
        *held = match &outcome {
            Ok(Some(epoch)) => Some(Held {
                epoch: *epoch,
                until: asked + TERM - MARGIN,
            }),
            _ => None,
        };
        let now_epoch = held.map(|h| h.epoch);
        drop(held);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((asked, outcome.as_ref().err().map(|e| e.to_string())));
        let change = match (was, now_epoch) {
            (None, Some(epoch)) => Change::Gained { epoch },
            (Some(a), Some(b)) if a != b => Change::Gained { epoch: b },
            (Some(_), None) => Change::Lost,
            _ => Change::None,
        };
        outcome.map(|_| change)
    }

    /// Where this server stands, for `/metrics` and `zeroth server status`.
    pub fn status(&self) -> Status {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let epoch = self.epoch();
        let role = match (self.shared, epoch) {
            (false, _) => "single",
            (true, Some(_)) => "leader",
            (true, None) => "follower",
        };
        Status {
            me: self.me.clone(),
            role,
            epoch,
            store_reachable: !self.shared || last.as_ref().is_some_and(|(_, e)| e.is_none()),
            last_renewal_ms: last.as_ref().map(|(at, _)| at.elapsed().as_millis() as u64),
            error: last.and_then(|(_, e)| e),
        }
    }

    /// Gives the term up (at shutdown), so another server takes over at
    /// once rather than after it runs out.
    pub fn resign(&self, conn: &Conn) {
        let Some(epoch) = self.epoch() else {
            return;
        };
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let _ = conn.execute(
            "UPDATE leader SET expires = 0 WHERE id = 1 AND holder = ?1 AND epoch = ?2",
            params![self.me, epoch],
        );
    }
}

/// The epoch this server leads in after the claim, or None.
fn claim(conn: &mut Conn, me: &str, mine: Option<i64>) -> Result<Option<i64>, StoreError> {
    let tx = conn
        .transaction()
        .map_err(StoreError::sql("claiming leadership"))?;
    let row: Option<(String, i64, i64)> = tx
        .query_row(
            "SELECT holder, epoch, expires FROM leader WHERE id = 1",
            (),
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(StoreError::sql("reading the leader"))?;
    let t = now_ms();
    let expires = t + TERM.as_millis() as i64;
    let epoch = match row {
        None => {
            tx.execute(
                "INSERT INTO leader (id, holder, epoch, expires) VALUES (1, ?1, 1, ?2)",
                params![me, expires],
            )
            .map_err(StoreError::sql("taking leadership"))?;
            Some(1)
        }
        Some((holder, epoch, _)) if holder == me && Some(epoch) == mine => {
            tx.execute(
                "UPDATE leader SET expires = ?1 WHERE id = 1",
                params![expires],
            )
            .map_err(StoreError::sql("renewing leadership"))?;
            Some(epoch)
        }
        Some((_, epoch, until)) if until < t => {
            tx.execute(
                "UPDATE leader SET holder = ?1, epoch = ?2, expires = ?3 WHERE id = 1",
                params![me, epoch + 1, expires],
            )
            .map_err(StoreError::sql("taking leadership over"))?;
            Some(epoch + 1)
        }
        Some(_) => None,
    };
    tx.commit()
        .map_err(StoreError::sql("committing leadership"))?;
    Ok(epoch)
}

/// Who leads, per the store: holder, epoch, and whether its term runs.
pub fn current(conn: &Conn) -> Result<Option<(String, i64, bool)>, StoreError> {
    conn.query_row(
        "SELECT holder, epoch, expires FROM leader WHERE id = 1",
        (),
        |r| Ok((r.get(0)?, r.get(1)?, r.get::<i64>(2)? >= now_ms())),
    )
    .optional()
    .map_err(StoreError::sql("reading the leader"))
}
