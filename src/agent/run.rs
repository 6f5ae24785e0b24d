//! `zeroth agent run`: keep this machine's identity fresh. At half the
//! SVID's lifetime the agent renews over mTLS with a fresh quote (the server
//! re-evaluates its policy); it backs off while the server is unreachable,
//! and once its SVID has expired it enrols again through the TPM by itself.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use super::enrol::{enrol, renew, AgentError, EnrolOptions, Outcome};
use super::ssh_host;
use crate::config::AgentSshConfig;
use crate::sd_notify::Notifier;

const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// Never renew more often than this, whatever the SVID's lifetime.
const MIN_RENEWAL: Duration = Duration::from_secs(2);

/// What one attempt led to, printed one line each (the journal's view).
pub(crate) fn not_after(svid_pem: &str) -> Option<SystemTime> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(svid_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let ts = cert.validity().not_after.timestamp();
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(ts).ok()?))
}

pub(crate) fn serial(svid_pem: &str) -> String {
    x509_parser::pem::parse_x509_pem(svid_pem.as_bytes())
        .ok()
        .and_then(|(_, pem)| pem.parse_x509().ok().map(|c| c.raw_serial_as_string()))
        .unwrap_or_default()
}

/// An SVID closer to its end than this is not used for mTLS any more.
const EXPIRY_MARGIN: Duration = Duration::from_secs(2);

/// Renews over mTLS while the SVID on disk is valid; enrols otherwise, or
/// when the server no longer knows that SVID (401).
fn refresh(opts: &EnrolOptions) -> (Result<Outcome, AgentError>, &'static str) {
    let current = std::fs::read_to_string(opts.state_dir.join("svid.pem")).ok();
    let usable = current
        .as_deref()
        .and_then(not_after)
        .is_some_and(|t| t > SystemTime::now() + EXPIRY_MARGIN);
    if usable {
        match renew(opts) {
            Err(AgentError::Refused { status: 401, .. }) => {}
            other => return (other, "mtls"),
        }
    }
    (enrol(opts), "enrolment")
}

/// Runs until `stop` receives a message (or its sender is dropped).
/// `retry_max` caps the wait between attempts that failed. With `ssh`
/// enabled, sshd's host certificates, trusted CA keys and KRL are kept
/// current every `ssh.refresh` and after each renewal.
pub fn run(opts: &EnrolOptions, ssh: &AgentSshConfig, retry_max: Duration, stop: &Receiver<()>) {
    let notifier = Notifier::from_env();
    let mut ready = false;
    let mut backoff = MIN_BACKOFF;
    let mut next_identity = Instant::now();
    let mut next_ssh = Instant::now();
    loop {
        let mut approved = false;
        if Instant::now() >= next_identity {
            let wait = renew_identity(opts, retry_max, &mut backoff);
            approved = wait.1;
            next_identity = Instant::now() + wait.0;
        }
        if ssh.is_enabled() && (approved || Instant::now() >= next_ssh) {
            let wait = match ssh_host::sync(ssh, opts) {
                Ok(done) => {
                    for path in &done.certified {
                        println!("host certificate renewed: {}", path.display());
                    }
                    if done.user_ca_changed {
                        println!("trusted user CA keys updated");
                    }
                    if done.krl_changed {
                        println!("KRL updated");
                    }
                    ssh.refresh
                }
                Err(e) => {
                    println!("cannot refresh the SSH files now: {e}");
                    ssh.refresh.min(retry_max)
                }
            };
            next_ssh = Instant::now() + wait;
        }
        // systemd: started once the first attempt is over (whatever its
        // outcome: an unreachable server is retried, not a failed start).
        if !ready {
            notifier.ready("running");
            ready = true;
        }
        let wake = if ssh.is_enabled() {
            next_identity.min(next_ssh)
        } else {
            next_identity
        };
        if wait_until(wake, stop, &notifier) {
            return;
        }
    }
}

/// Waits until `wake`, pinging systemd's watchdog on the way (so a stuck
/// loop gets restarted). True if `stop` fired: then STOPPING=1 was sent.
pub(crate) fn wait_until(wake: Instant, stop: &Receiver<()>, notifier: &Notifier) -> bool {
    loop {
        notifier.watchdog();
        let mut until = wake;
        if let Some(every) = notifier.watchdog_interval() {
            until = until.min(Instant::now() + every);
        }
        match stop.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Err(RecvTimeoutError::Timeout) if Instant::now() >= wake => return false,
            Err(RecvTimeoutError::Timeout) => continue,
            _ => {
                notifier.stopping();
                return true;
            }
        }
    }
}

/// One identity attempt: how long until the next, and whether the node
/// holds a fresh SVID now.
fn renew_identity(
    opts: &EnrolOptions,
    retry_max: Duration,
    backoff: &mut Duration,
) -> (Duration, bool) {
    let (result, how) = refresh(opts);
    match result {
        Ok(Outcome::Approved {
            spiffe_id,
            svid_pem,
            ..
        }) => {
            *backoff = MIN_BACKOFF;
            let until = not_after(&svid_pem);
            let left = until
                .and_then(|t| t.duration_since(SystemTime::now()).ok())
                .unwrap_or(MIN_RENEWAL);
            println!(
                "identity renewed: {spiffe_id} serial {} valid for {}s via {how}",
                serial(&svid_pem),
                left.as_secs()
            );
            ((left / 2).max(MIN_RENEWAL), true)
        }
        Ok(Outcome::Pending { node_id }) => {
            println!("pending: waiting for an operator to run `zeroth node approve {node_id}`");
            *backoff = (*backoff * 2).min(retry_max);
            (*backoff, false)
        }
        Err(AgentError::Refused { status, reason }) => {
            println!("rejected by the server ({status}): {reason}");
            *backoff = (*backoff * 2).min(retry_max);
            (*backoff, false)
        }
        Err(e) => {
            println!("cannot renew now, retrying in {}s: {e}", backoff.as_secs());
            let w = *backoff;
            *backoff = (*backoff * 2).min(retry_max);
            (w, false)
        }
    }
}
