//! Typed configuration, validated at load with messages that name the key
//! and the fix.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod proxy;
pub use proxy::{ProxyConfig, ProxyEngine};

use crate::identity::spiffe::check_trust_domain;

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: `{key}` {problem}")]
    Invalid {
        path: String,
        key: String,
        problem: String,
    },
}

/// `/etc/zeroth/server.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the HTTPS API listens on, e.g. "0.0.0.0:8443".
    pub listen: SocketAddr,
    /// The SPIFFE trust domain, e.g. "example.org".
    pub trust_domain: String,
    /// Directory for the database (zeroth.db); 0700, owned by zeroth.
    pub state_dir: PathBuf,
    /// DNS names and IP addresses the server's TLS certificate carries.
    pub tls_names: Vec<String>,
    pub hsm: HsmConfig,
    /// The operators' Unix socket (default: `<state_dir>/admin.sock`).
    pub admin_socket: Option<PathBuf>,
    /// A Unix group whose members may use the admin socket besides root.
    pub admin_group: Option<String>,
    /// The `iss` of JWT-SVIDs and the base of OIDC discovery (default:
    /// `https://<first tls_names entry>:<listening port>`).
    pub jwt_issuer: Option<String>,
    /// Longest lifetime a JWT-SVID may ask for (default "5m").
    #[serde(default = "default_jwt_max_ttl", with = "humantime_serde_compat")]
    pub jwt_max_ttl: Duration,
    /// Sign an audit checkpoint once this many events are unsigned…
    #[serde(default = "default_checkpoint_events")]
    pub audit_checkpoint_events: u32,
    /// …or at this interval while any event is unsigned (default "60s").
    #[serde(
        default = "default_checkpoint_interval",
        with = "humantime_serde_compat"
    )]
    pub audit_checkpoint_interval: Duration,
    /// Node groups: each holds the enrolment policy of its nodes.
    #[serde(rename = "group")]
    pub groups: Vec<GroupConfig>,
    /// Roles for dynamic database users.
    #[serde(rename = "db_role", default)]
    pub db_roles: Vec<DbRoleConfig>,
    /// Roles for SSH user and host certificates.
    #[serde(rename = "ssh_role", default)]
    pub ssh_roles: Vec<SshRoleConfig>,
    /// The SSH CAs' key algorithm: "ed25519" (default) or "ecdsa-p256".
    #[serde(default)]
    pub ssh_ca_algorithm: crate::creds::ssh::ca::CaAlgorithm,
    /// What unauthenticated enrolment may make the server spend.
    #[serde(default)]
    pub enrolment_limits: EnrolmentLimits,
}

/// `[enrolment_limits]`: `/v1/enroll/begin` needs no credential and costs
/// an RSA-OAEP encryption and a synced write, so callers are metered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrolmentLimits {
    /// Begins per second one source address may make (in bursts of twice
    /// as many). Default 10.
    pub per_address: f64,
    /// Begins per minute one TPM (EK) may make (in bursts of five).
    /// Default 12.
    pub per_ek_per_minute: f64,
    /// Challenges one TPM may hold open at once. Default 3.
    pub open_per_ek: u32,
}

impl Default for EnrolmentLimits {
    fn default() -> Self {
        Self {
            per_address: 10.0,
            per_ek_per_minute: 12.0,
            open_per_ek: 3,
        }
    }
}

/// Whether an SSH role certifies users (logins) or hosts (sshd host keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SshCertKind {
    #[default]
    User,
    Host,
}

