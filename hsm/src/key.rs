//! Key names, kinds and public keys.

use std::fmt;

use crate::HsmError;

/// Every object zeroth creates carries this label prefix, so zeroth never
/// touches foreign objects on a shared token.
pub const LABEL_PREFIX: &str = "zeroth:";

/// What a key is for, which fixes its algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// Ed25519 signing key (pure EdDSA, 64-byte signatures).
    Ed25519,
    /// ECDSA over NIST P-256 with SHA-256 (signatures as 64-byte r||s).
    EcdsaP256,
    /// AES-256 key-encryption key, used with AES-GCM.
    Aes256,
}

impl KeyKind {
    pub fn is_signing(self) -> bool {
        !matches!(self, Self::Aes256)
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Ed25519 => "ed25519",
            Self::EcdsaP256 => "ecdsa-p256",
            Self::Aes256 => "aes-256",
        })
    }
}

/// A validated key name: 1–64 characters of `a-z 0-9 . _ -`, starting with a
/// letter or digit. Stored on the token as the label `zeroth:<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyName(String);

impl KeyName {
    pub fn new(name: &str) -> Result<Self, HsmError> {
        let ok_len = (1..=64).contains(&name.len());
        let ok_first = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let ok_chars = name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
        if ok_len && ok_first && ok_chars {
            Ok(Self(name.to_owned()))
        } else {
            Err(HsmError::BadKeyName(name.to_owned()))
        }
    }

    /// The name of an object labelled `zeroth:<name>`; `None` for foreign objects.
    pub fn from_label(label: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(label).ok()?;
        Self::new(s.strip_prefix(LABEL_PREFIX)?).ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The PKCS#11 label of the key's objects.
    pub fn label(&self) -> String {
        format!("{LABEL_PREFIX}{}", self.0)
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// zeroth's standard keys, created by `zeroth hsm init`.
/// The key-encryption key of everything zeroth seals at rest.
pub const STORE_KEK: &str = "store-kek";

pub const STANDARD_KEYS: [(&str, KeyKind); 6] = [
    ("x509-ca", KeyKind::EcdsaP256),
    ("ssh-user-ca", KeyKind::Ed25519),
    ("ssh-host-ca", KeyKind::Ed25519),
    ("jwt-signing", KeyKind::EcdsaP256),
    ("audit-checkpoint", KeyKind::Ed25519),
    ("store-kek", KeyKind::Aes256),
];

/// A signing key's public half.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// The 32-byte compressed Edwards point.
    Ed25519([u8; 32]),
    /// The 65-byte uncompressed SEC1 point `04 || X || Y`.
    EcdsaP256([u8; 65]),
}

// DER prefixes of SubjectPublicKeyInfo for the two key types (RFC 8410, RFC 5480).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

impl PublicKey {
    pub fn kind(&self) -> KeyKind {
        match self {
            Self::Ed25519(_) => KeyKind::Ed25519,
            Self::EcdsaP256(_) => KeyKind::EcdsaP256,
        }
    }

    /// The raw public key bytes (32 for Ed25519, 65 for P-256).
    pub fn raw(&self) -> &[u8] {
        match self {
            Self::Ed25519(k) => k,
            Self::EcdsaP256(k) => k,
        }
    }

    /// DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Vec<u8> {
        let prefix: &[u8] = match self {
            Self::Ed25519(_) => &ED25519_SPKI_PREFIX,
            Self::EcdsaP256(_) => &P256_SPKI_PREFIX,
        };
        [prefix, self.raw()].concat()
    }

    /// Builds a public key from a token's CKA_EC_POINT. PKCS#11 says the point
    /// is a DER OCTET STRING; some modules return the bare point: accept both.
    pub fn from_ec_point(kind: KeyKind, ec_point: &[u8]) -> Result<Self, HsmError> {
        let bare = match ec_point {
            [0x04, len, rest @ ..] if usize::from(*len) == rest.len() && rest.len() < 128 => rest,
            other => other,
        };
        let bad = || HsmError::BadPublicKey {
            kind,
            len: ec_point.len(),
        };
        match kind {
            KeyKind::Ed25519 => Ok(Self::Ed25519(bare.try_into().map_err(|_| bad())?)),
            KeyKind::EcdsaP256 => {
                let point: [u8; 65] = bare.try_into().map_err(|_| bad())?;
                if point[0] != 0x04 {
                    return Err(bad());
                }
                Ok(Self::EcdsaP256(point))
            }
            KeyKind::Aes256 => Err(bad()),
        }
    }
}

/// A key zeroth holds: its name, kind and, for signing keys, public half.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub name: KeyName,
    pub kind: KeyKind,
    pub public: Option<PublicKey>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_restricted() {
        for ok in ["x509-ca", "store-kek", "a", "node.1_b"] {
            assert!(KeyName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Upper", "-lead", "sp ace", "zeroth:x", &"a".repeat(65)] {
            assert!(KeyName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn labels_round_trip_and_foreign_objects_are_ignored() {
        let n = KeyName::new("ssh-user-ca").unwrap();
        assert_eq!(n.label(), "zeroth:ssh-user-ca");
        assert_eq!(KeyName::from_label(n.label().as_bytes()), Some(n));
        assert_eq!(KeyName::from_label(b"someone-else"), None);
        assert_eq!(KeyName::from_label(b"zeroth:"), None);
    }

    #[test]
    fn ec_point_is_accepted_wrapped_or_bare() {
        let raw = [7u8; 32];
        let wrapped = [&[0x04, 0x20][..], &raw].concat();
        assert_eq!(
            PublicKey::from_ec_point(KeyKind::Ed25519, &wrapped).unwrap(),
            PublicKey::Ed25519(raw)
        );
        assert_eq!(
            PublicKey::from_ec_point(KeyKind::Ed25519, &raw).unwrap(),
            PublicKey::Ed25519(raw)
        );
        assert!(PublicKey::from_ec_point(KeyKind::Ed25519, &raw[..31]).is_err());
        assert!(PublicKey::from_ec_point(KeyKind::EcdsaP256, &[5u8; 65]).is_err());
    }
}
