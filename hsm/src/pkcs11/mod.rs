//! The PKCS#11 backend: keys generated on the token, sensitive and
//! non-extractable, used through a pool of logged-in sessions.

mod access;
mod config;
mod module;
mod pool;
mod recovery;
mod templates;

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, RwLock};

use cryptoki::error::RvError;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub use config::{PinSource, Pkcs11Config, TokenSelector};
pub use module::{Capability, Module, TokenSummary};

use crate::keystore::{split_gcm, GCM_NONCE_LEN, GCM_TAG_LEN};
use crate::{HsmError, KeyInfo, KeyKind, KeyName, KeyStore, PublicKey};
use pool::SessionPool;
use recovery::{logged_in, reach_patiently, stale_handle, Recovery, FIRST_RETRY};

/// A key's private (or secret) object, as found on the token.
#[derive(Debug, Clone, Copy)]
struct KeyObject {
    handle: ObjectHandle,
    kind: KeyKind,
}

/// Keys in a PKCS#11 token.
pub struct Pkcs11KeyStore {
    module: Module,
    token: TokenSelector,
    pin: SecretString,
    pin_source: PinSource,
    pool: SessionPool,
    mechanisms: Vec<MechanismType>,
    /// Private/secret key handles by name; handles stay valid while the
    /// module stays initialised, so lookups cost one hash probe.
    handles: RwLock<HashMap<KeyName, KeyObject>>,
    /// Keys this process has seen on the token: one no longer found is a
    /// module whose view went stale (SoftHSM, after its token directory
    /// went away and came back, shows an empty token until reinitialised),
    /// never a reason to make the key again.
    known: RwLock<HashSet<KeyName>>,
    /// Serialises key generation so two callers never create the same label twice.
    generating: Mutex<()>,
    /// One recovery at a time, and when the next may be tried.
    recovery: Mutex<Recovery>,
}

impl std::fmt::Debug for Pkcs11KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11KeyStore")
            .field("module", &self.module.path())
            .field("token", &self.token)
            .field("pin", &self.pin_source)
            .finish()
    }
}

impl Pkcs11KeyStore {
    /// Loads the module, finds the token, reads the PIN and logs in.
    /// One per process: PKCS#11 modules are initialised once per process.
    pub fn open(config: &Pkcs11Config) -> Result<Self, HsmError> {
        let module = Module::load(&config.module)?;
        let (slot, mechanisms) = reach_patiently(&module, &config.token)?;
        let pin = config.pin.read()?;
        let max = match config.max_sessions {
            0 => 2 * std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let store = Self {
            pool: SessionPool::new(slot, max),
            module,
            token: config.token.clone(),
            pin,
            pin_source: config.pin.clone(),
            mechanisms,
            handles: RwLock::new(HashMap::new()),
            known: RwLock::new(HashSet::new()),
            generating: Mutex::new(()),
            recovery: Mutex::new(Recovery {
                not_before: std::time::Instant::now(),
                wait: FIRST_RETRY,
                generation: 0,
            }),
        };
        store.login_patiently()?;
        Ok(store)
    }

    pub fn module(&self) -> &Module {
        &self.module
    }

    pub fn token(&self) -> &TokenSelector {
        &self.token
    }

    pub fn pin_source(&self) -> &PinSource {
        &self.pin_source
    }

    pub fn slot(&self) -> Slot {
        self.pool.slot()
    }

    fn login(&self) -> Result<(), HsmError> {
        self.pool.with(self.module.ctx(), |s| {
            match s.login(UserType::User, Some(&self.pin)) {
                Ok(()) => Ok(()),
                Err(e) => match HsmError::pkcs11("C_Login")(e) {
                    err if err.rv() == Some(RvError::UserAlreadyLoggedIn) => Ok(()),
                    err if err.rv() == Some(RvError::PinIncorrect) => Err(HsmError::WrongPin {
                        token: self.token.to_string(),
                    }),
                    err if err.rv() == Some(RvError::PinLocked) => Err(HsmError::PinLocked {
                        token: self.token.to_string(),
                    }),
                    err => Err(err),
                },
            }
        })
    }

    /// Runs `op` on a pooled session; if the module lost our sessions or
    /// login, starts over once after [`Self::recover`].
    fn run<T>(&self, op: impl Fn(&Session) -> Result<T, HsmError>) -> Result<T, HsmError> {
        let seen = self.generation();
        match self.pool.with(self.module.ctx(), &op) {
            Err(e) if e.needs_new_session() => {
                self.recover(&e, seen)?;
                self.pool.with(self.module.ctx(), &op)
            }
            other => other,
        }
    }

    /// Runs `op` with the key `name` after `check` accepts its kind. A lost
    /// session or login, or a key handle gone stale, leads to one retry with
    /// fresh sessions, a new login and the key looked up again.
    fn with_key<T>(
        &self,
        name: &KeyName,
        check: impl Fn(KeyKind) -> Result<(), HsmError>,
        op: impl Fn(&Session, KeyObject) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        let seen = self.generation();
        let attempt = || {
            let k = self
                .key(name)?
                .ok_or_else(|| HsmError::KeyMissing(name.to_string()))?;
            check(k.kind)?;
            self.pool.with(self.module.ctx(), |s| op(s, k))
        };
        match attempt() {
            Err(e) if e.needs_new_session() || stale_handle(&e) => {
                self.recover(&e, seen)?;
                attempt()
            }
            other => other,
        }
    }

    fn require(&self, mechanism: MechanismType, purpose: &'static str) -> Result<(), HsmError> {
        if self.mechanisms.contains(&mechanism) {
            Ok(())
        } else {
            Err(HsmError::MechanismUnsupported {
                mechanism: mechanism.to_string(),
                purpose,
            })
        }
    }

    /// The key's private/secret object, from the cache or the token.
    fn key(&self, name: &KeyName) -> Result<Option<KeyObject>, HsmError> {
        if let Some(k) = self
            .handles
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(Some(*k));
        }
        // A session without its login sees no private objects: that is a
        // lost login (the token went away and came back), not a missing
        // key, and must never lead to generating a second key.
        let found = self.run(|s| {
            logged_in(s)?;
            find_key(s, name)
        })?;
        match found {
            Some(k) => {
                self.remember(name, k);
                Ok(Some(k))
            }
            None if self.is_known(name) => Err(HsmError::TokenStale(format!(
                "key {name} was on the token and is not found now"
            ))),
            None => Ok(None),
        }
    }

