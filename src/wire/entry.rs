//! Registration entries: which SPIFFE ID a program on a node gets. An entry
//! names its node (or a node group) and selectors; a program is given the
//! entry's identity when its node's kernel attests every selector of it.
//! The server stores entries and sends each agent its own; the agent
//! matches callers against them and asks the server to sign their SVIDs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a selector was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error(
        "selector {0:?} is not TYPE:KEY:VALUE (e.g. unix:uid:1001, systemd:unit:shop.service)"
    )]
    Shape(String),
    #[error("selector {0:?}: unknown kind; use unix:uid, unix:gid, unix:supplementary_gid, systemd:unit, unix:path or unix:sha256")]
    Kind(String),
    #[error("selector {selector:?}: {problem}")]
    Value { selector: String, problem: String },
}

/// One fact about a calling process that its node's kernel attests.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Selector {
    /// The process's user id.
    Uid(u32),
    /// Its primary group id.
    Gid(u32),
    /// One of its supplementary group ids.
    SupplementaryGid(u32),
    /// The systemd unit whose cgroup holds it (e.g. `shop.service`).
    Unit(String),
    /// The absolute path of its executable.
    Path(String),
    /// The SHA-256 of its executable's contents.
    Sha256([u8; 32]),
}

/// Why an entry's selectors do not name a boundary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unix:path and unix:sha256 name a file, not the process running it: a program can connect \
     and then exec another, or have its own code loaded into one (LD_PRELOAD). Add unix:uid:N or \
     systemd:unit:NAME, which a process cannot leave; path and hash then tell that user's or \
     unit's programs apart"
)]
pub struct Unbounded;

/// Checks that selectors on the executable refine a boundary a process
/// cannot leave after it connected: its uid (from the socket's
/// credentials) or its systemd unit (its cgroup, kept by the kernel).
pub fn bounded(selectors: &[Selector]) -> Result<(), Unbounded> {
    let on_file = selectors
        .iter()
        .any(|s| matches!(s, Selector::Path(_) | Selector::Sha256(_)));
    let boundary = selectors
        .iter()
        .any(|s| matches!(s, Selector::Uid(_) | Selector::Unit(_)));
    match on_file && !boundary {
        true => Err(Unbounded),
        false => Ok(()),
    }
}

/// Longest accepted path or unit name, in bytes.
const MAX_VALUE: usize = 4096;

fn id(selector: &str, value: &str) -> Result<u32, SelectorError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) || value.len() > 10 {
        return Err(SelectorError::Value {
            selector: selector.into(),
            problem: "the id must be a decimal number".into(),
        });
    }
    value.parse().map_err(|_| SelectorError::Value {
        selector: selector.into(),
        problem: "the id does not fit 32 bits".into(),
    })
}

/// Whether `name` is a plausible systemd unit name (`foo.service`,
/// `app@1.service`).
pub fn valid_unit_name(name: &str) -> bool {
    let Some((stem, suffix)) = name.rsplit_once('.') else {
        return false;
    };
    !stem.is_empty()
        && name.len() <= 255
        && !suffix.is_empty()
        && suffix.bytes().all(|b| b.is_ascii_lowercase())
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":_.\\@-".contains(&b))
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, value) = match s.split_once(':').and_then(|(t, rest)| {
            let (k, v) = rest.split_once(':')?;
            Some((format!("{t}:{k}"), v))
        }) {
            Some(kv) => kv,
            None => return Err(SelectorError::Shape(s.into())),
        };
        let bad = |problem: &str| SelectorError::Value {
            selector: s.into(),
            problem: problem.into(),
        };
        if value.len() > MAX_VALUE {
            return Err(bad("the value is too long"));
        }
        match kind.as_str() {
            "unix:uid" => Ok(Self::Uid(id(s, value)?)),
            "unix:gid" => Ok(Self::Gid(id(s, value)?)),
            "unix:supplementary_gid" => Ok(Self::SupplementaryGid(id(s, value)?)),
            "systemd:unit" if valid_unit_name(value) => Ok(Self::Unit(value.into())),
            "systemd:unit" => Err(bad("not a systemd unit name such as shop.service")),
            "unix:path" => {
                if !value.starts_with('/') || value.contains('\0') {
                    return Err(bad("the path must be absolute"));
                }
                if value.split('/').any(|c| c == "." || c == "..") || value.contains("//") {
                    return Err(bad("the path must be canonical (no '.', '..' or '//')"));
                }
                Ok(Self::Path(value.into()))
            }
            "unix:sha256" => {
                let mut digest = [0u8; 32];
                if value.len() != 64
                    || !value
                        .bytes()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                    || hex::decode_to_slice(value, &mut digest).is_err()
                {
                    return Err(bad("the digest must be 64 lowercase hex digits"));
                }
                Ok(Self::Sha256(digest))
            }
            _ => Err(SelectorError::Kind(s.into())),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uid(n) => write!(f, "unix:uid:{n}"),
            Self::Gid(n) => write!(f, "unix:gid:{n}"),
            Self::SupplementaryGid(n) => write!(f, "unix:supplementary_gid:{n}"),
            Self::Unit(u) => write!(f, "systemd:unit:{u}"),
            Self::Path(p) => write!(f, "unix:path:{p}"),
            Self::Sha256(d) => write!(f, "unix:sha256:{}", hex::encode(d)),
        }
    }
}

impl Serialize for Selector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Whose programs an entry is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Parent {
    /// One enrolled node (by its id).
    Node(String),
    /// Every node and token host of a group.
    Group(String),
}

