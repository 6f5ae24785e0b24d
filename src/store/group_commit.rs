//! Group commit: writers hand their transaction's work to one thread, which
//! runs whatever has queued up in a single transaction (each job in its
//! own savepoint when there are several) and makes it durable with one
//! fsync. Under load many
//! jobs share a commit; alone, a job is committed at once.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};

use crate::store::sql::Tx;

use super::{Store, StoreError};

type Job = Box<dyn FnOnce(&Tx<'_>) -> Result<(), StoreError> + Send>;

type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

struct Pending {
    job: Job,
    done: Done,
}

/// Most jobs in one transaction.
const MAX_BATCH: usize = 128;

pub struct GroupWriter {
    queue: Mutex<Sender<Pending>>,
}

impl GroupWriter {
    /// Starts the writer thread for `store`.
    pub fn spawn(store: Arc<Store>) -> Self {
        let (queue, rx) = mpsc::channel::<Pending>();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(&store, &rx))
            .map(drop)
            .unwrap_or_else(|e| tracing::error!(error = %e, "cannot start the store writer"));
        Self {
            queue: Mutex::new(queue),
        }
    }

    fn submit(&self, job: Job, done: Done) -> Result<(), StoreError> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(Pending { job, done })
            .map_err(|_| stopped())
    }

    /// Runs `job` in a transaction shared with other writers; returns once
    /// it is durable (or failed, with nothing of it kept). The caller waits
    /// without a thread of its own.
    pub async fn write_async(
        &self,
        job: impl FnOnce(&Tx<'_>) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<(), StoreError> {
        let (done, result) = tokio::sync::oneshot::channel::<Result<(), StoreError>>();
        self.submit(
            Box::new(job),
            Box::new(move |r| {
                let _ = done.send(r);
            }),
        )?;
        result.await.unwrap_or_else(|_| Err(stopped()))
    }
}

fn stopped() -> StoreError {
    StoreError::Writer("the store writer has stopped".into())
}

fn run(store: &Store, rx: &Receiver<Pending>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let mut dones = Vec::with_capacity(batch.len());
        let mut conn = store.lock();
        if batch.len() == 1 {
            // Alone, a job needs no savepoint: its failure rolls the whole
            // transaction back (two round trips fewer on PostgreSQL).
            let Some(p) = batch.pop() else { continue };
            let r = conn
                .transaction()
                .map_err(StoreError::sql("starting a transaction"))
                .and_then(|tx| {
                    (p.job)(&tx)?;
                    tx.commit()
                        .map_err(StoreError::sql("committing a transaction"))
                });
            drop(conn);
            (p.done)(r);
            continue;
        }
        let outcome = (|| -> Result<Vec<Result<(), StoreError>>, StoreError> {
            let tx = conn
                .transaction()
                .map_err(StoreError::sql("starting a group transaction"))?;
            let mut results = Vec::with_capacity(batch.len());
            for p in batch {
                dones.push(p.done);
                tx.savepoint("job")
                    .map_err(StoreError::sql("opening a savepoint"))?;
                match (p.job)(&tx) {
                    Ok(()) => {
                        tx.release("job")
                            .map_err(StoreError::sql("releasing a savepoint"))?;
                        results.push(Ok(()));
                    }
                    Err(e) => {
                        tx.rollback_to("job")
                            .and_then(|()| tx.release("job"))
                            .map_err(StoreError::sql("rolling back a savepoint"))?;
                        results.push(Err(e));
                    }
                }
            }
            tx.commit()
                .map_err(StoreError::sql("committing a group transaction"))?;
            Ok(results)
        })();
        drop(conn);
        match outcome {
            Ok(results) => {
                for (done, r) in dones.into_iter().zip(results) {
                    done(r);
                }
            }
            Err(e) => {
                for done in dones {
                    done(Err(e.for_each_job()));
                }
            }
        }
    }
}
