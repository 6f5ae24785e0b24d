//! The agent's client for the server: its current way to reach the server
//! as itself (its X.509-SVID over mTLS, or on a TPM node the TPM-held
//! key), used by the workload socket, the proxies, the identities it keeps
//! and the events it reports.

use std::sync::{Arc, RwLock};

/// The agent's current way to reach the server as itself.
#[derive(Clone, Default)]
pub struct Upstream(Arc<RwLock<Option<Link>>>);

#[derive(Clone)]
enum Link {
    /// A token host: an mTLS client holding the current SVID and its
    /// in-memory key, replaced at every rotation.
    Client {
        base: String,
        http: reqwest::blocking::Client,
    },
    /// A TPM node: the TPM is opened for each request (and closed after,
    /// so renewals get their turn), with the SVID then on disk.
    Tpm(super::EnrolOptions),
}

impl Upstream {
    /// From now on, requests go to `server` through `http` (an mTLS client
    /// holding the current SVID).
    pub fn set(&self, server: &str, http: reqwest::blocking::Client) {
        let link = Link::Client {
            base: server.to_owned(),
            http,
        };
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(link);
    }

    /// Requests are signed by the TPM-held identity key of the node `opts`
    /// describes.
    pub fn tpm(opts: &super::EnrolOptions) -> Self {
        Self(Arc::new(RwLock::new(Some(Link::Tpm(opts.clone())))))
    }

    fn get(&self) -> Option<Link> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// One connection to the server as this host, for several requests
    /// in a row (a TPM node opens its TPM and shakes hands once).
    pub fn connect(&self) -> Result<Connected, UpstreamError> {
        let link = self.get().ok_or(UpstreamError::NoIdentity)?;
        match link {
            Link::Client { base, http } => Ok(Connected { base, http }),
            Link::Tpm(opts) => {
                let svid = std::fs::read_to_string(opts.state_dir.join("svid.pem"))
                    .map_err(|_| UpstreamError::NotEnrolled)?;
                let tpm = super::enrol::Enrolment::open(&opts.tcti, &opts.state_dir)
                    .map_err(|e| UpstreamError::Tpm(e.to_string()))?;
                let http = tpm
                    .mtls_client(&opts.ca_bundle, &svid)
                    .map_err(|e| UpstreamError::Tpm(e.to_string()))?;
                Ok(Connected {
                    base: opts.server.clone(),
                    http,
                })
            }
        }
    }

    /// Sends `body` to the server's `path` as this host (blocking), naming
    /// the local program `who` for the audit: the answer's status and body.
    pub fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
        who: &str,
    ) -> Result<(u16, String), UpstreamError> {
        self.connect()?.post_as(path, body, who)
    }
}

/// A client of the server holding this host's identity.
pub struct Connected {
    /// The server's base URL, or several (see `servers`).
    base: String,
    http: reqwest::blocking::Client,
}

impl Connected {
    /// POSTs `body` to `path`: the answer's status and body.
    pub fn post(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<(u16, String), UpstreamError> {
        self.post_as(path, body, "")
    }

    /// As [`Connected::post`], naming the local program `who` (when not
    /// empty) for the server's audit.
    pub fn post_as(
        &self,
        path: &str,
        body: &impl serde::Serialize,
        who: &str,
    ) -> Result<(u16, String), UpstreamError> {
        super::servers::first_served(&self.base, |base| {
            let mut request = self
                .http
                .post(format!("{base}{path}"))
                .timeout(super::servers::attempt_wait())
                .json(body);
            if !who.is_empty() {
                request = request.header(crate::wire::db::WORKLOAD_HEADER, who);
            }
            request.send().map(answer).map_err(unreachable)
        })
    }

    /// GETs `path`: the answer's status and its bytes (a KRL).
    pub fn get_bytes(&self, path: &str) -> Result<(u16, Vec<u8>), UpstreamError> {
        super::servers::first_served(&self.base, |base| {
            self.http
                .get(format!("{base}{path}"))
                .timeout(super::servers::attempt_wait())
                .send()
                .map(|r| {
                    let status = r.status().as_u16();
                    (status, r.bytes().map(|b| b.to_vec()).unwrap_or_default())
                })
                .map_err(unreachable)
        })
    }

    /// GETs `path`: the answer's status and body.
    pub fn get(&self, path: &str) -> Result<(u16, String), UpstreamError> {
        super::servers::first_served(&self.base, |base| {
            self.http
                .get(format!("{base}{path}"))
                .timeout(super::servers::attempt_wait())
                .send()
                .map(answer)
                .map_err(unreachable)
        })
    }
}

fn unreachable(e: reqwest::Error) -> UpstreamError {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    UpstreamError::Unreachable(text)
}

/// Why the agent could not ask the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("this agent has no identity yet (its first rotation has not succeeded)")]
    NoIdentity,
    #[error("this node has no identity yet (not enrolled)")]
    NotEnrolled,
    #[error("cannot use the TPM: {0}")]
    Tpm(String),
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
}

fn answer(r: reqwest::blocking::Response) -> (u16, String) {
    let status = r.status().as_u16();
    (status, r.text().unwrap_or_default())
}
