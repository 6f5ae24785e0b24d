//! Envelope encryption of secrets stored at rest.
//!
//! Each value gets a fresh 256-bit data key; the value is sealed with it in
//! software (AES-256-GCM) and the data key is sealed by the key-encryption key
//! inside the key store. Both layers authenticate the value's *binding*
//! (table, record, column), so a ciphertext copied into another row or
//! column does not open.
//!
//! Layout (version 1):
//! `"ZS1" || u16 BE wrapped-key length || wrapped data key || nonce || ciphertext || tag`

use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use crate::keystore::{GCM_NONCE_LEN, GCM_TAG_LEN};
use crate::{HsmError, KeyKind, KeyName, KeyStore};

const MAGIC: &[u8; 3] = b"ZS1";

/// Where a sealed value lives: it opens only there.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub table: &'a str,
    pub record: &'a str,
    pub column: &'a str,
}

impl Binding<'_> {
    /// Unambiguous associated data: each part length-prefixed, under a
    /// purpose tag that keeps data-key AAD and value AAD apart.
    fn aad(&self, purpose: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        for part in [
            purpose,
            self.table.as_bytes(),
            self.record.as_bytes(),
            self.column.as_bytes(),
        ] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }
}

/// Seals and opens secrets under a key-encryption key held by a [`KeyStore`].
#[derive(Clone)]
pub struct Sealer {
    store: Arc<dyn KeyStore>,
    kek: KeyName,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").field("kek", &self.kek).finish()
    }
}

impl Sealer {
    /// Uses (creating if needed) the AES-256 key `kek` in `store`.
    pub fn new(store: Arc<dyn KeyStore>, kek: KeyName) -> Result<Self, HsmError> {
        store.get_or_generate(&kek, KeyKind::Aes256)?;
        Ok(Self { store, kek })
    }

    pub fn seal(&self, binding: Binding<'_>, plaintext: &[u8]) -> Result<Vec<u8>, HsmError> {
        let mut dek = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut dek[..])
            .map_err(|_| HsmError::Sealed("the OS random source failed"))?;
        let wrapped = self
            .store
            .encrypt(&self.kek, &dek[..], &binding.aad(b"zeroth data key"))?;
        let wrapped_len =
            u16::try_from(wrapped.len()).map_err(|_| HsmError::Sealed("wrapped key too long"))?;
        let mut nonce = [0u8; GCM_NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| HsmError::Sealed("the OS random source failed"))?;
        let cipher =
            Aes256Gcm::new_from_slice(&dek[..]).map_err(|_| HsmError::Sealed("bad data key"))?;
        let ct = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &binding.aad(b"zeroth sealed value"),
                },
            )
            .map_err(|_| HsmError::Sealed("AES-GCM encryption failed"))?;
        let mut out = Vec::with_capacity(5 + wrapped.len() + GCM_NONCE_LEN + ct.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&wrapped_len.to_be_bytes());
        out.extend_from_slice(&wrapped);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    pub fn open(
        &self,
        binding: Binding<'_>,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let rest = sealed
            .strip_prefix(MAGIC)
            .ok_or(HsmError::Sealed("unknown format (bad magic)"))?;
        let (len, rest) = rest
            .split_first_chunk::<2>()
            .ok_or(HsmError::Sealed("truncated header"))?;
        let len = usize::from(u16::from_be_bytes(*len));
        if rest.len() < len + GCM_NONCE_LEN + GCM_TAG_LEN {
            return Err(HsmError::Sealed("truncated"));
        }
        let (wrapped, rest) = rest.split_at(len);
        let (nonce, ct) = rest.split_at(GCM_NONCE_LEN);
        let nonce: [u8; GCM_NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| HsmError::Sealed("truncated"))?;
        let dek = self
            .store
            .decrypt(&self.kek, wrapped, &binding.aad(b"zeroth data key"))?;
        let cipher = Aes256Gcm::new_from_slice(&dek).map_err(|_| HsmError::Decrypt)?;
        cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ct,
                    aad: &binding.aad(b"zeroth sealed value"),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| HsmError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SoftwareKeyStore;

    fn sealer() -> Sealer {
        let store: Arc<dyn KeyStore> = Arc::new(SoftwareKeyStore::new_insecure());
        Sealer::new(store, KeyName::new("store-kek").unwrap()).unwrap()
    }

    const HERE: Binding<'static> = Binding {
        table: "db_connections",
        record: "primary",
        column: "admin_password",
    };

    #[test]
    fn sealed_values_open_only_where_they_were_sealed() {
        let s = sealer();
        let sealed = s.seal(HERE, b"hunter2").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(&s.open(HERE, &sealed).unwrap()[..], b"hunter2");
        for moved in [
            Binding {
                record: "other",
                ..HERE
            },
            Binding {
                column: "admin_user",
                ..HERE
            },
            Binding {
                table: "roles",
                ..HERE
            },
        ] {
            assert!(matches!(s.open(moved, &sealed), Err(HsmError::Decrypt)));
        }
    }

    #[test]
    fn every_seal_uses_a_fresh_data_key() {
        let s = sealer();
        assert_ne!(s.seal(HERE, b"x").unwrap(), s.seal(HERE, b"x").unwrap());
    }

    #[test]
    fn tampering_anywhere_is_detected_and_never_panics() {
        let s = sealer();
        let sealed = s.seal(HERE, b"a secret value").unwrap();
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            assert!(s.open(HERE, &t).is_err(), "flip at byte {i} went unnoticed");
        }
        for n in 0..sealed.len() {
            assert!(s.open(HERE, &sealed[..n]).is_err(), "truncated to {n}");
        }
    }

    #[test]
    fn binding_parts_cannot_be_shifted_between_fields() {
        let a = Binding {
            table: "ab",
            record: "c",
            column: "d",
        };
        let b = Binding {
            table: "a",
            record: "bc",
            column: "d",
        };
        assert_ne!(a.aad(b"p"), b.aad(b"p"));
    }
}
