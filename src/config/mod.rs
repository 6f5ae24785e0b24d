//! Typed configuration, validated at load with messages that name the key
//! and the fix: `server.toml` (`server.rs`) and `agent.toml` (`agent.rs`,
//! its `[[proxy]]` entries in `proxy.rs`).

mod agent;
mod engines;
mod proxy;
mod roles;
mod server;
#[cfg(test)]
mod tests;

pub use agent::{
    certificate_path, AgentConfig, AgentSshConfig, WorkloadApiConfig, DEFAULT_WORKLOAD_SOCKET,
};
pub use engines::{check_template, Access, CaAlgorithm, TemplateError, TEMPLATE_VARIABLES};
pub use proxy::{ProxyConfig, ProxyEngine};
pub use roles::{DbRoleConfig, SshCertKind, SshRoleConfig};
pub use server::{
    EnrolmentLimits, GroupConfig, HsmConfig, ServerConfig, StoreConfig, StoreSecretError,
};

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

/// A role name that could not be one segment of a URL.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} must be 1 to 64 lowercase letters, digits, '_' or '-'")]
pub struct BadRoleName(String);

/// A role name is one segment of the URLs that ask for it.
pub(crate) fn check_role_name(name: &str) -> Result<(), BadRoleName> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return Err(BadRoleName(name.to_owned()));
    }
    Ok(())
}

pub(crate) mod humantime_serde_compat {
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
