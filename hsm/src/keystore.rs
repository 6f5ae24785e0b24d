//! The `KeyStore` trait: what zeroth asks of a key backend.

use zeroize::Zeroizing;

use crate::{HsmError, KeyInfo, KeyKind, KeyName, PublicKey};

/// Length of the random nonce that starts every AES-GCM ciphertext.
pub const GCM_NONCE_LEN: usize = 12;
/// Length of the AES-GCM tag that ends every ciphertext.
pub const GCM_TAG_LEN: usize = 16;

/// Splits `nonce || ciphertext || tag` (what [`KeyStore::encrypt`] returns)
/// into the nonce and the rest; `None` if it is too short to hold a tag.
pub(crate) fn split_gcm(sealed: &[u8]) -> Option<([u8; GCM_NONCE_LEN], &[u8])> {
    if sealed.len() < GCM_NONCE_LEN + GCM_TAG_LEN {
        return None;
    }
    let (nonce, body) = sealed.split_first_chunk::<GCM_NONCE_LEN>()?;
    Some((*nonce, body))
}

/// A place where keys are generated and used without leaving it.
///
/// Calls block (a hardware round trip); async callers run them on a blocking
/// thread. Implementations are shared across threads.
pub trait KeyStore: Send + Sync {
    /// A short description of the backend, e.g. the module and token.
    fn describe(&self) -> String;

    /// Returns the key `name`, generating it as `kind` if it does not exist.
    /// Fails if it exists with another kind.
    fn get_or_generate(&self, name: &KeyName, kind: KeyKind) -> Result<KeyInfo, HsmError>;

    /// The public half of the signing key `name`.
    fn public_key(&self, name: &KeyName) -> Result<PublicKey, HsmError>;

    /// Signs `message`: pure Ed25519 (64 bytes) or ECDSA P-256 over its
    /// SHA-256 digest (64 bytes, r||s).
    fn sign(&self, name: &KeyName, message: &[u8]) -> Result<Vec<u8>, HsmError>;

    /// AES-256-GCM under key `name`: returns nonce || ciphertext || tag, with
    /// `aad` authenticated but not stored.
    fn encrypt(&self, name: &KeyName, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, HsmError>;

    /// Reverses [`KeyStore::encrypt`]; fails if the ciphertext, its tag or the
    /// `aad` differ from what was encrypted.
    fn decrypt(
        &self,
        name: &KeyName,
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, HsmError>;

    /// Every key zeroth holds in this store.
    fn list(&self) -> Result<Vec<KeyInfo>, HsmError>;

    /// Destroys the key `name`; `Ok(false)` if there was none.
    fn destroy(&self, name: &KeyName) -> Result<bool, HsmError>;
}