    fn remember(&self, name: &KeyName, k: KeyObject) {
        self.handles
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), k);
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        if !known.contains(name) {
            known.insert(name.clone());
        }
    }

    fn is_known(&self, name: &KeyName) -> bool {
        self.known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }

    fn signing_kind(name: &KeyName) -> impl Fn(KeyKind) -> Result<(), HsmError> + '_ {
        move |kind| match kind.is_signing() {
            true => Ok(()),
            false => Err(HsmError::WrongKind {
                name: name.to_string(),
                actual: kind.to_string(),
                wanted: KeyKind::Ed25519,
            }),
        }
    }

    fn generate(&self, name: &KeyName, kind: KeyKind) -> Result<KeyObject, HsmError> {
        let label = name.label();
        let handle = match kind {
            KeyKind::Ed25519 | KeyKind::EcdsaP256 => {
                let (gen, use_) = match kind {
                    KeyKind::Ed25519 => (Mechanism::EccEdwardsKeyPairGen, MechanismType::EDDSA),
                    _ => (Mechanism::EccKeyPairGen, MechanismType::ECDSA),
                };
                self.require(gen.mechanism_type(), "key generation")?;
                self.require(use_, "signing")?;
                let (public, private) = templates::key_pair(kind, &label);
                self.run(|s| {
                    s.generate_key_pair(&gen, &public, &private)
                        .map(|(_, private)| private)
                        .map_err(HsmError::pkcs11("C_GenerateKeyPair"))
                })?
            }
            KeyKind::Aes256 => {
                self.require(MechanismType::AES_KEY_GEN, "key generation")?;
                self.require(MechanismType::AES_GCM, "encryption")?;
                let template = templates::aes_kek(&label);
                self.run(|s| {
                    s.generate_key(&Mechanism::AesKeyGen, &template)
                        .map_err(HsmError::pkcs11("C_GenerateKey"))
                })?
            }
        };
        tracing::info!(key = %name, %kind, "generated a key in the HSM");
        Ok(KeyObject { handle, kind })
    }
}

impl KeyStore for Pkcs11KeyStore {
    fn describe(&self) -> String {
        format!(
            "PKCS#11 {} token {}",
            self.module.path().display(),
            self.token
        )
    }

