//! A `zeroth agent run` child process whose output lines a test or the demo
//! can wait for, one condition at a time, each with a deadline.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use super::LabError;

pub struct AgentProcess {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl AgentProcess {
    /// Starts `exe agent run --config config`.
    pub fn start(exe: &Path, config: &Path) -> Result<Self, LabError> {
        let mut child = Command::new(exe)
            .args(["agent", "run", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| LabError::io("start zeroth agent run", e))?;
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| LabError::Unsupported("the agent's stdout was not piped".into()))?;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            lines,
            seen: Vec::new(),
        })
    }

    /// The next line satisfying `want`, within `within`.
    pub fn expect(
        &mut self,
        within: Duration,
        want: impl Fn(&str) -> bool,
    ) -> Result<String, LabError> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return Ok(line);
                    }
                }
                Err(_) => {
                    return Err(LabError::NotReady {
                        what: "the expected line from zeroth agent".into(),
                        after: within,
                        log: self.seen.join("\n"),
                    })
                }
            }
        }
    }

    /// Every line read so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// The agent's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits for "agent stopped" and a clean exit.
    pub fn stop(mut self) -> Result<(), LabError> {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32)
            .ok_or_else(|| LabError::Unsupported("the agent has no pid".into()))?;
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        self.expect(Duration::from_secs(10), |l| l == "agent stopped")?;
        let status = self
            .child
            .wait()
            .map_err(|e| LabError::io("wait for zeroth agent", e))?;
        if status.success() {
            Ok(())
        } else {
            Err(LabError::Exited {
                name: "zeroth agent".into(),
                status: status.to_string(),
                log: self.seen.join("\n"),
            })
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
