//! Supervised child processes for the lab.
//!
//! Every lab component is a real daemon running as our child. Three rules keep
//! the machine clean whatever happens to the parent:
//! - each child leads its own process group, so stopping it also stops the
//!   workers it forked (PostgreSQL backends, sshd sessions);
//! - each child gets `PR_SET_PDEATHSIG(SIGKILL)`, so the kernel kills it if
//!   our process dies without running destructors (SIGKILL, abort);
//! - `Drop` stops the group: a polite signal, a deadline, then SIGKILL.
//!
//! The parent-death signal fires when the *thread* that forked the child
//! exits, not the process. Children are therefore forked by one spawner thread
//! that lives as long as the process, never by a short-lived test thread.
#![allow(unsafe_code)] // one `pre_exec` hook: the narrow FFI edge of the lab.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, Pid, Signal};

use super::LabError;

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<std::process::Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("lab-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    // The receiver may have given up; nothing else to do then.
                    let _ = reply.send(cmd.spawn());
                }
            })
            // ok: failing to start one thread at lab start-up is unrecoverable.
            .expect("start the lab spawner thread");
        Mutex::new(tx)
    })
}

/// A daemon started by the lab; stopped (with its whole process group) on drop.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    child: std::process::Child,
    log: PathBuf,
    stop_signal: Signal,
    stopped: bool,
}

impl Daemon {
    /// Starts `cmd` as a supervised daemon whose stdout and stderr go to `log`.
    /// `stop_signal` is the signal that asks this daemon for a clean shutdown.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        log: &Path,
        stop_signal: Signal,
    ) -> Result<Self, LabError> {
        let out =
            File::create(log).map_err(|e| LabError::io(format!("create {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| LabError::io(format!("dup {}", log.display()), e))?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        // SAFETY: the hook runs in the forked child before exec and only makes
        // one async-signal-safe system call (prctl). It runs after any
        // setuid/setgid requested on `cmd`, which would otherwise clear it.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
                    .map_err(std::io::Error::from)
            });
        }
        let program = cmd.get_program().to_string_lossy().into_owned();
        let (tx, rx) = mpsc::channel();
        spawner()
            .lock()
            .map_err(|_| LabError::Spawner)?
            .send((cmd, tx))
            .map_err(|_| LabError::Spawner)?;
        let child = rx
            .recv()
            .map_err(|_| LabError::Spawner)?
            .map_err(|e| LabError::io(format!("start {name} ({program})"), e))?;
        tracing::debug!(name, pid = child.id(), "lab daemon started");
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
            stop_signal,
            stopped: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last lines of the daemon's log, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log, 20)
    }

    /// `Some(status)` once the daemon has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Fails with the daemon's log if it has exited.
    pub fn ensure_running(&mut self) -> Result<(), LabError> {
        match self.exited() {
            None => Ok(()),
            Some(status) => Err(LabError::Exited {
                name: self.name.clone(),
                status: status.to_string(),
                log: self.log_tail(),
            }),
        }
    }

    /// SIGKILLs the daemon's group at once (a crash, as far as the daemon
    /// can tell) and reaps it.
    pub fn kill(&mut self) {
        if let Some(pgid) = Pid::from_raw(self.child.id() as i32) {
            let _ = kill_process_group(pgid, Signal::KILL);
        }
        self.stop(Duration::ZERO);
    }

    /// Asks the daemon's group to stop, waits up to `grace`, then kills it.
    /// Returns once the daemon has been reaped.
    pub fn stop(&mut self, grace: Duration) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let Some(pgid) = Pid::from_raw(self.child.id() as i32) else {
            return;
        };
        if self.exited().is_none() {
            let _ = kill_process_group(pgid, self.stop_signal);
            let deadline = Instant::now() + grace;
            while self.exited().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5)); // polling the exit, not guessing
            }
        }
        // Forked workers may outlive the leader: always sweep the group.
        let _ = kill_process_group(pgid, Signal::KILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
        tracing::debug!(name = %self.name, "lab daemon stopped");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

/// Runs a short command to completion, failing with its output if it fails.
pub fn run(what: &str, cmd: &mut Command) -> Result<String, LabError> {
    run_with_input(what, cmd, b"")
}

/// As [`run`], with `input` on the command's standard input: the way to hand
/// a program SQL that holds a password, which must not show in argv (where
/// `ps` reads it) nor in the error (which echoes argv-free output only).
pub fn run_with_input(what: &str, cmd: &mut Command, input: &[u8]) -> Result<String, LabError> {
    use std::io::Write;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LabError::io(format!("{what}: run {program}"), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| LabError::io(format!("{what}: write to {program}"), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| LabError::io(format!("{what}: wait for {program}"), e))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(LabError::Command {
            what: what.to_owned(),
            status: out.status.to_string(),
            output: format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
        })
    }
}

pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