    fn get_or_generate(&self, name: &KeyName, kind: KeyKind) -> Result<KeyInfo, HsmError> {
        let _one_at_a_time = self.generating.lock().unwrap_or_else(|p| p.into_inner());
        let k = match self.key(name)? {
            Some(k) => k,
            None => {
                let k = self.generate(name, kind)?;
                self.remember(name, k);
                k
            }
        };
        check_kind(name, k.kind, kind)?;
        let public = match kind.is_signing() {
            true => Some(self.public_key(name)?),
            false => None,
        };
        Ok(KeyInfo {
            name: name.clone(),
            kind,
            public,
        })
    }

    fn public_key(&self, name: &KeyName) -> Result<PublicKey, HsmError> {
        let kind = self
            .key(name)?
            .ok_or_else(|| HsmError::KeyMissing(name.to_string()))?
            .kind;
        Self::signing_kind(name)(kind)?;
        let point = self.run(|s| {
            let label = Attribute::Label(name.label().into_bytes());
            let objs = s
                .find_objects(&[Attribute::Class(ObjectClass::PUBLIC_KEY), label])
                .map_err(HsmError::pkcs11("C_FindObjects"))?;
            let public = objs
                .first()
                .copied()
                .ok_or_else(|| HsmError::KeyMissing(format!("{name} (public half)")))?;
            let attrs = s
                .get_attributes(public, &[AttributeType::EcPoint])
                .map_err(HsmError::pkcs11("C_GetAttributeValue"))?;
            attrs
                .into_iter()
                .find_map(|a| match a {
                    Attribute::EcPoint(p) => Some(p),
                    _ => None,
                })
                .ok_or(HsmError::BadPublicKey { kind, len: 0 })
        })?;
        PublicKey::from_ec_point(kind, &point)
    }

    fn sign(&self, name: &KeyName, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        // The token offers raw ECDSA only: hash here, sign the digest there.
        let digest = Sha256::digest(message);
        let sig = self.with_key(name, Self::signing_kind(name), |s, key| {
            let result = match key.kind {
                KeyKind::Ed25519 => s.sign(
                    &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                    key.handle,
                    message,
                ),
                _ => s.sign(&Mechanism::Ecdsa, key.handle, &digest),
            };
            result.map_err(HsmError::pkcs11("C_Sign"))
        })?;
        if sig.len() != 64 {
            return Err(HsmError::Pkcs11 {
                operation: "C_Sign",
                source: cryptoki::error::Error::InvalidValue,
            });
        }
        Ok(sig)
    }

