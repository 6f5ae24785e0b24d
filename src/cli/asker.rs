//! How a command on a host asks the server for credentials in the host's
//! name: through the agent's workload API when it serves one (a token
//! host's SVID key is only in the agent), else by signing its own mTLS
//! handshake with the TPM-held key.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::agent::enrol::{post_json, Enrolment};
use crate::agent::workload_api::{self, WorkloadRequest};
use crate::config::AgentConfig;

pub enum Asker {
    /// A TPM node: mTLS signed by the TPM-held key (the TPM context stays
    /// open until the lease is given back).
    Tpm {
        http: reqwest::blocking::Client,
        base: String,
        _tpm: Enrolment,
    },
    /// A token host: through the agent.
    Agent(PathBuf),
}

impl Asker {
    /// How a program's own command asks: through the agent socket named by
    /// `socket`; else as the agent configuration at `config` says; and when
    /// that configuration cannot be read (it is the agent's, not every
    /// user's), through the packaged agent's socket, if there is one.
    pub fn for_command(config: &Path, socket: Option<&Path>) -> Result<Self> {
        if let Some(socket) = socket {
            return Ok(Self::Agent(socket.to_owned()));
        }
        match AgentConfig::load(config) {
            Ok(c) => Self::open(&c),
            Err(crate::config::ConfigError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::PermissionDenied
                    && Path::new(crate::config::DEFAULT_WORKLOAD_SOCKET).exists() =>
            {
                Ok(Self::Agent(crate::config::DEFAULT_WORKLOAD_SOCKET.into()))
            }
            Err(e) => Err(anyhow::Error::new(e).context(
                "the agent's configuration; a program may instead name the agent's socket with --socket",
            )),
        }
    }

    /// Through the agent when it serves a workload API (then this program
    /// needs neither the TPM nor a key), else with the TPM directly.
    pub fn open(c: &AgentConfig) -> Result<Self> {
        if let Some(api) = &c.workload_api {
            return Ok(Self::Agent(api.socket.clone()));
        }
        anyhow::ensure!(
            c.token_file.is_none(),
            "this host runs on a token: its agent must serve [workload_api] for credentials"
        );
        let svid_path = c.state_dir.join("svid.pem");
        let svid = std::fs::read_to_string(&svid_path).with_context(|| {
            format!(
                "no X.509-SVID at {}: run `zeroth agent run` first",
                svid_path.display()
            )
        })?;
        let tpm = Enrolment::open(&c.tcti, &c.state_dir)?;
        let http = tpm.mtls_client(&c.ca_bundle, &svid)?;
        Ok(Self::Tpm {
            http,
            base: c.server.clone(),
            _tpm: tpm,
        })
    }

    /// One request (`db.creds`, `ssh.sign`, `lease.renew`), its answer.
    pub fn ask<T: serde::de::DeserializeOwned>(&self, req: &WorkloadRequest) -> Result<T> {
        let answer = match self {
            Self::Tpm { http, base, .. } => {
                let (path, body) = workload_api::route(req)?;
                crate::agent::servers::first_answer(base, |b| {
                    post_json::<_, serde_json::Value>(http, &format!("{b}{path}"), &body)
                })?
            }
            Self::Agent(socket) => workload_api::call(socket, req)
                .map_err(|(status, reason)| anyhow::anyhow!("refused ({status}): {reason}"))?,
        };
        serde_json::from_value(answer).context("the server's answer")
    }

    /// The server's KRL of revoked host certificates.
    pub fn host_krl(&self) -> Result<Vec<u8>> {
        match self {
            Self::Tpm { http, base, .. } => crate::agent::servers::first_answer(base, |b| {
                crate::agent::ssh_host::get(http, &format!("{b}/v1/ssh/krl/host"))
            })
            .map_err(anyhow::Error::from),
            Self::Agent(socket) => {
                use base64::Engine;
                let answer = workload_api::call(
                    socket,
                    &WorkloadRequest {
                        op: workload_api::HOST_KRL.into(),
                        ..Default::default()
                    },
                )
                .map_err(|(status, reason)| anyhow::anyhow!("refused ({status}): {reason}"))?;
                let krl = answer["krl"]
                    .as_str()
                    .context("the agent's answer holds no KRL")?;
                base64::engine::general_purpose::STANDARD
                    .decode(krl)
                    .context("the agent's KRL is not base64")
            }
        }
    }

    /// Gives the lease back; whether that worked.
    pub fn give_back(&self, lease_id: &str) -> bool {
        match self {
            Self::Tpm { http, base, .. } => http
                .post(format!("{base}/v1/leases/{lease_id}/revoke"))
                .send()
                .map(|r| r.status().is_success())
                .unwrap_or(false),
            Self::Agent(socket) => workload_api::call(
                socket,
                &WorkloadRequest {
                    op: "lease.revoke".into(),
                    id: Some(lease_id.to_owned()),
                    ..Default::default()
                },
            )
            .is_ok(),
        }
    }
}
