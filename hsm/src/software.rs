//! Keys in process memory: for unit tests and an explicit `--dev` mode only.
//!
//! Nothing here is protected: the keys live in ordinary memory and vanish
//! with the process. Constructing one logs a warning that says so.

use std::collections::HashMap;
use std::sync::RwLock;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use crate::keystore::{split_gcm, GCM_NONCE_LEN};
use crate::{HsmError, KeyInfo, KeyKind, KeyName, KeyStore, PublicKey};

enum SoftKey {
    Ed25519(ed25519_dalek::SigningKey),
    EcdsaP256(p256::ecdsa::SigningKey),
    Aes256(Zeroizing<[u8; 32]>),
}

impl SoftKey {
    fn kind(&self) -> KeyKind {
        match self {
            Self::Ed25519(_) => KeyKind::Ed25519,
            Self::EcdsaP256(_) => KeyKind::EcdsaP256,
            Self::Aes256(_) => KeyKind::Aes256,
        }
    }

    fn public(&self) -> Option<PublicKey> {
        match self {
            Self::Ed25519(k) => Some(PublicKey::Ed25519(k.verifying_key().to_bytes())),
            Self::EcdsaP256(k) => {
                let point = k.verifying_key().to_encoded_point(false);
                point.as_bytes().try_into().ok().map(PublicKey::EcdsaP256)
            }
            Self::Aes256(_) => None,
        }
    }
}

/// An in-memory key store. Not a security boundary.
pub struct SoftwareKeyStore {
    keys: RwLock<HashMap<KeyName, SoftKey>>,
}

impl std::fmt::Debug for SoftwareKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SoftwareKeyStore { .. }")
    }
}

impl SoftwareKeyStore {
    /// An empty store. Logs a warning: keys held this way are not protected.
    pub fn new_insecure() -> Self {
        tracing::warn!(
            "DEV MODE: keys are held in process memory, not in an HSM; never use this outside development"
        );
        Self {
            keys: RwLock::new(HashMap::new()),
        }
    }

    fn with_key<T>(
        &self,
        name: &KeyName,
        f: impl FnOnce(&SoftKey) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let k = keys
            .get(name)
            .ok_or_else(|| HsmError::KeyMissing(name.to_string()))?;
        f(k)
    }
}

fn random<const N: usize>() -> Result<[u8; N], HsmError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|_| HsmError::Sealed("the OS random source failed"))?;
    Ok(b)
}

fn wrong_kind(name: &KeyName, actual: KeyKind, wanted: KeyKind) -> HsmError {
    HsmError::WrongKind {
        name: name.to_string(),
        actual: actual.to_string(),
        wanted,
    }
}

impl KeyStore for SoftwareKeyStore {
    fn describe(&self) -> String {
        "software keys in process memory (development only)".into()
    }

    fn get_or_generate(&self, name: &KeyName, kind: KeyKind) -> Result<KeyInfo, HsmError> {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        if !keys.contains_key(name) {
            let seed = Zeroizing::new(random::<32>()?);
            let key = match kind {
                KeyKind::Ed25519 => SoftKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&seed)),
                KeyKind::EcdsaP256 => SoftKey::EcdsaP256(
                    p256::ecdsa::SigningKey::from_slice(&seed[..])
                        .map_err(|_| HsmError::Sealed("the random scalar was out of range"))?,
                ),
                KeyKind::Aes256 => SoftKey::Aes256(Zeroizing::new(*seed)),
            };
            keys.insert(name.clone(), key);
        }
        let k = &keys[name];
        if k.kind() != kind {
            return Err(wrong_kind(name, k.kind(), kind));
        }
        Ok(KeyInfo {
            name: name.clone(),
            kind,
            public: k.public(),
        })
    }

    fn public_key(&self, name: &KeyName) -> Result<PublicKey, HsmError> {
        self.with_key(name, |k| {
            k.public()
                .ok_or_else(|| wrong_kind(name, k.kind(), KeyKind::Ed25519))
        })
    }

    fn sign(&self, name: &KeyName, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        use ed25519_dalek::Signer as _;
        self.with_key(name, |k| match k {
            SoftKey::Ed25519(k) => Ok(k.sign(message).to_bytes().to_vec()),
            SoftKey::EcdsaP256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(message);
                Ok(sig.to_bytes().to_vec())
            }
            SoftKey::Aes256(_) => Err(wrong_kind(name, KeyKind::Aes256, KeyKind::Ed25519)),
        })
    }

    fn encrypt(&self, name: &KeyName, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, HsmError> {
        self.with_key(name, |k| {
            let SoftKey::Aes256(key) = k else {
                return Err(wrong_kind(name, k.kind(), KeyKind::Aes256));
            };
            let nonce = random::<GCM_NONCE_LEN>()?;
            let cipher = Aes256Gcm::new_from_slice(&key[..]).map_err(|_| HsmError::Decrypt)?;
            let ct = cipher
                .encrypt(
                    &Nonce::from(nonce),
                    Payload {
                        msg: plaintext,
                        aad,
                    },
                )
                .map_err(|_| HsmError::Sealed("AES-GCM encryption failed"))?;
            Ok([&nonce[..], &ct].concat())
        })
    }

    fn decrypt(
        &self,
        name: &KeyName,
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        self.with_key(name, |k| {
            let SoftKey::Aes256(key) = k else {
                return Err(wrong_kind(name, k.kind(), KeyKind::Aes256));
            };
            let (nonce, body) = split_gcm(ciphertext).ok_or(HsmError::Decrypt)?;
            let cipher = Aes256Gcm::new_from_slice(&key[..]).map_err(|_| HsmError::Decrypt)?;
            cipher
                .decrypt(&Nonce::from(nonce), Payload { msg: body, aad })
                .map(Zeroizing::new)
                .map_err(|_| HsmError::Decrypt)
        })
    }

    fn list(&self) -> Result<Vec<KeyInfo>, HsmError> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<KeyInfo> = keys
            .iter()
            .map(|(name, k)| KeyInfo {
                name: name.clone(),
                kind: k.kind(),
                public: k.public(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn destroy(&self, name: &KeyName) -> Result<bool, HsmError> {
        Ok(self
            .keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .is_some())
    }
}
