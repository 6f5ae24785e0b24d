//! `agent.toml`: how a node reaches the server, its workload API, SSH host
//! keys and database proxies.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{humantime_serde_compat, ConfigError};

pub use super::proxy::ProxyConfig;

/// `/etc/zeroth/agent.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The zeroth server, e.g. "https://zeroth.example.org:8443", or
    /// several servers of one cluster (a list, or URLs separated by
    /// commas): requests fail over from one that cannot be reached.
    #[serde(deserialize_with = "one_or_many")]
    pub server: String,
    /// The zeroth CA certificate (PEM) the server's certificate chains to.
    pub ca_bundle: PathBuf,
    /// The node group whose policy admits this machine (TPM hosts).
    pub group: Option<String>,
    /// Hosts without a TPM: a file holding the first rotating token an
    /// operator made with `zeroth token create`. The agent consumes it,
    /// then keeps the current token in `state_dir/token` (0600).
    pub token_file: Option<PathBuf>,
    /// TCTI of the TPM.
    #[serde(default = "default_tcti")]
    pub tcti: String,
    /// Where the agent keeps its TPM-wrapped keys and certificates.
    #[serde(default = "default_agent_state")]
    pub state_dir: PathBuf,
    /// The TCG boot event log sent with quotes (default: the kernel's,
    /// /sys/kernel/security/tpm0/binary_bios_measurements, when present).
    #[serde(default)]
    pub event_log: Option<PathBuf>,
    /// Longest wait between two attempts while the server is unreachable
    /// or the node is pending (the wait doubles from 1 s up to this).
    #[serde(default = "default_retry_max", with = "humantime_serde_compat")]
    pub retry_max: Duration,
    /// What the agent keeps current for this machine's sshd.
    #[serde(default)]
    pub ssh: AgentSshConfig,
    /// A local socket through which programs on this host get credentials
    /// in the host's name, without its key (a token host's is in the
    /// agent's memory) or access to its TPM.
    pub workload_api: Option<WorkloadApiConfig>,
    /// Database proxies: programs connect with no password, the agent
    /// makes a user for each connection.
    #[serde(default, rename = "proxy")]
    pub proxies: Vec<ProxyConfig>,
}

/// `[workload_api]` in agent.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadApiConfig {
    /// The socket (default /run/zeroth-agent/api.sock).
    #[serde(default = "default_workload_socket")]
    pub socket: PathBuf,
    /// Users, besides root and the agent's own, whose programs may ask
    /// for any role this host may use.
    #[serde(default)]
    pub allow_uids: Vec<u32>,
    /// Users whose programs may ask for these roles only, e.g.
    /// `1002 = ["app-ro"]` (keys are uids).
    #[serde(default)]
    pub roles: std::collections::BTreeMap<String, Vec<String>>,
    /// Programs of these systemd services (whatever their uid) may ask for
    /// these roles only, e.g. `"shop.service" = ["shop-rw"]`.
    #[serde(default)]
    pub units: std::collections::BTreeMap<String, Vec<String>>,
    /// How often the agent asks the server for this node's registration
    /// entries (SPIFFE Workload API identities).
    #[serde(default = "default_entry_refresh", with = "humantime_serde_compat")]
    pub entry_refresh: Duration,
}

fn default_entry_refresh() -> Duration {
    Duration::from_secs(5)
}

/// Where the packaged agent serves its workload API.
pub const DEFAULT_WORKLOAD_SOCKET: &str = "/run/zeroth-agent/api.sock";

fn default_workload_socket() -> PathBuf {
    PathBuf::from(DEFAULT_WORKLOAD_SOCKET)
}

/// `[ssh]` in agent.toml: host certificates for sshd's host keys, the user
/// CA keys sshd trusts and the KRL it reads, all kept current by the agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSshConfig {
    /// The server's host-certificate role (`cert_type = "host"`).
    pub host_role: Option<String>,
    /// sshd public host keys to certify; each certificate is written as
    /// `<key>-cert.pub` (sshd's `HostCertificate`) in `certificate_dir`.
    #[serde(default)]
    pub host_keys: Vec<PathBuf>,
    /// Where host certificates go (default: next to their keys). The
    /// packaged unit lets the agent write /etc/ssh/zeroth only.
    pub certificate_dir: Option<PathBuf>,
    /// Host names asked for (default: every one the role allows).
    #[serde(default)]
    pub host_principals: Vec<String>,
    /// File for sshd's `TrustedUserCAKeys` (the user CA keys, one per line).
    pub trusted_user_ca_keys: Option<PathBuf>,
    /// File for sshd's `RevokedKeys` (the KRL).
    pub revoked_keys: Option<PathBuf>,
    /// How often the CA keys and the KRL are fetched again (default "60s").
    #[serde(default = "default_ssh_refresh", with = "humantime_serde_compat")]
    pub refresh: Duration,
}

