//! `[[proxy]]` in agent.toml: local sockets through which programs reach a
//! database with no password; the agent makes a user for each connection.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The wire protocol a proxy speaks (its role's connection must match).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyEngine {
    #[serde(alias = "postgresql")]
    Postgres,
    #[serde(alias = "mysql")]
    Mariadb,
}

impl ProxyEngine {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Mariadb => "mariadb",
        }
    }
}

/// One proxy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Names the proxy in refusals, logs and use events.
    pub name: String,
    /// The server's `[[db_role]]` each connection gets a user of.
    pub role: String,
    pub engine: ProxyEngine,
    /// PostgreSQL: the directory holding the socket `.s.PGSQL.<port>`
    /// (what libpq's `host=<dir> port=<port>` opens). MariaDB: the socket
    /// itself (`mariadb --socket=<path>`).
    pub listen: PathBuf,
    /// PostgreSQL: the port in the socket's name (default 5432).
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// Also listen on this loopback address. Callers are known by uid only
    /// there (read from /proc/net/tcp): their systemd unit cannot be told.
    pub tcp: Option<SocketAddr>,
    /// Users whose programs may connect.
    #[serde(default)]
    pub allow_uids: Vec<u32>,
    /// Systemd services whose programs may connect, whatever their uid
    /// (Unix socket only).
    #[serde(default)]
    pub allow_units: Vec<String>,
    /// Lease asked for each connection's user (default: the role's TTL);
    /// it is renewed while the connection stays open.
    #[serde(default, with = "optional_duration")]
    pub ttl: Option<Duration>,
}

fn default_pg_port() -> u16 {
    5432
}

impl ProxyConfig {
    /// The Unix socket the proxy binds.
    pub fn socket_path(&self) -> PathBuf {
        match self.engine {
            ProxyEngine::Postgres => self.listen.join(format!(".s.PGSQL.{}", self.port)),
            ProxyEngine::Mariadb => self.listen.clone(),
        }
    }

    /// What is wrong with this entry: (key, problem). `entries`: whether
    /// registration entries (a `[workload_api]`) may admit programs too.
    pub fn problem(&self, entries: bool) -> Option<(&'static str, String)> {
        let plain = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !plain(&self.name) {
            return Some((
                "proxy.name",
                format!("is {:?}; use letters, digits, '-', '_' or '.'", self.name),
            ));
        }
        if !plain(&self.role) || self.role.starts_with('.') {
            return Some((
                "proxy.role",
                format!("is {:?}; name a [[db_role]]", self.role),
            ));
        }
        if self.allow_uids.is_empty() && self.allow_units.is_empty() && !entries {
            return Some((
                "proxy.allow_uids",
                format!(
                    "or allow_units is required for proxy {:?}: nobody could connect (or add [workload_api], so registration entries naming role {:?} admit their programs)",
                    self.name, self.role
                ),
            ));
        }
        if let Some(bad) = self
            .allow_units
            .iter()
            .find(|u| !u.ends_with(".service") || u.contains('/') || u.len() <= ".service".len())
        {
            return Some((
                "proxy.allow_units",
                format!("has {bad:?}; name systemd services, e.g. \"shop.service\""),
            ));
        }
        if let Some(addr) = self.tcp.filter(|a| !a.ip().is_loopback()) {
            return Some((
                "proxy.tcp",
                format!("is {addr}; only loopback addresses, where the kernel tells who connects"),
            ));
        }
        if self.ttl.is_some_and(|t| t < Duration::from_secs(10)) {
            return Some(("proxy.ttl", "must be at least 10s".into()));
        }
        None
    }
}

mod optional_duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map(Some).map_err(|e| {
            serde::de::Error::custom(format!(
                "{s:?} is not a duration like \"10m\" or \"1h\": {e}"
            ))
        })
    }
}