    fn encrypt(&self, name: &KeyName, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, HsmError> {
        // A random 96-bit nonce per message (NIST SP 800-38D §8.2.2); a KEK
        // seals one data key per record, far below the 2^32 message limit.
        let mut nonce = [0u8; GCM_NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| HsmError::Sealed("the OS random source failed"))?;
        let ct = self.with_key(
            name,
            |k| check_kind(name, k, KeyKind::Aes256),
            |s, key| {
                let mut iv = nonce;
                let params = GcmParams::new(&mut iv, aad, (GCM_TAG_LEN as u64 * 8).into())
                    .map_err(HsmError::pkcs11("GCM parameters"))?;
                s.encrypt(&Mechanism::AesGcm(params), key.handle, plaintext)
                    .map_err(HsmError::pkcs11("C_Encrypt"))
            },
        )?;
        Ok([&nonce[..], &ct].concat())
    }

    fn decrypt(
        &self,
        name: &KeyName,
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let check = |k| check_kind(name, k, KeyKind::Aes256);
        let Some((nonce, body)) = split_gcm(ciphertext) else {
            // Still name a missing or wrong key before blaming the input.
            let k = self
                .key(name)?
                .ok_or_else(|| HsmError::KeyMissing(name.to_string()))?;
            check(k.kind)?;
            return Err(HsmError::Decrypt);
        };
        let result = self.with_key(name, check, |s, key| {
            let mut iv = nonce;
            let params = GcmParams::new(&mut iv, aad, (GCM_TAG_LEN as u64 * 8).into())
                .map_err(HsmError::pkcs11("GCM parameters"))?;
            s.decrypt(&Mechanism::AesGcm(params), key.handle, body)
                .map_err(HsmError::pkcs11("C_Decrypt"))
        });
        match result {
            Ok(pt) => Ok(Zeroizing::new(pt)),
            // Modules report a tag mismatch variously (SoftHSM: CKR_GENERAL_ERROR).
            Err(e) if e.rv().is_some() && !e.needs_new_session() && !stale_handle(&e) => {
                Err(HsmError::Decrypt)
            }
            Err(e) => Err(e),
        }
    }

    fn list(&self) -> Result<Vec<KeyInfo>, HsmError> {
        let mut keys = self.run(|s| {
            let objs = s
                .find_objects(&[Attribute::Token(true)])
                .map_err(HsmError::pkcs11("C_FindObjects"))?;
            let mut out = Vec::new();
            for o in objs {
                let attrs = s
                    .get_attributes(
                        o,
                        &[
                            AttributeType::Label,
                            AttributeType::Class,
                            AttributeType::KeyType,
                        ],
                    )
                    .map_err(HsmError::pkcs11("C_GetAttributeValue"))?;
                if let Some((name, kind)) = key_identity(&attrs) {
                    out.push(KeyInfo {
                        name,
                        kind,
                        public: None,
                    });
                }
            }
            Ok(out)
        })?;
        for k in &mut keys {
            if k.kind.is_signing() {
                k.public = Some(self.public_key(&k.name)?);
            }
        }
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(keys)
    }

    fn destroy(&self, name: &KeyName) -> Result<bool, HsmError> {
        let _one_at_a_time = self.generating.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.run(|s| {
            let objs = s
                .find_objects(&[
                    Attribute::Token(true),
                    Attribute::Label(name.label().into_bytes()),
                ])
                .map_err(HsmError::pkcs11("C_FindObjects"))?;
            for o in &objs {
                s.destroy_object(*o)
                    .map_err(HsmError::pkcs11("C_DestroyObject"))?;
            }
            Ok(objs.len())
        })?;
        self.handles
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        self.known
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if n > 0 {
            tracing::info!(key = %name, "destroyed a key in the HSM");
        }
        Ok(n > 0)
    }
}

fn check_kind(name: &KeyName, actual: KeyKind, wanted: KeyKind) -> Result<(), HsmError> {
    if actual == wanted {
        Ok(())
    } else {
        Err(HsmError::WrongKind {
            name: name.to_string(),
            actual: actual.to_string(),
            wanted,
        })
    }
}

/// The private or secret key object labelled for `name`.
fn find_key(s: &Session, name: &KeyName) -> Result<Option<KeyObject>, HsmError> {
    let label = name.label().into_bytes();
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::SECRET_KEY] {
        let objs = s
            .find_objects(&[
                Attribute::Token(true),
                Attribute::Class(class),
                Attribute::Label(label.clone()),
            ])
            .map_err(HsmError::pkcs11("C_FindObjects"))?;
        if objs.len() > 1 {
            tracing::warn!(key = %name, count = objs.len(), "several key objects share one label; using the first");
        }
        if let Some(&handle) = objs.first() {
            let attrs = s
                .get_attributes(
                    handle,
                    &[
                        AttributeType::Label,
                        AttributeType::Class,
                        AttributeType::KeyType,
                    ],
                )
                .map_err(HsmError::pkcs11("C_GetAttributeValue"))?;
            let (_, kind) = key_identity(&attrs).ok_or_else(|| HsmError::WrongKind {
                name: name.to_string(),
                actual: "a key type zeroth does not use".into(),
                wanted: KeyKind::Ed25519,
            })?;
            return Ok(Some(KeyObject { handle, kind }));
        }
    }
    Ok(None)
}

/// Name and kind of a private/secret key object labelled by zeroth.
fn key_identity(attrs: &[Attribute]) -> Option<(KeyName, KeyKind)> {
    let mut name = None;
    let mut class = None;
    let mut key_type = None;
    for a in attrs {
        match a {
            Attribute::Label(l) => name = KeyName::from_label(l),
            Attribute::Class(c) => class = Some(*c),
            Attribute::KeyType(t) => key_type = Some(*t),
            _ => {}
        }
    }
    let kind = match (class?, key_type?) {
        (ObjectClass::PRIVATE_KEY, KeyType::EC_EDWARDS) => KeyKind::Ed25519,
        (ObjectClass::PRIVATE_KEY, KeyType::EC) => KeyKind::EcdsaP256,
        (ObjectClass::SECRET_KEY, KeyType::AES) => KeyKind::Aes256,
        _ => return None,
    };
    Some((name?, kind))
}
