//! MariaDB user creation in batches. Every GRANT that makes a user rewrites
//! MariaDB's privilege tables and rebuilds its privilege cache, and every
//! expiry row is a commit: both cost the same for one user as for several.
//! So users asked for while a batch is running wait for the next one, which
//! makes all of them with one multi-row INSERT into `zeroth.expiry` and one
//! multi-user GRANT (group commit, as for the lease ledger). A batch the
//! server refuses is redone user by user, so each request gets its own
//! answer and a bad one never fails the others.

use mysql_async::prelude::Queryable;
use mysql_async::{Pool, Value};
use tokio::sync::{mpsc, oneshot};

use super::DbError;

/// Most users made by one statement (keeps statements small and a batch's
/// latency bounded).
pub const MAX_BATCH: usize = 32;

/// One user to make. `grant` is the role's rendered statement head, e.g.
/// "GRANT SELECT ON `shop`.* TO"; `grantee` the rendered
/// "'name'@'%' IDENTIFIED BY PASSWORD '*hash'".
pub struct Job {
    pub grant: String,
    pub grantee: String,
    pub name: String,
    pub expires: i64,
    /// The answer: how many users the statement that made this one made.
    pub done: oneshot::Sender<Result<usize, DbError>>,
}

/// Starts a task that hands `run` the jobs sent to it: the first that
/// arrives with every other already waiting, up to `max` at a time. It ends
/// when the sender is dropped. Creations and revocations batch this way.
pub(super) fn batcher<J, F, Fut>(max: usize, mut run: F) -> mpsc::UnboundedSender<J>
where
    J: Send + 'static,
    F: FnMut(Vec<J>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<J>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut jobs = vec![first];
            while jobs.len() < max {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            run(jobs).await;
        }
    });
    tx
}

/// Starts the creation batches for `pool`; they end when the sender is
/// dropped.
pub fn spawn(pool: Pool, target: String) -> mpsc::UnboundedSender<Job> {
    batcher(MAX_BATCH, move |mut jobs: Vec<Job>| {
        let (pool, target) = (pool.clone(), target.clone());
        async move {
            // Users of different roles (statement heads) go in separate
            // statements.
            while !jobs.is_empty() {
                let grant = jobs[0].grant.clone();
                let (same, rest): (Vec<Job>, Vec<Job>) =
                    jobs.into_iter().partition(|j| j.grant == grant);
                run(&pool, &target, &grant, same).await;
                jobs = rest;
            }
        }
    })
}

pub(super) fn unavailable(target: &str, reason: &str) -> DbError {
    DbError::Unavailable {
        target: target.to_owned(),
        reason: reason.to_owned(),
    }
}

/// A refusal by the server is statement `index`'s fault at `stage`;
/// anything else (a closed connection, I/O) means `target` is unavailable.
pub(super) fn refused(
    stage: &'static str,
    index: usize,
    e: mysql_async::Error,
    target: &str,
) -> DbError {
    match e {
        mysql_async::Error::Server(s) => DbError::Statement {
            stage,
            index,
            reason: s.message,
        },
        other => unavailable(target, &other.to_string()),
    }
}

async fn run(pool: &Pool, target: &str, grant: &str, jobs: Vec<Job>) {
    let mut conn = match pool.get_conn().await {
        Ok(c) => c,
        Err(e) => {
            let reason = e.to_string();
            for j in jobs {
                let _ = j.done.send(Err(unavailable(target, &reason)));
            }
            return;
        }
    };
    // The expiry rows first: a user never exists without one.
    let rows = vec!["(?, ?)"; jobs.len()].join(", ");
    let params: Vec<Value> = jobs
        .iter()
        .flat_map(|j| [Value::from(j.name.as_str()), Value::from(j.expires)])
        .collect();
    let expiry = conn
        .exec_drop(
            format!(
                "INSERT INTO `zeroth`.`expiry` (user, expires) VALUES {rows} \
                 ON DUPLICATE KEY UPDATE expires = VALUES(expires)"
            ),
            params,
        )
        .await;
    if expiry.is_ok() {
        let grantees: Vec<&str> = jobs.iter().map(|j| j.grantee.as_str()).collect();
        if conn
            .query_drop(format!("{grant} {}", grantees.join(", ")))
            .await
            .is_ok()
        {
            let made = jobs.len();
            for j in jobs {
                let _ = j.done.send(Ok(made));
            }
            return;
        }
    }
    // One by one: GRANT and the upsert are idempotent, so redoing users the
    // batch already made is harmless.
    for j in jobs {
        let one = async {
            conn.exec_drop(
                "INSERT INTO `zeroth`.`expiry` (user, expires) VALUES (?, ?) \
                 ON DUPLICATE KEY UPDATE expires = VALUES(expires)",
                (j.name.as_str(), j.expires),
            )
            .await
            .map_err(|e| refused("creation", 1, e, target))?;
            conn.query_drop(format!("{grant} {}", j.grantee))
                .await
                .map_err(|e| refused("creation", 1, e, target))
                .map(|()| 1)
        };
        let result = one.await;
        let _ = j.done.send(result);
    }
}
