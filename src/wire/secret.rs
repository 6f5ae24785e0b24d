//! Secrets inside request and response bodies: held as `SecretString`
//! (redacted in `Debug`, zeroized on drop), exposed only to the serializer
//! that writes them on the wire. Use as `#[serde(with = "crate::wire::secret")]`.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serializer};

pub fn serialize<S: Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
    String::deserialize(d).map(SecretString::from)
}

/// The same for an optional secret: `#[serde(default, with = "crate::wire::secret::optional")]`.
pub mod optional {
    use super::*;

    pub fn serialize<S: Serializer>(
        secret: &Option<SecretString>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match secret {
            Some(v) => s.serialize_some(v.expose_secret()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
        Option::<String>::deserialize(d).map(|o| o.map(SecretString::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug)]
    struct Body {
        #[serde(with = "super")]
        password: SecretString,
        #[serde(default, with = "super::optional")]
        token: Option<SecretString>,
    }

    #[test]
    fn secrets_cross_the_wire_but_never_reach_debug_output() {
        let body: Body = serde_json::from_str(r#"{"password":"hunter2-long"}"#).unwrap();
        assert!(body.token.is_none());
        assert!(!format!("{body:?}").contains("hunter2-long"));
        let text = serde_json::to_string(&body).unwrap();
        assert_eq!(text, r#"{"password":"hunter2-long","token":null}"#);
    }
}
