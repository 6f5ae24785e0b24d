//! Object templates: what zeroth asks the token to create.
//!
//! Private and secret keys are token objects, private (login needed),
//! sensitive and non-extractable from birth, so the token never reveals
//! them, not even wrapped. Capabilities a key does not need are switched off
//! explicitly because some modules (SoftHSM among them) default to permissive.

use cryptoki::object::{Attribute, KeyType, ObjectClass};

use crate::KeyKind;

/// DER OID of Ed25519 (RFC 8410) as CKA_EC_PARAMS.
const ED25519_PARAMS: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];
/// DER OID of NIST P-256 (prime256v1) as CKA_EC_PARAMS.
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

fn locked_down(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Derive(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(label.as_bytes().to_vec()),
    ]
}

/// (public, private) templates for a signing key pair.
pub(crate) fn key_pair(kind: KeyKind, label: &str) -> (Vec<Attribute>, Vec<Attribute>) {
    let params = match kind {
        KeyKind::Ed25519 => ED25519_PARAMS.to_vec(),
        _ => P256_PARAMS.to_vec(),
    };
    let public = vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::EcParams(params),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(label.as_bytes().to_vec()),
    ];
    let mut private = locked_down(label);
    private.extend([
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
    ]);
    (public, private)
}

/// Template for an AES-256 key-encryption key used with AES-GCM.
pub(crate) fn aes_kek(label: &str) -> Vec<Attribute> {
    let mut t = locked_down(label);
    t.extend([
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
    ]);
    t
}
