//! Use events of proxied sessions, queued on the agent's disk until the
//! server has them: one file per event (no secret in it), written and
//! synced before the session goes on, deleted once the server answered.
//! Nothing is lost across an agent restart or a server outage; an event
//! delivered twice is recorded once (its id).

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::time::Duration;

use crate::agent::upstream::{Upstream, UpstreamError};
use crate::wire::db::{SessionEvent, SessionEventsRecorded};

const MAX_BATCH: usize = 128;
const RETRY_MIN: Duration = Duration::from_secs(1);
/// Retries back off to this: one small request per agent while the server
/// is away, and events flow again within seconds of its return (or of the
/// agent's own identity being renewed after a restart).
const RETRY_MAX: Duration = Duration::from_secs(8);

/// The queue's directory and the delivery thread's wake-up call.
pub struct EventQueue {
    dir: PathBuf,
    wake: Mutex<Sender<()>>,
    /// Pushes under way, so a stop can let them finish (see [`Self::settle`]).
    writing: Mutex<usize>,
    written: std::sync::Condvar,
}

/// Counts one push under way for as long as it lives.
struct Writing<'a>(&'a EventQueue);

impl<'a> Writing<'a> {
    fn new(queue: &'a EventQueue) -> Self {
        *queue
            .writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
        Self(queue)
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        let mut n = self
            .0
            .writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *n -= 1;
        self.0.written.notify_all();
    }
}

impl EventQueue {
    /// Opens (makes) the queue in `dir` and starts delivering what it holds
    /// through `upstream`.
    pub fn start(dir: &Path, upstream: Upstream) -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        recover(dir);
        let (wake, rx) = std::sync::mpsc::channel();
        let d = dir.to_owned();
        std::thread::Builder::new()
            .name("session-events".into())
            .spawn(move || deliver(&d, &upstream, &rx))?;
        Ok(Self {
            dir: dir.to_owned(),
            wake: Mutex::new(wake),
            writing: Mutex::new(0),
            written: std::sync::Condvar::new(),
        })
    }

    /// Waits, at most `within`, for the pushes under way to be on disk: a
    /// stopping agent would otherwise leave an event half written, to be
    /// set aside at the next start. True when none is left.
    pub fn settle(&self, within: Duration) -> bool {
        let n = self
            .writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (n, _) = self
            .written
            .wait_timeout_while(n, within, |n| *n > 0)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *n == 0
    }

    /// Queues `event` durably (blocking: call off the reactor).
    pub fn push(&self, event: &SessionEvent) -> std::io::Result<()> {
        use std::io::Write;
        let _writing = Writing::new(self);
        let json = serde_json::to_vec(event).map_err(std::io::Error::other)?;
        // Named by time, so delivery keeps the order they happened in.
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let name = format!("{stamp:024}-{}.json", event.id);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(&name))?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        let _ = self
            .wake
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(());
        Ok(())
    }

    /// Events not delivered yet.
    pub fn pending(&self) -> usize {
        queued(&self.dir).len()
    }
}