/// `[[ssh_role]]`: which principals a certificate may carry, for how long,
/// with which options, and who may ask.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshRoleConfig {
    pub name: String,
    /// "user" (default) or "host": host certificates are signed by the host
    /// CA, carry host names as principals and no options or extensions.
    #[serde(default)]
    pub cert_type: SshCertKind,
    /// Principals (login names, or host names for a host role) certificates
    /// may carry; `{{node}}` stands for the caller's node id.
    pub principals: Vec<String>,
    #[serde(default = "default_ssh_ttl", with = "humantime_serde_compat")]
    pub default_ttl: Duration,
    #[serde(default = "default_ssh_max_ttl", with = "humantime_serde_compat")]
    pub max_ttl: Duration,
    /// Validity starts this long before issuance, for clock skew.
    #[serde(default = "default_ssh_backdate", with = "humantime_serde_compat")]
    pub backdate: Duration,
    /// Certificate extensions (default: permit-pty).
    #[serde(default = "default_ssh_extensions")]
    pub extensions: Vec<String>,
    /// `force-command` critical option.
    pub force_command: Option<String>,
    /// `source-address` critical option; default: the caller's address.
    pub source_address: Option<String>,
    #[serde(default)]
    pub allow_groups: Vec<String>,
    #[serde(default)]
    pub allow_spiffe: Vec<String>,
}

fn default_ssh_ttl() -> Duration {
    Duration::from_secs(300)
}

fn default_ssh_max_ttl() -> Duration {
    Duration::from_secs(3600)
}

fn default_ssh_backdate() -> Duration {
    Duration::from_secs(30)
}

fn default_ssh_extensions() -> Vec<String> {
    vec!["permit-pty".into()]
}

/// `[[db_role]]`: what users of one role may do on which connection, for
/// how long, and who may ask for them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbRoleConfig {
    pub name: String,
    /// A connection added with `zeroth db connection add`.
    pub connection: String,
    /// Built-in statements: "read-only" or "read-write" (ignored when
    /// `creation_statements` is given).
    #[serde(default = "default_access")]
    pub access: crate::creds::db::role::Access,
    /// The PostgreSQL schema, or the MariaDB database, the role grants on.
    pub schema: String,
    /// Templates replacing the built-in creation statements.
    #[serde(default)]
    pub creation_statements: Vec<String>,
    /// Templates run at revocation, before the user is locked, its sessions
    /// ended and it is dropped.
    #[serde(default)]
    pub revocation_statements: Vec<String>,
    /// Templates run at renewal, besides moving the database's own expiry.
    #[serde(default)]
    pub renewal_statements: Vec<String>,
    #[serde(default = "default_db_ttl", with = "humantime_serde_compat")]
    pub default_ttl: Duration,
    #[serde(default = "default_db_max_ttl", with = "humantime_serde_compat")]
    pub max_ttl: Duration,
    /// Node groups whose nodes may ask.
    #[serde(default)]
    pub allow_groups: Vec<String>,
    /// SPIFFE IDs that may ask; a trailing `*` matches any suffix.
    #[serde(default)]
    pub allow_spiffe: Vec<String>,
}

fn default_access() -> crate::creds::db::role::Access {
    crate::creds::db::role::Access::ReadOnly
}

fn default_db_ttl() -> Duration {
    Duration::from_secs(600)
}

