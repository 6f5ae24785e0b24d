//! `[[ssh_role]]` and `[[db_role]]` of `server.toml`: what each credential
//! role issues, for how long, and who may ask.

use std::time::Duration;

use serde::Deserialize;

use super::humantime_serde_compat;

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
    /// A connection made with `zeroth db connection create`.
    pub connection: String,
    /// Built-in statements: "read-only" or "read-write" (ignored when
    /// `creation_statements` is given).
    #[serde(default = "default_access")]
    pub access: super::Access,
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

fn default_access() -> super::Access {
    super::Access::ReadOnly
}

fn default_db_ttl() -> Duration {
    Duration::from_secs(600)
}

fn default_db_max_ttl() -> Duration {
    Duration::from_secs(3600)
}

/// A role's problem: the key at fault and what is wrong with it.
type Problem = (&'static str, String);

impl DbRoleConfig {
    /// What is wrong with this role, given the configured node `groups`.
    pub(super) fn check(&self, groups: &[&str]) -> Result<(), Problem> {
        for (field, list) in [
            ("creation_statements", &self.creation_statements),
            ("revocation_statements", &self.revocation_statements),
            ("renewal_statements", &self.renewal_statements),
        ] {
            for t in list {
                super::check_template(t).map_err(|e| (field, e.to_string()))?;
            }
        }
        if self.default_ttl < Duration::from_secs(10) || self.default_ttl > self.max_ttl {
            return Err((
                "default_ttl",
                "must be at least 10s and at most max_ttl".into(),
            ));
        }
        if let Some(g) = self
            .allow_groups
            .iter()
            .find(|g| !groups.contains(&g.as_str()))
        {
            return Err((
                "allow_groups",
                format!("names {g:?}, which is not a [[group]]"),
            ));
        }
        if self.allow_groups.is_empty() && self.allow_spiffe.is_empty() {
            return Err((
                "allow_groups",
                "or allow_spiffe is required: without either nobody may use the role".into(),
            ));
        }
        Ok(())
    }
}

impl SshRoleConfig {
    /// What is wrong with this role.
    pub(super) fn check(&self) -> Result<(), Problem> {
        if self.cert_type == SshCertKind::Host
            && (self.force_command.is_some() || self.source_address.is_some())
        {
            return Err((
                "cert_type",
                "\"host\" certificates carry no force_command or source_address".into(),
            ));
        }
        if self.principals.is_empty() {
            return Err(("principals", "must list at least one principal".into()));
        }
        if self.default_ttl < Duration::from_secs(10) || self.default_ttl > self.max_ttl {
            return Err((
                "default_ttl",
                "must be at least 10s and at most max_ttl".into(),
            ));
        }
        if self.allow_groups.is_empty() && self.allow_spiffe.is_empty() {
            return Err((
                "allow_groups",
                "or allow_spiffe is required: without either nobody may use the role".into(),
            ));
        }
        Ok(())
    }
}