/// Events whose writing a stop interrupted (`.NAME.tmp` files): one that
/// holds a whole event is queued as it was meant to be; a torn one is set
/// aside (`.bad`), never delivered half.
fn recover(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(name) = file
            .strip_prefix('.')
            .and_then(|f| f.strip_suffix(".tmp"))
            .filter(|n| n.ends_with(".json"))
        else {
            continue;
        };
        let path = entry.path();
        let whole = std::fs::read(&path)
            .ok()
            .is_some_and(|b| serde_json::from_slice::<SessionEvent>(&b).is_ok());
        let to = match whole {
            true => dir.join(name),
            false => dir.join(format!("{name}.bad")),
        };
        if std::fs::rename(&path, &to).is_ok() {
            tracing::info!(event = %name, whole, "recovered a session event whose writing was interrupted");
        }
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

fn queued(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

/// Sends one batch; true when the queue is empty after it.
/// Why a batch stays queued for now.
#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("the server answered {status}: {text}")]
    Answer { status: u16, text: String },
}

fn deliver_batch(dir: &Path, upstream: &Upstream) -> Result<bool, DeliveryError> {
    let files = queued(dir);
    if files.is_empty() {
        return Ok(true);
    }
    let batch: Vec<_> = files.iter().take(MAX_BATCH).collect();
    let mut events = Vec::new();
    for path in &batch {
        match std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<SessionEvent>(&b).ok())
        {
            Some(e) => events.push(e),
            None => {
                // Not ours to understand (a torn write cannot happen:
                // files appear by rename). Set it aside, keep going.
                tracing::warn!(path = %path.display(), "an unreadable session event was set aside");
                let _ = std::fs::rename(path, path.with_extension("bad"));
            }
        }
    }
    if !events.is_empty() {
        let (status, text) = upstream.post(
            "/v1/db/session-events",
            &serde_json::json!({ "events": events }),
            "",
        )?;
        if status == 400 {
            // The server will never take these: keep them for an operator,
            // out of the way of the ones after them.
            tracing::error!(%text, "the server refused a batch of session events as malformed; set aside as .bad");
            for path in &batch {
                let _ = std::fs::rename(path, path.with_extension("bad"));
            }
            return Ok(files.len() <= MAX_BATCH);
        }
        if status == 403 {
            // This host is revoked (or its chain is): the server will never
            // take its events, and they must not wait on its disk forever.
            let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
            tracing::error!(%text, events = ?ids, "the server refuses this host's session events (403: revoked?); dropped from the queue");
            println!(
                "session events: the server refuses them ({text}); {} dropped",
                ids.len()
            );
            for path in &batch {
                let _ = std::fs::remove_file(path);
            }
            return Ok(files.len() <= MAX_BATCH);
        }
        if !(200..300).contains(&status) {
            return Err(DeliveryError::Answer { status, text });
        }
        let answer: SessionEventsRecorded = serde_json::from_str(&text).unwrap_or_default();
        for id in &answer.refused {
            tracing::warn!(event = %id, "the server refused a session event (a lease this host does not hold)");
        }
    }
    for path in &batch {
        let _ = std::fs::remove_file(path);
    }
    Ok(files.len() <= MAX_BATCH)
}

fn deliver(dir: &Path, upstream: &Upstream, wake: &Receiver<()>) {
    let mut wait = RETRY_MIN;
    let mut waiting = false;
    loop {
        let timeout = match deliver_batch(dir, upstream) {
            Ok(true) => {
                if std::mem::take(&mut waiting) {
                    println!("session events: the queue is delivered");
                }
                wait = RETRY_MIN;
                Duration::from_secs(60)
            }
            Ok(false) => Duration::ZERO,
            Err(e) => {
                if !std::mem::replace(&mut waiting, true) {
                    println!("session events wait on disk for the server: {e}");
                }
                tracing::info!(error = %e, retry_in = ?wait, "session events wait for the server");
                let w = wait;
                wait = (wait * 2).min(RETRY_MAX);
                // A new event does not hurry a retry against a server down.
                std::thread::sleep(w);
                continue;
            }
        };
        match wake.recv_timeout(timeout) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::db::{SessionEventKind, Workload};

    #[test]
    fn a_stop_waits_for_the_pushes_under_way_and_no_longer() {
        let dir = tempfile::tempdir().unwrap();
        let queue = EventQueue {
            dir: dir.path().to_owned(),
            wake: Mutex::new(std::sync::mpsc::channel().0),
            writing: Mutex::new(0),
            written: std::sync::Condvar::new(),
        };
        assert!(queue.settle(Duration::ZERO), "nothing under way");
        let writing = Writing::new(&queue);
        assert!(!queue.settle(Duration::from_millis(20)), "a push under way");
        std::thread::scope(|s| {
            let waiter = s.spawn(|| queue.settle(Duration::from_secs(30)));
            drop(writing);
            assert!(waiter.join().unwrap(), "settled once the push ended");
        });
    }

    #[test]
    fn an_interrupted_write_is_queued_if_whole_and_set_aside_if_torn() {
        let dir = tempfile::tempdir().unwrap();
        let event = SessionEvent {
            id: "e1".into(),
            kind: SessionEventKind::Closed,
            time: 1,
            proxy: "p".into(),
            role: "r".into(),
            lease: "l".into(),
            user: "u".into(),
            workload: Workload {
                uid: 1,
                pid: None,
                unit: None,
            },
            duration_ms: Some(5),
            bytes_from_client: None,
            bytes_to_client: None,
        };
        let json = serde_json::to_vec(&event).unwrap();
        std::fs::write(dir.path().join(".000001-e1.json.tmp"), &json).unwrap();
        std::fs::write(
            dir.path().join(".000002-e2.json.tmp"),
            &json[..json.len() / 2],
        )
        .unwrap();
        recover(dir.path());
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["000001-e1.json", "000002-e2.json.bad"]);
        assert_eq!(queued(dir.path()).len(), 1);
    }
}