fn default_db_max_ttl() -> Duration {
    Duration::from_secs(3600)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmConfig {
    pub module: PathBuf,
    pub token_label: String,
    /// A file holding the user PIN, or…
    pub pin_file: Option<PathBuf>,
    /// …the name of a systemd credential holding it.
    pub pin_credential: Option<String>,
}

impl HsmConfig {
    /// The key store's configuration. Validation guarantees exactly one PIN source.
    pub fn pkcs11(&self) -> zeroth_hsm::Pkcs11Config {
        let pin = match (&self.pin_file, &self.pin_credential) {
            (Some(f), _) => zeroth_hsm::PinSource::File(f.clone()),
            (None, Some(c)) => zeroth_hsm::PinSource::SystemdCredential(c.clone()),
            // Unreachable after `ServerConfig::validate`; an empty path fails loudly on read.
            (None, None) => zeroth_hsm::PinSource::File(PathBuf::new()),
        };
        zeroth_hsm::Pkcs11Config {
            module: self.module.clone(),
            token: zeroth_hsm::TokenSelector::Label(self.token_label.clone()),
            pin,
            max_sessions: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub name: String,
    /// Directory of trusted TPM manufacturer root certificates (PEM).
    pub ek_roots: Option<PathBuf>,
    /// Extra intermediate certificates (PEM file).
    pub ek_intermediates: Option<PathBuf>,
    /// SHA-256 (hex) of EK public areas admitted without a certificate.
    #[serde(default)]
    pub ek_allow: Vec<String>,
    /// SHA-256 PCRs every quote must cover.
    #[serde(default = "default_pcrs")]
    pub pcrs: Vec<u8>,
    /// Expected values, "sha256:<index>" = "<hex>".
    #[serde(default)]
    pub pcr_policy: BTreeMap<String, String>,
    /// Policy over the node's boot event log instead of raw PCR values:
    /// "sha256:<index>" = ["<hex digest>", …]. Every event measured into
    /// that PCR (separators aside) must have one of the listed digests (the
    /// boot loaders and kernels allowed), and the log must replay to the
    /// quoted value. Nodes then send their TCG event log.
    #[serde(default)]
    pub event_log_allow: BTreeMap<String, Vec<String>>,
    /// Approve nodes that pass every check, or leave them pending for an operator.
    #[serde(default)]
    pub auto_approve: bool,
    /// Lifetime of node X.509-SVIDs, e.g. "1h".
    #[serde(default = "default_svid_ttl", with = "humantime_serde_compat")]
    pub svid_ttl: Duration,
}

/// A role name is one segment of the URLs that ask for it.
fn check_role_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return Err(format!(
            "{name:?} must be 1 to 64 lowercase letters, digits, '_' or '-'"
        ));
    }
    Ok(())
}

fn default_pcrs() -> Vec<u8> {
    (0..8).collect()
}

fn default_checkpoint_events() -> u32 {
    1000
}

fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(60)
}

fn default_jwt_max_ttl() -> Duration {
    Duration::from_secs(300)
}

fn default_svid_ttl() -> Duration {
    Duration::from_secs(3600)
}

mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "{s:?} is not a duration like \"10m\" or \"1h\": {e}"
            ))
        })
    }
}

