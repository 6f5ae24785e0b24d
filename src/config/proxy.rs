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
    /// Reach the database at this `host:port` instead of the connection's
    /// (where this node's route to it differs from the server's: another
    /// network, NAT). TLS still verifies the connection's host name, as
    /// libpq's `hostaddr` does.
    pub connect_to: Option<String>,
}

fn default_pg_port() -> u16 {
    5432
}

impl ProxyConfig {
    /// Where the proxy connects for a user issued on `host`:`port`.
    pub fn upstream_addr(&self, host: &str, port: u16) -> String {
        match &self.connect_to {
            Some(a) => a.clone(),
            None if host.contains(':') => format!("[{host}]:{port}"),
            None => format!("{host}:{port}"),
        }
    }

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
        if let Some(bad) = self.connect_to.as_deref().filter(|a| !is_host_port(a)) {
            return Some((
                "proxy.connect_to",
                format!("is {bad:?}; give host:port, e.g. \"10.0.0.5:5432\" or \"[::1]:3306\""),
            ));
        }
        if self.ttl.is_some_and(|t| t < Duration::from_secs(10)) {
            return Some(("proxy.ttl", "must be at least 10s".into()));
        }
        None
    }
}

/// `host:port` with a non-empty host and a port from 1 to 65535 (an IPv6
/// host in brackets).
fn is_host_port(a: &str) -> bool {
    let Some((host, port)) = a.rsplit_once(':') else {
        return false;
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        }
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
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

#[cfg(test)]
mod tests {
    use super::{is_host_port, ProxyConfig};

    #[test]
    fn connect_to_takes_host_and_port_and_names_what_is_wrong() {
        for good in ["10.0.0.5:5432", "db.internal:3306", "[::1]:3306"] {
            assert!(is_host_port(good), "{good}");
        }
        for bad in [
            "10.0.0.5",
            ":5432",
            "db:0",
            "db:65536",
            "::1:3306",
            "db/x:5432",
            "[db]:1",
        ] {
            assert!(!is_host_port(bad), "{bad}");
        }
        let proxy: ProxyConfig = toml::from_str(
            "name = \"p\"\nrole = \"r\"\nengine = \"mariadb\"\nlisten = \"/run/p.sock\"\nallow_uids = [1]\nconnect_to = \"db\"\n",
        )
        .unwrap();
        let (key, why) = proxy.problem(false).unwrap();
        assert_eq!(key, "proxy.connect_to");
        assert!(why.contains("host:port"), "{why}");
        let fine = ProxyConfig {
            connect_to: None,
            ..proxy.clone()
        };
        assert_eq!(fine.upstream_addr("db.example", 3306), "db.example:3306");
        assert_eq!(fine.upstream_addr("::1", 3306), "[::1]:3306");
        let routed = ProxyConfig {
            connect_to: Some("10.0.0.5:3306".into()),
            ..proxy
        };
        assert_eq!(routed.upstream_addr("db.example", 3306), "10.0.0.5:3306");
    }
}
