//! `server.toml`: the API, the HSM, enrolment groups, SSH and database roles.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::roles::{DbRoleConfig, SshRoleConfig};
use super::{check_role_name, humantime_serde_compat, ConfigError};
use crate::identity::spiffe::check_trust_domain;

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
    /// How long records of what has ended (revoked leases, expired SSH
    /// certificate and SVID records) stay in the store's tables before the
    /// sweep removes them, each batch with an audit event (default "3d").
    #[serde(default = "default_retention", with = "humantime_serde_compat")]
    pub retention: Duration,
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
    pub ssh_ca_algorithm: super::CaAlgorithm,
    /// What unauthenticated enrolment may make the server spend.
    #[serde(default)]
    pub enrolment_limits: EnrolmentLimits,
    /// `[store]`: a PostgreSQL database shared by several servers. Without
    /// it the store is SQLite in `state_dir`.
    pub store: Option<StoreConfig>,
}

/// Why the store's password or CA could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StoreSecretError {
    #[error("the store's password: {0}")]
    Password(String),
    #[error("the store's CA file {path}: {source}")]
    Ca {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `[store]`: where several servers keep their shared state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// libpq-style URL, several hosts allowed:
    /// `postgres://zeroth@db1:5432,db2:5432/zeroth?target_session_attrs=read-write`.
    /// Never with a password in it.
    pub url: String,
    /// A file (readable by zeroth only) holding the database password, or…
    pub password_file: Option<PathBuf>,
    /// …the name of a systemd credential holding it.
    pub password_credential: Option<String>,
    /// PEM CA the database servers' certificates must chain to; with it
    /// the connection is TLS, verified as libpq's verify-full.
    pub ca_file: Option<PathBuf>,
}

impl StoreConfig {
    pub fn problem(&self) -> Option<(&'static str, String)> {
        let cfg: tokio_postgres::Config = match self.url.parse() {
            Ok(c) => c,
            Err(e) => return Some(("store.url", format!("is not a PostgreSQL URL: {e}"))),
        };
        if !(self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")) {
            return Some(("store.url", "must start with postgres://".into()));
        }
        if cfg.get_password().is_some() {
            return Some((
                "store.url",
                "must not hold a password: use store.password_file or store.password_credential"
                    .into(),
            ));
        }
        if cfg.get_user().is_none() {
            return Some((
                "store.url",
                "must name the user (postgres://USER@host/db)".into(),
            ));
        }
        if self.password_file.is_some() && self.password_credential.is_some() {
            return Some((
                "store.password_file",
                "and store.password_credential are exclusive: keep one".into(),
            ));
        }
        None
    }

    /// The database to connect to, with its password and CA read.
    pub fn target(&self) -> Result<crate::store::sql::PgTarget, StoreSecretError> {
        let source = match (&self.password_file, &self.password_credential) {
            (Some(f), _) => Some(zeroth_hsm::PinSource::File(f.clone())),
            (None, Some(c)) => Some(zeroth_hsm::PinSource::SystemdCredential(c.clone())),
            (None, None) => None,
        };
        let password = source
            .map(|s| {
                s.read().map_err(|e| {
                    StoreSecretError::Password(e.to_string().replace("PIN", "password"))
                })
            })
            .transpose()?;
        let ca_pem = self
            .ca_file
            .as_ref()
            .map(|f| {
                std::fs::read(f).map_err(|source| StoreSecretError::Ca {
                    path: f.clone(),
                    source,
                })
            })
            .transpose()?;
        Ok(crate::store::sql::PgTarget {
            url: self.url.clone(),
            password,
            ca_pem,
        })
    }
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

fn default_pcrs() -> Vec<u8> {
    (0..8).collect()
}

fn default_checkpoint_events() -> u32 {
    1000
}

fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(60)
}

fn default_retention() -> Duration {
    Duration::from_secs(3 * 24 * 3600)
}

fn default_jwt_max_ttl() -> Duration {
    Duration::from_secs(300)
}

fn default_svid_ttl() -> Duration {
    Duration::from_secs(3600)
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
        if let Some((key, problem)) = self.store.as_ref().and_then(StoreConfig::problem) {
            return Err(invalid(key, problem));
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
            check_role_name(&r.name).map_err(|e| invalid(&key("name"), e.to_string()))?;
            if !roles.insert(&r.name) {
                return Err(invalid(&key("name"), format!("{:?} is used twice", r.name)));
            }
            let groups: Vec<&str> = self.groups.iter().map(|g| g.name.as_str()).collect();
            r.check(&groups)
                .map_err(|(field, problem)| invalid(&key(field), problem))?;
        }
        let mut ssh_roles = std::collections::BTreeSet::new();
        for (i, r) in self.ssh_roles.iter().enumerate() {
            let key = |k: &str| format!("ssh_role[{i}].{k}");
            check_role_name(&r.name).map_err(|e| invalid(&key("name"), e.to_string()))?;
            if !ssh_roles.insert(&r.name) {
                return Err(invalid(&key("name"), format!("{:?} is used twice", r.name)));
            }
            r.check()
                .map_err(|(field, problem)| invalid(&key(field), problem))?;
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

    /// Where the store is: `[store]`'s PostgreSQL database, or SQLite in
    /// the state directory.
    pub fn store_location(&self) -> Result<crate::store::Location, StoreSecretError> {
        match &self.store {
            Some(s) => s.target().map(crate::store::Location::Postgres),
            None => Ok(crate::store::Location::File(
                self.state_dir.join("zeroth.db"),
            )),
        }
    }

    pub fn group(&self, name: &str) -> Option<&GroupConfig> {
        self.groups.iter().find(|g| g.name == name)
    }
}
