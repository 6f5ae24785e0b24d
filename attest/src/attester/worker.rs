//! One thread owns the TPM. The ESAPI context is not thread-safe, and TPM
//! calls block for milliseconds, so callers (async ones included, through
//! their blocking pool) send closures to this thread and wait for the result.

use std::sync::mpsc;
use std::thread::JoinHandle;

use super::tpm::{AttestError, Tpm};

type Job = Box<dyn FnOnce(&mut Tpm) + Send>;

/// A handle to the TPM worker thread. Cloning is cheap; the thread stops
/// (and flushes every handle it kept loaded) when the last handle is dropped.
pub struct Attester {
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<JoinHandle<()>>,
    tcti: String,
}

impl std::fmt::Debug for Attester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attester")
            .field("tcti", &self.tcti)
            .finish()
    }
}

impl Attester {
    /// Opens the TPM on a new worker thread.
    pub fn open(tcti: &str) -> Result<Self, AttestError> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let t = tcti.to_owned();
        let worker = std::thread::Builder::new()
            .name("tpm".into())
            .spawn(move || {
                let mut tpm = match Tpm::open(&t) {
                    Ok(tpm) => {
                        let _ = ready_tx.send(Ok(()));
                        tpm
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                for job in rx {
                    job(&mut tpm);
                }
            })
            .map_err(|e| AttestError::Open {
                tcti: tcti.to_owned(),
                reason: format!("cannot start the TPM thread: {e}"),
            })?;
        ready_rx.recv().map_err(|_| AttestError::WorkerGone)??;
        Ok(Self {
            jobs: Some(jobs),
            worker: Some(worker),
            tcti: tcti.to_owned(),
        })
    }

    pub fn tcti(&self) -> &str {
        &self.tcti
    }

    /// Runs `f` on the TPM thread and waits for its result.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Tpm) -> Result<T, AttestError> + Send + 'static,
    ) -> Result<T, AttestError> {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move |tpm| {
            let _ = tx.send(f(tpm));
        });
        self.jobs
            .as_ref()
            .ok_or(AttestError::WorkerGone)?
            .send(job)
            .map_err(|_| AttestError::WorkerGone)?;
        rx.recv().map_err(|_| AttestError::WorkerGone)?
    }
}

impl Drop for Attester {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}
