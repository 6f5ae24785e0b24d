//! SPIFFE IDs (SPIFFE ID specification §2): `spiffe://<trust-domain>/<path>`.

use std::fmt;

/// A validated SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId(String);

/// Why a string is not a SPIFFE ID, or a trust domain is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid SPIFFE ID or trust domain {value:?}: {reason}")]
pub struct SpiffeError {
    pub value: String,
    pub reason: &'static str,
}

fn err(value: &str, reason: &'static str) -> SpiffeError {
    SpiffeError {
        value: value.to_owned(),
        reason,
    }
}

/// Checks a trust domain name: lowercase letters, digits, dots, dashes, underscores.
pub fn check_trust_domain(td: &str) -> Result<(), SpiffeError> {
    if td.is_empty() || td.len() > 255 {
        return Err(err(td, "a trust domain has 1 to 255 characters"));
    }
    if !td
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
    {
        return Err(err(td, "a trust domain uses only a-z 0-9 . - _"));
    }
    Ok(())
}

impl SpiffeId {
    /// `spiffe://<trust_domain>/<segments joined by '/'>`.
    pub fn new(trust_domain: &str, segments: &[&str]) -> Result<Self, SpiffeError> {
        check_trust_domain(trust_domain)?;
        for s in segments {
            if s.is_empty() || *s == "." || *s == ".." {
                return Err(err(s, "a path segment is not empty, '.' or '..'"));
            }
            if !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            {
                return Err(err(s, "a path segment uses only A-Z a-z 0-9 . - _"));
            }
        }
        Ok(Self(format!(
            "spiffe://{trust_domain}/{}",
            segments.join("/")
        )))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A full SPIFFE ID of `trust_domain`, checked segment by segment.
    pub fn parse_in(trust_domain: &str, id: &str) -> Result<Self, SpiffeError> {
        let rest = id
            .strip_prefix("spiffe://")
            .ok_or_else(|| err(id, "a SPIFFE ID starts with spiffe://"))?;
        let (td, path) = rest
            .split_once('/')
            .ok_or_else(|| err(id, "a workload's SPIFFE ID has a path"))?;
        if td != trust_domain {
            return Err(err(id, "the trust domain is not this server's"));
        }
        if id.len() > 2048 {
            return Err(err(id, "a SPIFFE ID has at most 2048 bytes"));
        }
        let segments: Vec<&str> = path.split('/').collect();
        Self::new(trust_domain, &segments)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_built_and_bad_parts_refused() {
        assert_eq!(
            SpiffeId::new("example.org", &["node", "ab12"])
                .unwrap()
                .as_str(),
            "spiffe://example.org/node/ab12"
        );
        assert!(SpiffeId::new("Example.org", &["node"]).is_err());
        assert!(SpiffeId::new("example.org", &["node", ".."]).is_err());
        assert!(SpiffeId::new("example.org", &["a/b"]).is_err());
        assert!(SpiffeId::new("", &["node"]).is_err());
    }
}
