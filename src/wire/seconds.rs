//! Lifetimes asked for in request bodies: whole seconds, at most [`MAX`]
//! (about 136 years). A larger number is refused (400) rather than read as
//! "as long as allowed". Use as
//! `#[serde(default, deserialize_with = "crate::wire::seconds::deserialize")]`.

use serde::{Deserialize, Deserializer};

/// The largest lifetime a body may ask for (`u32::MAX` seconds).
pub const MAX: u64 = u32::MAX as u64;

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<u64>::deserialize(d)? {
        Some(s) if s > MAX => Err(serde::de::Error::custom(format!(
            "{s} seconds is more than the most a request may ask for ({MAX})"
        ))),
        asked => Ok(asked),
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[serde(default, deserialize_with = "super::deserialize")]
        ttl_seconds: Option<u64>,
    }

    #[test]
    fn absent_and_bounded_lifetimes_are_read_and_larger_ones_refused() {
        let read = |s: &str| serde_json::from_str::<Body>(s).map(|b| b.ttl_seconds);
        assert_eq!(read("{}").unwrap(), None);
        assert_eq!(read(r#"{"ttl_seconds":null}"#).unwrap(), None);
        assert_eq!(
            read(r#"{"ttl_seconds":4294967295}"#).unwrap(),
            Some(super::MAX)
        );
        let err = read(r#"{"ttl_seconds":4294967296}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than the most"), "{err}");
        assert!(read(r#"{"ttl_seconds":-1}"#).is_err());
    }
}
