//! The agent on a host without a TPM: it holds a rotating identity token
//! (DESIGN.md, "Universal identity token"), exchanges it for an X.509-SVID
//! and the next token, and rotates at half the shorter of the two
//! lifetimes. The SVID's private key exists only in the agent's memory.
//! The current token is the one durable secret on such a host: it lives in
//! `state_dir/token`, mode 0600, and is worthless once rotated (presenting
//! it again revokes the whole chain).

use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::enrol::{client, post_json, write, AgentError};
use super::upstream::Upstream;
use crate::wire::token::{ExchangeRequest, ExchangeResponse};

/// Where a token host's agent works.
#[derive(Debug, Clone)]
pub struct TokenOptions {
    pub server: String,
    pub ca_bundle: PathBuf,
    /// The operator's first token; consumed by the first exchange.
    pub bootstrap: PathBuf,
    pub state_dir: PathBuf,
}

/// One exchange's result.
pub struct Rotated {
    pub spiffe_id: String,
    pub svid_pem: String,
    /// The SVID's key, in memory only.
    pub key: p256::ecdsa::SigningKey,
    pub token_expires: i64,
}

impl std::fmt::Debug for Rotated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rotated")
            .field("spiffe_id", &self.spiffe_id)
            .field("token_expires", &self.token_expires)
            .finish_non_exhaustive()
    }
}

fn read_token(path: &Path) -> Result<SecretString, AgentError> {
    std::fs::read_to_string(path)
        .map(|t| SecretString::from(t.trim().to_owned()))
        .map_err(|source| AgentError::File {
            what: "read the token",
            path: path.to_owned(),
            source,
        })
}

/// Exchanges the current token (the state's, else the bootstrap one) for
/// an SVID and the next token, which replaces it on disk at once.
pub fn exchange(opts: &TokenOptions) -> Result<Rotated, AgentError> {
    std::fs::create_dir_all(&opts.state_dir).map_err(|source| AgentError::File {
        what: "create",
        path: opts.state_dir.clone(),
        source,
    })?;
    let state_token = opts.state_dir.join("token");
    let from_bootstrap = !state_token.exists();
    let token = read_token(if from_bootstrap {
        &opts.bootstrap
    } else {
        &state_token
    })?;
    if from_bootstrap && token.expose_secret().is_empty() {
        return Err(AgentError::NoToken(opts.bootstrap.clone()));
    }
    let key = p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let http = client(&opts.ca_bundle)?;
    // A reply lost on the way is asked for again at once, with the same
    // token and key and the next attempt number, signed anew: the server
    // answers a prompt retry with the same next token, and refuses a copy
    // of a request it answered (any later or other reuse of the token
    // revokes the chain).
    let mut attempt = 0;
    let answer: ExchangeResponse = loop {
        let request = ExchangeRequest::attempt(token.clone(), &key, attempt);
        let sent = super::servers::first_answer(&opts.server, |base| {
            post_json(&http, &format!("{base}/v1/token/exchange"), &request)
        });
        match sent {
            Err(AgentError::Unreachable { .. } | AgentError::BadAnswer(_)) if attempt < 2 => {
                attempt += 1;
                std::thread::sleep(Duration::from_secs(u64::from(attempt)));
            }
            other => break other?,
        }
    };
    // The presented token is dead from here on: keep the new one first.
    write(
        &state_token,
        "write the token",
        answer.token.expose_secret().as_bytes(),
    )?;
    if from_bootstrap {
        // Spent; a copy left behind could only ever trigger a theft alert.
        let _ = std::fs::remove_file(&opts.bootstrap);
    }
    write(
        &opts.state_dir.join("bundle.pem"),
        "write",
        answer.bundle.as_bytes(),
    )?;
    write(
        &opts.state_dir.join("svid.pem"),
        "write",
        answer.svid.as_bytes(),
    )?;
    Ok(Rotated {
        spiffe_id: answer.spiffe_id.clone(),
        svid_pem: answer.svid.clone(),
        key,
        token_expires: answer.token_expires,
    })
}

/// Rotates until `stop` receives a message (or its sender is dropped).
/// After each rotation `upstream` (the workload API's way to the server)
/// holds the new SVID.
pub fn run(opts: &TokenOptions, upstream: &Upstream, retry_max: Duration, stop: &Receiver<()>) {
    let notifier = crate::sd_notify::Notifier::from_env();
    let mut ready = false;
    let mut backoff = Duration::from_secs(1);
    loop {
        let wait = match exchange(opts) {
            Ok(r) => {
                backoff = Duration::from_secs(1);
                match super::mtls::client_with_key(&opts.ca_bundle, &r.svid_pem, &r.key) {
                    Ok(http) => upstream.set(&opts.server, http),
                    Err(e) => println!("workload API: cannot use the new SVID: {e}"),
                }
                let token_left = (r.token_expires - crate::wire::now()).max(0) as u64;
                let svid_left = super::run::not_after(&r.svid_pem)
                    .and_then(|t| t.duration_since(std::time::SystemTime::now()).ok())
                    .unwrap_or_default();
                let left = Duration::from_secs(token_left).min(svid_left);
                println!(
                    "token rotated: {} serial {} valid for {}s",
                    r.spiffe_id,
                    super::run::serial(&r.svid_pem),
                    left.as_secs()
                );
                (left / 2).max(Duration::from_secs(2))
            }
            Err(AgentError::Refused { status, reason }) => {
                println!("rejected by the server ({status}): {reason}");
                backoff = (backoff * 2).min(retry_max);
                backoff
            }
            Err(e) => {
                println!("cannot rotate now, retrying in {}s: {e}", backoff.as_secs());
                let w = backoff;
                backoff = (backoff * 2).min(retry_max);
                w
            }
        };
        if !ready {
            notifier.ready("running");
            ready = true;
        }
        if super::run::wait_until(std::time::Instant::now() + wait, stop, &notifier) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty first token (a credential that was never made for this
    /// host) is named as such, before anything is sent.
    #[test]
    fn an_empty_first_token_says_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let bootstrap = dir.path().join("token");
        std::fs::write(&bootstrap, "\n").unwrap();
        let opts = TokenOptions {
            server: "https://127.0.0.1:9".into(),
            ca_bundle: dir.path().join("ca.pem"),
            bootstrap: bootstrap.clone(),
            state_dir: dir.path().join("state"),
        };
        let e = exchange(&opts).unwrap_err();
        assert!(
            matches!(&e, AgentError::NoToken(p) if p == &bootstrap),
            "{e}"
        );
        assert!(e.to_string().contains("systemd-creds encrypt"), "{e}");
    }
}
