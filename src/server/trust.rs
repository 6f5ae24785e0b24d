//! A server starts inside the trust its store belongs to, or makes it.
//!
//! The first server of a store, holding the store's lock, makes zeroth's
//! keys in the HSM and records the trust domain and the keys' identities
//! (public keys; for the store key, which has none, a value sealed under
//! it). Every later server, under the same lock, finds the record and only
//! compares: a token without those keys, with other keys under the same
//! labels, or a configuration naming another trust domain is refused
//! before the server writes anything. Servers starting together wait on
//! the lock one after another, so keys are made once.

use std::collections::BTreeMap;

use zeroth_hsm::{HsmError, KeyKind, KeyName, KeyStore};

use crate::creds::ssh::ca::{CaAlgorithm, HOST_CA_KEY, USER_CA_KEY};
use crate::store::{trust, Store, StoreError};

/// The keys whose identity binds a store: they are never rotated away.
const BINDING_KEYS: [(&str, KeyKind); 5] = [
    ("x509-ca", KeyKind::EcdsaP256),
    ("jwt-signing", KeyKind::EcdsaP256),
    ("audit-checkpoint", KeyKind::Ed25519),
    (super::tls::TLS_KEY, KeyKind::EcdsaP256),
    (zeroth_hsm::STORE_KEK, KeyKind::Aes256),
];

const KEK_CHECK: &[u8] = b"zeroth: this store's key";

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("HSM key {name}: {source}")]
    Hsm {
        name: String,
        #[source]
        source: HsmError,
    },
    #[error(
        "this store belongs to trust domain {recorded:?}, but the configuration says \
         trust_domain = {configured:?}: a server joins only the trust its store was made in"
    )]
    TrustDomain {
        recorded: String,
        configured: String,
    },
    #[error(
        "this store was made with another HSM token: {differs}. Point [hsm] at the token \
         the cluster's other servers use (same module, label and PIN); nothing was written"
    )]
    OtherToken { differs: String },
}

/// What this start found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// This server made the store's keys and recorded them.
    Made,
    /// The store's keys were recorded before; this token holds them.
    Found,
}

/// Makes or checks the keys a server needs, under the store's lock.
pub fn bind(
    store: &Store,
    keys: &dyn KeyStore,
    trust_domain: &str,
    ssh_ca_algorithm: CaAlgorithm,
) -> Result<Joined, TrustError> {
    let mut conn = store.lock();
    let tx = conn.transaction().map_err(StoreError::sql(
        "taking the store's lock to check its trust",
    ))?;
    let binding = trust::read(&tx)?;
    let aad = kek_aad(trust_domain);
    let joined = match &binding {
        Some(b) => {
            if b.trust_domain != trust_domain {
                return Err(TrustError::TrustDomain {
                    recorded: b.trust_domain.clone(),
                    configured: trust_domain.to_owned(),
                });
            }
            let mut differs = Vec::new();
            for (name, kind) in BINDING_KEYS {
                let Some(want) = b.keys.get(name) else {
                    continue;
                };
                if let Some(why) = compare(keys, name, kind, want, &aad)? {
                    differs.push(why);
                }
            }
            if !differs.is_empty() {
                return Err(TrustError::OtherToken {
                    differs: differs.join("; "),
                });
            }
            Joined::Found
        }
        None => Joined::Made,
    };
    // Keys not yet recorded (a new store, or one made by an older release):
    // made here if missing, under the lock, then recorded.
    let recorded = binding.map(|b| b.keys).unwrap_or_default();
    let mut identities: BTreeMap<String, String> = recorded.clone();
    let ssh_cas = [USER_CA_KEY, HOST_CA_KEY].map(|base| ssh_ca_algorithm.key_name(base));
    let wanted = zeroth_hsm::STANDARD_KEYS
        .into_iter()
        .chain(BINDING_KEYS)
        .chain(
            ssh_cas
                .iter()
                .map(|n| (n.as_str(), ssh_ca_algorithm.kind())),
        );
    for (name, kind) in wanted {
        let key = key_name(name)?;
        let info = keys.get_or_generate(&key, kind).map_err(hsm_error(name))?;
        let binds = BINDING_KEYS.iter().any(|(n, _)| *n == name);
        if !binds || identities.contains_key(name) {
            continue;
        }
        let identity = match info.public {
            Some(public) => hex::encode(public.raw()),
            None => hex::encode(
                keys.encrypt(&key, KEK_CHECK, &aad)
                    .map_err(hsm_error(name))?,
            ),
        };
        identities.insert(name.to_owned(), identity);
    }
    if identities != recorded {
        trust::write(&tx, trust_domain, &identities)?;
    }
    tx.commit()
        .map_err(StoreError::sql("recording the store's trust"))?;
    Ok(joined)
}

fn kek_aad(trust_domain: &str) -> Vec<u8> {
    [b"zeroth-trust\0".as_slice(), trust_domain.as_bytes()].concat()
}

fn key_name(name: &str) -> Result<KeyName, TrustError> {
    KeyName::new(name).map_err(hsm_error(name))
}

fn hsm_error(name: &str) -> impl FnOnce(HsmError) -> TrustError + '_ {
    move |source| TrustError::Hsm {
        name: name.to_owned(),
        source,
    }
}

/// Why the token's key `name` is not the one recorded, or None if it is.
fn compare(
    keys: &dyn KeyStore,
    name: &str,
    kind: KeyKind,
    recorded: &str,
    aad: &[u8],
) -> Result<Option<String>, TrustError> {
    let key = key_name(name)?;
    if kind.is_signing() {
        return match keys.public_key(&key) {
            Ok(public) if hex::encode(public.raw()) == recorded => Ok(None),
            Ok(public) => Ok(Some(format!(
                "its key {name} is {}…, the store's is {}…",
                short(&hex::encode(public.raw())),
                short(recorded)
            ))),
            Err(HsmError::KeyMissing(_)) => Ok(Some(format!("it has no key {name}"))),
            Err(e) => Err(hsm_error(name)(e)),
        };
    }
    let Ok(sealed) = hex::decode(recorded) else {
        return Err(StoreError::Malformed {
            what: "record of its HSM keys",
            reason: format!("{name} is not hex"),
        }
        .into());
    };
    match keys.decrypt(&key, &sealed, aad) {
        Ok(plain) if plain.as_slice() == KEK_CHECK => Ok(None),
        Ok(_) | Err(HsmError::Decrypt) => Ok(Some(format!(
            "its key {name} does not open what the store's {name} sealed"
        ))),
        Err(HsmError::KeyMissing(_)) => Ok(Some(format!("it has no key {name}"))),
        Err(e) => Err(hsm_error(name)(e)),
    }
}

/// The first 16 hex digits: enough to tell two keys apart in a message.
fn short(hex: &str) -> &str {
    hex.get(..16).unwrap_or(hex)
}