impl ServerConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            problem,
        };
        check_trust_domain(&self.trust_domain)
            .map_err(|e| invalid("trust_domain", format!("is invalid: {}", e.reason)))?;
        if self.tls_names.is_empty() {
            return Err(invalid(
                "tls_names",
                "must list at least one name agents use to reach the server".into(),
            ));
        }
        let l = &self.enrolment_limits;
        if !(l.per_address > 0.0 && l.per_ek_per_minute > 0.0 && l.open_per_ek > 0) {
            return Err(invalid(
                "enrolment_limits",
                "needs per_address, per_ek_per_minute and open_per_ek above zero".into(),
            ));
        }
        if self.audit_checkpoint_events == 0 {
            return Err(invalid(
                "audit_checkpoint_events",
                "must be at least 1".into(),
            ));
        }
        if self.audit_checkpoint_interval < Duration::from_secs(1) {
            return Err(invalid(
                "audit_checkpoint_interval",
                "must be at least 1s".into(),
            ));
        }
        if let Some(iss) = &self.jwt_issuer {
            if !iss.starts_with("https://") || iss.ends_with('/') {
                return Err(invalid(
                    "jwt_issuer",
                    format!("is {iss:?}; it must be an https:// URL without a trailing slash"),
                ));
            }
        }
        match (&self.hsm.pin_file, &self.hsm.pin_credential) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "hsm.pin_file",
                    "and hsm.pin_credential are exclusive: keep one".into(),
                ))
            }
            (None, None) => {
                return Err(invalid(
                    "hsm.pin_file",
                    "or hsm.pin_credential is required (never put the PIN itself in this file)"
                        .into(),
                ))
            }
            _ => {}
        }
        if self.groups.is_empty() {
            return Err(invalid(
                "group",
                "needs at least one [[group]] table".into(),
            ));
        }
        let mut roles = std::collections::BTreeSet::new();
        for (i, r) in self.db_roles.iter().enumerate() {
            let key = |k: &str| format!("db_role[{i}].{k}");
            check_role_name(&r.name).map_err(|e| invalid(&key("name"), e))?;
            if !roles.insert(&r.name) {
                return Err(invalid(&key("name"), format!("{:?} is used twice", r.name)));
            }
            for (field, list) in [
                ("creation_statements", &r.creation_statements),
                ("revocation_statements", &r.revocation_statements),
                ("renewal_statements", &r.renewal_statements),
            ] {
                for t in list {
                    crate::creds::db::template::check(t).map_err(|e| invalid(&key(field), e))?;
                }
            }
            if r.default_ttl < Duration::from_secs(10) || r.default_ttl > r.max_ttl {
                return Err(invalid(
                    &key("default_ttl"),
                    "must be at least 10s and at most max_ttl".into(),
                ));
            }
            if let Some(g) = r
                .allow_groups
                .iter()
                .find(|g| !self.groups.iter().any(|x| &x.name == *g))
            {
                return Err(invalid(
                    &key("allow_groups"),
                    format!("names {g:?}, which is not a [[group]]"),
                ));
            }
            if r.allow_groups.is_empty() && r.allow_spiffe.is_empty() {
                return Err(invalid(
                    &key("allow_groups"),
                    "or allow_spiffe is required: without either nobody may use the role".into(),
                ));
            }
        }
        let mut ssh_roles = std::collections::BTreeSet::new();
        for (i, r) in self.ssh_roles.iter().enumerate() {
            let key = |k: &str| format!("ssh_role[{i}].{k}");
            check_role_name(&r.name).map_err(|e| invalid(&key("name"), e))?;
            if !ssh_roles.insert(&r.name) {
                return Err(invalid(&key("name"), format!("{:?} is used twice", r.name)));
            }
            if r.cert_type == SshCertKind::Host
                && (r.force_command.is_some() || r.source_address.is_some())
            {
                return Err(invalid(
                    &key("cert_type"),
                    "\"host\" certificates carry no force_command or source_address".into(),
                ));
            }
            if r.principals.is_empty() {
                return Err(invalid(
                    &key("principals"),
                    "must list at least one principal".into(),
                ));
            }
            if r.default_ttl < Duration::from_secs(10) || r.default_ttl > r.max_ttl {
                return Err(invalid(
                    &key("default_ttl"),
                    "must be at least 10s and at most max_ttl".into(),
                ));
            }
            if r.allow_groups.is_empty() && r.allow_spiffe.is_empty() {
                return Err(invalid(
                    &key("allow_groups"),
                    "or allow_spiffe is required: without either nobody may use the role".into(),
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, g) in self.groups.iter().enumerate() {
            let key = |k: &str| format!("group[{i}].{k}");
            if !seen.insert(&g.name) {
                return Err(invalid(&key("name"), format!("{:?} is used twice", g.name)));
            }
            if g.ek_roots.is_none() && g.ek_allow.is_empty() {
                return Err(invalid(
                    &key("ek_roots"),
                    "or ek_allow is required: without either no TPM can be trusted".into(),
                ));
            }
            if g.pcrs.iter().any(|p| *p > 23) {
                return Err(invalid(&key("pcrs"), "lists a PCR above 23".into()));
            }
            for (k, v) in &g.pcr_policy {
                let idx = k.strip_prefix("sha256:").and_then(|i| i.parse::<u8>().ok());
                match idx {
                    Some(i) if g.pcrs.contains(&i) => {}
                    Some(i) => {
                        return Err(invalid(
                            &key("pcr_policy"),
                            format!("sets PCR {i}, which `pcrs` does not quote"),
                        ))
                    }
                    None => {
                        return Err(invalid(
                            &key("pcr_policy"),
                            format!("key {k:?} is not \"sha256:<index>\""),
                        ))
                    }
                }
                if v.len() != 64 || !v.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(invalid(
                        &key("pcr_policy"),
                        format!("value for {k} is not 64 hex digits"),
                    ));
                }
            }
            for (k, digests) in &g.event_log_allow {
                let idx = k.strip_prefix("sha256:").and_then(|i| i.parse::<u8>().ok());
                match idx {
                    Some(i) if g.pcrs.contains(&i) => {}
                    _ => {
                        return Err(invalid(
                            &key("event_log_allow"),
                            format!("key {k:?} is not \"sha256:<index>\" of a PCR `pcrs` quotes"),
                        ))
                    }
                }
                if let Some(d) = digests
                    .iter()
                    .find(|d| d.len() != 64 || !d.chars().all(|c| c.is_ascii_hexdigit()))
                {
                    return Err(invalid(
                        &key("event_log_allow"),
                        format!("{k}: {d:?} is not 64 hex digits"),
                    ));
                }
            }
            if g.svid_ttl < Duration::from_secs(10) {
                return Err(invalid(&key("svid_ttl"), "must be at least 10s".into()));
            }
        }
        Ok(())
    }

    pub fn admin_socket(&self) -> PathBuf {
        self.admin_socket
            .clone()
            .unwrap_or_else(|| self.state_dir.join("admin.sock"))
    }

    pub fn group(&self, name: &str) -> Option<&GroupConfig> {
        self.groups.iter().find(|g| g.name == name)
    }
}