impl Default for AgentSshConfig {
    fn default() -> Self {
        Self {
            host_role: None,
            host_keys: Vec::new(),
            certificate_dir: None,
            host_principals: Vec::new(),
            trusted_user_ca_keys: None,
            revoked_keys: None,
            refresh: default_ssh_refresh(),
        }
    }
}

impl AgentSshConfig {
    /// Where the certificate of `host_key` (a `.pub` file) is kept.
    pub fn certificate_path(&self, host_key: &Path) -> PathBuf {
        let next_to_key = certificate_path(host_key);
        match (&self.certificate_dir, next_to_key.file_name()) {
            (Some(dir), Some(name)) => dir.join(name),
            _ => next_to_key,
        }
    }

    /// Whether anything is asked of the agent.
    pub fn is_enabled(&self) -> bool {
        !self.host_keys.is_empty()
            || self.trusted_user_ca_keys.is_some()
            || self.revoked_keys.is_some()
    }
}

fn default_ssh_refresh() -> Duration {
    Duration::from_secs(60)
}

fn default_retry_max() -> Duration {
    Duration::from_secs(60)
}

fn default_tcti() -> String {
    "device:/dev/tpmrm0".into()
}

fn default_agent_state() -> PathBuf {
    PathBuf::from("/var/lib/zeroth-agent")
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        let cfg: Self = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: p.clone(),
            message: e.to_string(),
        })?;
        let urls: Vec<&str> = cfg.server.split(',').map(str::trim).collect();
        if let Some(bad) = urls.iter().find(|u| !u.starts_with("https://")) {
            return Err(ConfigError::Invalid {
                path: p,
                key: "server".into(),
                problem: format!("names {bad:?}; each server must be an https:// URL"),
            });
        }
        if !cfg.ssh.host_keys.is_empty() && cfg.ssh.host_role.is_none() {
            return Err(ConfigError::Invalid {
                path: p,
                key: "ssh.host_role".into(),
                problem: "is required to certify ssh.host_keys".into(),
            });
        }
        if cfg.ssh.is_enabled() && cfg.token_file.is_some() {
            return Err(ConfigError::Invalid {
                path: p,
                key: "ssh".into(),
                problem:
                    "needs a TPM host (`group`): SSH certificates are bound to the TPM-held key"
                        .into(),
            });
        }
        if let Some(bad) = cfg
            .workload_api
            .iter()
            .flat_map(|w| w.roles.keys())
            .find(|k| k.parse::<u32>().is_err())
        {
            return Err(ConfigError::Invalid {
                path: p,
                key: "workload_api.roles".into(),
                problem: format!(
                    "has the key {bad:?}; keys are numeric uids, e.g. 1002 = [\"app-ro\"]"
                ),
            });
        }
        if let Some(bad) = cfg
            .workload_api
            .iter()
            .flat_map(|w| w.units.keys())
            .find(|k| !k.ends_with(".service") || k.contains('/') || k.len() <= ".service".len())
        {
            return Err(ConfigError::Invalid {
                path: p,
                key: "workload_api.units".into(),
                problem: format!(
                    "has the key {bad:?}; keys are systemd services, e.g. \"shop.service\" = [\"shop-rw\"]"
                ),
            });
        }
        for proxy in &cfg.proxies {
            if let Some((key, problem)) = proxy.problem(cfg.workload_api.is_some()) {
                return Err(ConfigError::Invalid {
                    path: p,
                    key: key.into(),
                    problem,
                });
            }
        }
        let mut sockets: Vec<_> = cfg.proxies.iter().map(ProxyConfig::socket_path).collect();
        sockets.sort();
        if let Some(w) = sockets.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError::Invalid {
                path: p,
                key: "proxy.listen".into(),
                problem: format!("{} is used by two proxies", w[0].display()),
            });
        }
        if cfg.ssh.refresh < Duration::from_secs(1) {
            return Err(ConfigError::Invalid {
                path: p,
                key: "ssh.refresh".into(),
                problem: "must be at least 1s".into(),
            });
        }
        if cfg.group.is_some() == cfg.token_file.is_some() {
            return Err(ConfigError::Invalid {
                path: p,
                key: "group".into(),
                problem: "or token_file is required, not both: `group` for a host with a TPM, `token_file` for one without".into(),
            });
        }
        Ok(cfg)
    }
}

/// `<key>-cert.pub` for `<key>.pub`, as sshd and ssh name certificates.
pub fn certificate_path(host_public_key: &Path) -> PathBuf {
    let s = host_public_key.to_string_lossy();
    let stem = s.strip_suffix(".pub").unwrap_or(&s);
    PathBuf::from(format!("{stem}-cert.pub"))
}

/// A string, or a list of strings kept joined by commas.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s,
        OneOrMany::Many(v) => v.join(","),
    })
}
