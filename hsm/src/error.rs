use std::path::PathBuf;

use cryptoki::error::{Error as CkError, RvError};

use crate::KeyKind;

/// Why the HSM could not do what was asked. Never carries a PIN or key material.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    #[error("cannot load the PKCS#11 module {path}: {reason}")]
    ModuleLoad { path: PathBuf, reason: String },
    #[error("no token {token} in {module}; tokens present: {present}{access}")]
    TokenAbsent {
        token: String,
        module: PathBuf,
        present: String,
        /// Files the module could not read, and the account (or empty).
        access: String,
    },
    #[error("the HSM token is no longer present (removed or failed): {0}")]
    TokenGone(String),
    /// The module no longer shows what the token holds (a key found before
    /// is not found now): its view must be built afresh, by reinitialising.
    #[error("the PKCS#11 module's view of the token is stale: {0}")]
    TokenStale(String),
    #[error("the PIN for token {token} was refused (wrong PIN)")]
    WrongPin { token: String },
    #[error("the PIN of token {token} is locked; reset it with the SO PIN")]
    PinLocked { token: String },
    #[error("cannot read the HSM PIN from {source_name}: {reason}")]
    PinSource { source_name: String, reason: String },
    #[error("the token does not support mechanism {mechanism}, needed for {purpose}")]
    MechanismUnsupported {
        mechanism: String,
        purpose: &'static str,
    },
    #[error("no key named {0} in the HSM")]
    KeyMissing(String),
    #[error("key {name} is {actual}, not {wanted}")]
    WrongKind {
        name: String,
        actual: String,
        wanted: KeyKind,
    },
    #[error("invalid key name {0:?}: use 1-64 characters a-z 0-9 . _ -, starting with a letter or digit")]
    BadKeyName(String),
    #[error("the token returned a malformed {kind} public key ({len} bytes)")]
    BadPublicKey { kind: KeyKind, len: usize },
    #[error("decryption failed: the ciphertext, its tag or its associated data do not match")]
    Decrypt,
    #[error("the sealed value is malformed: {0}")]
    Sealed(&'static str),
    #[error("PKCS#11 {operation} failed: {source}")]
    Pkcs11 {
        operation: &'static str,
        #[source]
        source: CkError,
    },
}

impl HsmError {
    pub(crate) fn pkcs11(operation: &'static str) -> impl FnOnce(CkError) -> Self {
        move |source| Self::Pkcs11 { operation, source }
    }

    /// The PKCS#11 return value behind this error, if any.
    pub(crate) fn rv(&self) -> Option<RvError> {
        match self {
            Self::Pkcs11 {
                source: CkError::Pkcs11(rv, _),
                ..
            } => Some(*rv),
            _ => None,
        }
    }

    /// True for failures a fresh session and login may cure: the module
    /// dropped our sessions or our login (token re-inserted, module
    /// restarted), or the slot we knew the token by is gone (a module
    /// reinitialised while the token was away numbers its slots afresh).
    pub(crate) fn needs_new_session(&self) -> bool {
        matches!(
            self.rv(),
            Some(
                RvError::SessionHandleInvalid
                    | RvError::SessionClosed
                    | RvError::UserNotLoggedIn
                    | RvError::DeviceRemoved
                    | RvError::TokenNotPresent
                    | RvError::DeviceError
                    | RvError::CryptokiNotInitialized
                    | RvError::SlotIdInvalid
                    | RvError::TokenNotRecognized
            )
        ) || matches!(self, Self::TokenGone(_) | Self::TokenStale(_))
    }
}
