//! MariaDB revocations in batches. A revocation locks the account, ends its
//! sessions, drops it and deletes its expiry row; done one user at a time
//! that is five or more round trips and two privilege-cache rebuilds a
//! user. Revocations asked for while a batch runs wait for the next, which
//! looks all of them up in one query, locks them in one `ALTER USER`, ends
//! their sessions in one pass, drops them in one `DROP USER` and deletes
//! their rows in one statement. A batch the server refuses is redone user
//! by user, so each revocation gets its own answer.

use std::collections::HashSet;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Pool, Value};
use tokio::sync::{mpsc, oneshot};

use super::mariadb::quote;
use super::mariadb_batch::{batcher, refused, unavailable};
use super::DbError;

/// Most users revoked by one batch.
pub const MAX_BATCH: usize = crate::creds::lease::manager::BATCHED_REVOKE_CONCURRENCY;

/// One user to revoke (a role with no extra revocation statements).
pub struct Job {
    pub name: String,
    /// Whether the user existed (false: already gone, still revoked).
    pub done: oneshot::Sender<Result<bool, DbError>>,
}

/// Starts the revocation batches for `pool`; they end when the sender is
/// dropped.
pub fn spawn(pool: Pool, target: String) -> mpsc::UnboundedSender<Job> {
    batcher(MAX_BATCH, move |jobs: Vec<Job>| {
        let (pool, target) = (pool.clone(), target.clone());
        async move { run(&pool, &target, jobs).await }
    })
}

/// Statement `index` of a revocation failed.
fn failed(target: &str, index: usize) -> impl Fn(mysql_async::Error) -> DbError + '_ {
    move |e| refused("revocation", index, e, target)
}

async fn run(pool: &Pool, target: &str, jobs: Vec<Job>) {
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
    let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    if jobs.len() > 1 {
        if let Ok(existed) = batch(&mut conn, target, &names).await {
            for j in jobs {
                let found = existed.contains(&j.name);
                let _ = j.done.send(Ok(found));
            }
            return;
        }
    }
    // One by one: each step is idempotent, so redoing what the batch did
    // is harmless.
    for j in jobs {
        let result = one(&mut conn, target, &j.name, &[]).await;
        let _ = j.done.send(result);
    }
}

/// `?, ?, …` for `n` parameters.
fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}

fn params(names: &[&str]) -> Vec<Value> {
    names.iter().map(|n| Value::from(*n)).collect()
}

/// Revokes every user of `names`; the names that existed.
async fn batch(conn: &mut Conn, target: &str, names: &[&str]) -> Result<HashSet<String>, DbError> {
    let list = marks(names.len());
    let accounts: Vec<(String, String)> = conn
        .exec(
            format!("SELECT User, Host FROM mysql.user WHERE User IN ({list})"),
            params(names),
        )
        .await
        .map_err(failed(target, 0))?;
    let spelled: Vec<String> = accounts.iter().map(|(u, h)| account(u, h)).collect();
    // Locked first, so no new session starts while the old ones end.
    if !spelled.is_empty() {
        conn.query_drop(format!("ALTER USER {} ACCOUNT LOCK", spelled.join(", ")))
            .await
            .map_err(failed(target, 1))?;
    }
    // Sessions are ended even for users already gone: the expiry event may
    // have dropped an account while its sessions stayed open.
    let sessions: Vec<u64> = conn
        .exec(
            format!("SELECT ID FROM information_schema.PROCESSLIST WHERE USER IN ({list})"),
            params(names),
        )
        .await
        .map_err(failed(target, 2))?;
    for id in sessions {
        // A session that ended meanwhile is fine.
        let _ = conn.query_drop(format!("KILL CONNECTION {id}")).await;
    }
    if !spelled.is_empty() {
        conn.query_drop(format!("DROP USER IF EXISTS {}", spelled.join(", ")))
            .await
            .map_err(failed(target, 3))?;
    }
    conn.exec_drop(
        format!("DELETE FROM `zeroth`.`expiry` WHERE user IN ({list})"),
        params(names),
    )
    .await
    .map_err(failed(target, 4))?;
    Ok(accounts.into_iter().map(|(u, _)| u).collect())
}

/// Revokes `name` alone, running the role's rendered `extra` statements
/// first: locks it at every host it exists at (a custom template may have
/// made it at another host than `%`), ends its sessions, drops it.
pub async fn one(
    conn: &mut Conn,
    target: &str,
    name: &str,
    extra: &[String],
) -> Result<bool, DbError> {
    let hosts: Vec<String> = conn
        .exec("SELECT Host FROM mysql.user WHERE User = ?", (name,))
        .await
        .map_err(failed(target, 0))?;
    if !hosts.is_empty() {
        for (i, sql) in extra.iter().enumerate() {
            conn.query_drop(sql.as_str())
                .await
                .map_err(failed(target, i + 1))?;
        }
    }
    for host in &hosts {
        conn.query_drop(format!("ALTER USER {} ACCOUNT LOCK", account(name, host)))
            .await
            .map_err(failed(target, 1))?;
    }
    let sessions: Vec<u64> = conn
        .exec(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ?",
            (name,),
        )
        .await
        .map_err(failed(target, 2))?;
    for id in sessions {
        let _ = conn.query_drop(format!("KILL CONNECTION {id}")).await;
    }
    for host in &hosts {
        conn.query_drop(format!("DROP USER IF EXISTS {}", account(name, host)))
            .await
            .map_err(failed(target, 3))?;
    }
    conn.exec_drop("DELETE FROM `zeroth`.`expiry` WHERE user = ?", (name,))
        .await
        .map_err(failed(target, 4))?;
    Ok(!hosts.is_empty())
}

/// `'user'@'host'`, each quoted as a string literal.
fn account(user: &str, host: &str) -> String {
    format!("{}@{}", quote(user), quote(host))
}

#[cfg(test)]
mod tests {
    use super::{account, marks};

    #[test]
    fn accounts_are_quoted_so_no_name_or_host_ends_the_literal() {
        assert_eq!(account("zt_a", "%"), "'zt_a'@'%'");
        assert_eq!(account("o'brien", "h\\'x"), "'o''brien'@'h\\\\''x'");
        assert_eq!(marks(3), "?, ?, ?");
    }
}