impl fmt::Display for Parent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Node(id) => write!(f, "node {id}"),
            Self::Group(g) => write!(f, "group {g}"),
        }
    }
}

/// A registration entry, as the server stores it and sends it to agents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub id: String,
    pub spiffe_id: String,
    pub parent: Parent,
    /// Every one must hold for a program to match; sorted, no repeats.
    #[schema(value_type = Vec<String>, example = json!(["unix:uid:1000", "systemd:unit:app.service"]))]
    pub selectors: Vec<Selector>,
    /// Lifetime of the entry's X.509-SVIDs, in seconds.
    pub ttl_seconds: u64,
    /// DNS names the X.509-SVID also carries.
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// Database and SSH roles the entry's programs may use.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Told to the workload beside its SVID (the Workload API's `hint`).
    #[serde(default)]
    pub hint: String,
    pub created: i64,
}

impl Entry {
    /// Whether a process with these attested facts matches: every selector
    /// of the entry is among them.
    pub fn matches(&self, facts: &[Selector]) -> bool {
        self.selectors.iter().all(|s| facts.contains(s))
    }
}

/// `GET /v1/entries`: the entries for the calling node, and a revision
/// that changes whenever they do.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EntriesResponse {
    pub revision: String,
    pub entries: Vec<Entry>,
}

/// `POST /v1/workload/x509`: sign an X.509-SVID for a program of the
/// calling node that matches `entry_id`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSvidRequest {
    pub entry_id: String,
    /// PKCS#10 certification request (DER, base64) for a P-256 key made in
    /// the agent's memory; its signature proves the key is held. Only the
    /// key is taken from it: names come from the entry.
    #[schema(format = Byte)]
    pub csr: String,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkloadSvidResponse {
    pub spiffe_id: String,
    /// The X.509-SVID (PEM).
    pub svid: String,
    /// The trust bundle (PEM).
    pub bundle: String,
    pub expires: i64,
}

/// `POST /v1/workload/jwt`: a JWT-SVID naming `entry_id`'s SPIFFE ID.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkloadJwtRequest {
    pub entry_id: String,
    #[schema(schema_with = crate::wire::jwt::audiences)]
    pub audience: Vec<String>,
    /// Lifetime in seconds, at least 10 (default and maximum: the server's
    /// `jwt_max_ttl`).
    #[serde(default, deserialize_with = "crate::wire::seconds::deserialize")]
    #[schema(minimum = 10, maximum = 4294967295.0)]
    pub ttl_seconds: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_hash_only_refine_a_uid_or_a_unit() {
        let parse =
            |v: &[&str]| -> Vec<Selector> { v.iter().map(|s| s.parse().unwrap()).collect() };
        let hash = format!("unix:sha256:{}", "a".repeat(64));
        for alone in [
            vec!["unix:path:/usr/bin/app"],
            vec![hash.as_str()],
            vec!["unix:path:/usr/bin/app", hash.as_str()],
            vec!["unix:gid:100", "unix:path:/usr/bin/app"],
            vec!["unix:supplementary_gid:100", hash.as_str()],
        ] {
            assert_eq!(bounded(&parse(&alone)), Err(Unbounded), "{alone:?}");
        }
        for ok in [
            vec!["unix:uid:1000", "unix:path:/usr/bin/app"],
            vec!["systemd:unit:app.service", hash.as_str()],
            vec!["unix:gid:100"],
            vec!["unix:uid:0"],
        ] {
            assert_eq!(bounded(&parse(&ok)), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn selectors_round_trip_through_their_text() {
        for s in [
            "unix:uid:1001",
            "unix:gid:0",
            "unix:supplementary_gid:27",
            "systemd:unit:shop.service",
            "systemd:unit:app@1.service",
            "unix:path:/usr/bin/python3.11",
            "unix:sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        ] {
            let parsed: Selector = s.parse().unwrap();
            assert_eq!(parsed.to_string(), s);
        }
    }

    #[test]
    fn malformed_selectors_are_named() {
        for (s, says) in [
            ("uid:1001", "TYPE:KEY:VALUE"),
            ("unix:uid:", "decimal"),
            ("unix:uid:-1", "decimal"),
            ("unix:uid:99999999999", "decimal"),
            ("unix:uid:4294967296", "32 bits"),
            ("k8s:ns:default", "unknown kind"),
            ("systemd:unit:shop", "unit name"),
            ("systemd:unit:../x.service", "unit name"),
            ("unix:path:bin/sh", "absolute"),
            ("unix:path:/usr/../bin/sh", "canonical"),
            ("unix:sha256:ABC", "64 lowercase"),
        ] {
            let e = s.parse::<Selector>().unwrap_err().to_string();
            assert!(e.contains(says), "{s}: {e}");
        }
    }

    #[test]
    fn an_entry_matches_only_when_every_selector_holds() {
        let entry = Entry {
            id: "e".into(),
            spiffe_id: "spiffe://td/app".into(),
            parent: Parent::Group("edge".into()),
            selectors: vec![Selector::Uid(1001), Selector::Unit("shop.service".into())],
            ttl_seconds: 3600,
            dns_names: vec![],
            roles: vec![],
            hint: String::new(),
            created: 0,
        };
        let shop = [
            Selector::Uid(1001),
            Selector::Gid(1001),
            Selector::Unit("shop.service".into()),
        ];
        assert!(entry.matches(&shop));
        assert!(!entry.matches(&shop[..2]));
        assert!(!entry.matches(&[Selector::Uid(0), Selector::Unit("shop.service".into())]));
    }
}
