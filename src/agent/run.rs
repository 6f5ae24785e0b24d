//! `zeroth agent run`: keep this machine's identity fresh. The agent
//! re-attests (fresh quote, policy re-evaluated by the server) at half the
//! SVID's lifetime, backs off while the server is unreachable, and
//! re-attests by itself once it is back, even after its SVID expired.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, SystemTime};

use super::enrol::{enrol, AgentError, EnrolOptions, Outcome};

const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Never renew more often than this, whatever the SVID's lifetime.
const MIN_RENEWAL: Duration = Duration::from_secs(2);

/// What one attempt led to, printed one line each (the journal's view).
fn not_after(svid_pem: &str) -> Option<SystemTime> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(svid_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let ts = cert.validity().not_after.timestamp();
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(ts).ok()?))
}

fn serial(svid_pem: &str) -> String {
    x509_parser::pem::parse_x509_pem(svid_pem.as_bytes())
        .ok()
        .and_then(|(_, pem)| pem.parse_x509().ok().map(|c| c.raw_serial_as_string()))
        .unwrap_or_default()
}

/// Runs until `stop` receives a message (or its sender is dropped).
pub fn run(opts: &EnrolOptions, stop: &Receiver<()>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let wait = match enrol(opts) {
            Ok(Outcome::Approved {
                spiffe_id,
                svid_pem,
                ..
            }) => {
                backoff = MIN_BACKOFF;
                let until = not_after(&svid_pem);
                let left = until
                    .and_then(|t| t.duration_since(SystemTime::now()).ok())
                    .unwrap_or(MIN_RENEWAL);
                println!(
                    "identity renewed: {spiffe_id} serial {} valid for {}s",
                    serial(&svid_pem),
                    left.as_secs()
                );
                (left / 2).max(MIN_RENEWAL)
            }
            Ok(Outcome::Pending { node_id }) => {
                println!("pending: waiting for an operator to run `zeroth node approve {node_id}`");
                backoff = (backoff * 2).min(MAX_BACKOFF);
                backoff
            }
            Err(AgentError::Refused { status, reason }) => {
                println!("rejected by the server ({status}): {reason}");
                backoff = (backoff * 2).min(MAX_BACKOFF);
                backoff
            }
            Err(e) => {
                println!("cannot renew now, retrying in {}s: {e}", backoff.as_secs());
                let w = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                w
            }
        };
        match stop.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => continue,
            _ => return,
        }
    }
}