/// `/etc/zeroth/agent.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The zeroth server, e.g. "https://zeroth.example.org:8443".
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
}

fn default_workload_socket() -> PathBuf {
    PathBuf::from("/run/zeroth-agent/api.sock")
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
        let next_to_key = crate::agent::ssh_host::certificate_path(host_key);
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
        if !cfg.server.starts_with("https://") {
            return Err(ConfigError::Invalid {
                path: p,
                key: "server".into(),
                problem: format!("is {:?}; it must be an https:// URL", cfg.server),
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
            if let Some((key, problem)) = proxy.problem() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packaged_example_configurations_are_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc");
        let server = std::fs::read_to_string(root.join("server.toml")).unwrap();
        let cfg = ServerConfig::parse(&server, "server.toml").unwrap();
        assert_eq!(cfg.hsm.pin_credential.as_deref(), Some("hsm-pin"));
        assert!(
            cfg.hsm.pin_file.is_none(),
            "the PIN comes from a systemd credential"
        );
        let agent = AgentConfig::load(&root.join("agent.toml")).unwrap();
        assert_eq!(agent.tcti, "device:/dev/tpmrm0");
        // The [ssh] lines, once uncommented, are valid too; so is the
        // token host's variant.
        let text = std::fs::read_to_string(root.join("agent.toml")).unwrap();
        let (tpm_host, token_host) = text.split_once("# A host without a TPM").unwrap();
        let uncomment = |t: &str| -> String {
            t.lines()
                .map(|l| match l.strip_prefix("# ") {
                    Some(rest) if rest.starts_with('[') || rest.contains(" = ") => rest,
                    _ => l,
                })
                .map(|l| format!("{l}\n"))
                .collect()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        let token = tpm_host
            .lines()
            .filter(|l| !l.starts_with("group"))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            + &uncomment(&format!("#{token_host}"));
        std::fs::write(&path, token).unwrap();
        let agent = AgentConfig::load(&path).unwrap();
        let api = agent.workload_api.unwrap();
        assert_eq!(api.socket, Path::new("/run/zeroth-agent/api.sock"));
        assert_eq!(api.allow_uids, [1001]);
        assert_eq!(api.roles["1002"], ["app-ro"]);
        std::fs::write(&path, uncomment(tpm_host)).unwrap();
        let agent = AgentConfig::load(&path).unwrap();
        assert_eq!(
            agent
                .ssh
                .certificate_path(Path::new("/etc/ssh/ssh_host_ed25519_key.pub")),
            Path::new("/etc/ssh/zeroth/ssh_host_ed25519_key-cert.pub")
        );
    }

    #[test]
    fn workload_api_roles_are_keyed_by_numeric_uids_and_units_by_service() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "server = \"https://z:8443\"\nca_bundle = \"/ca.pem\"\ngroup = \"edge\"\n[workload_api.roles]\nalice = [\"app-ro\"]\n",
        )
        .unwrap();
        let e = AgentConfig::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("workload_api.roles") && e.contains("numeric uids"),
            "{e}"
        );
        let head = "server = \"https://z:8443\"\nca_bundle = \"/ca.pem\"\ngroup = \"edge\"\n[workload_api.units]\n";
        std::fs::write(&path, format!("{head}\"shop\" = [\"app-ro\"]\n")).unwrap();
        let e = AgentConfig::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("workload_api.units") && e.contains("systemd services"),
            "{e}"
        );
        std::fs::write(&path, format!("{head}\"shop.service\" = [\"app-ro\"]\n")).unwrap();
        let c = AgentConfig::load(&path).unwrap();
        assert_eq!(c.workload_api.unwrap().units["shop.service"], ["app-ro"]);
    }

    const GOOD: &str = r#"
listen = "127.0.0.1:8443"
trust_domain = "example.org"
state_dir = "/var/lib/zeroth"
tls_names = ["localhost", "127.0.0.1"]

[hsm]
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "zeroth"
pin_file = "/etc/zeroth/hsm.pin"

[[group]]
name = "edge"
ek_roots = "/etc/zeroth/ek-roots"
auto_approve = true
svid_ttl = "30m"
"#;

    #[test]
    fn a_good_config_loads_with_defaults() {
        let c = ServerConfig::parse(GOOD, "server.toml").unwrap();
        let g = c.group("edge").unwrap();
        assert_eq!(g.pcrs, (0..8).collect::<Vec<_>>());
        assert_eq!(g.svid_ttl, Duration::from_secs(1800));
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let cases = [
            (GOOD.replace("example.org", "Example.ORG"), "trust_domain"),
            (
                GOOD.replace("pin_file = \"/etc/zeroth/hsm.pin\"", ""),
                "hsm.pin_file",
            ),
            (
                GOOD.replace("ek_roots = \"/etc/zeroth/ek-roots\"", ""),
                "group[0].ek_roots",
            ),
            (GOOD.replace("\"30m\"", "\"soon\""), "not a duration"),
            (GOOD.replace("listen =", "lisen ="), "unknown field `lisen`"),
            (
                format!(
                    "{GOOD}\n[group.pcr_policy]\n\"sha256:9\" = \"{}\"\n",
                    "00".repeat(32)
                ),
                "does not quote",
            ),
            (
                format!("{GOOD}\n[[ssh_role]]\nname = \"ops/admin\"\nprincipals = [\"ops\"]\nallow_groups = [\"edge\"]\n"),
                "ssh_role[0].name",
            ),
            (
                format!("{GOOD}\n[[ssh_role]]\nname = \"ops\"\nprincipals = [\"ops\"]\nallow_groups = [\"edge\"]\n\n[[ssh_role]]\nname = \"ops\"\nprincipals = [\"root\"]\nallow_groups = [\"edge\"]\n"),
                "\"ops\" is used twice",
            ),
        ];
        for (text, want) in cases {
            let err = ServerConfig::parse(&text, "server.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "expected {want:?} in: {err}");
        }
    }

    #[test]
    fn an_agent_has_a_group_or_a_token_file_not_both() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        let base = "server = \"https://z:8443\"\nca_bundle = \"/etc/zeroth/ca.pem\"\n";
        for (extra, ok) in [
            ("group = \"edge\"", true),
            ("token_file = \"/run/credentials/t\"", true),
            ("", false),
            ("group = \"edge\"\ntoken_file = \"/t\"", false),
        ] {
            std::fs::write(&path, format!("{base}{extra}\n")).unwrap();
            let got = AgentConfig::load(&path);
            assert_eq!(got.is_ok(), ok, "{extra}: {got:?}");
            if let Err(e) = got {
                assert!(e.to_string().contains("token_file"), "{e}");
            }
        }
    }
}
