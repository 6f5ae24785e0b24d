use std::path::PathBuf;

/// Why the HSM could not do what was asked. Never carries a PIN or key material.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    #[error("cannot load the PKCS#11 module {path}: {reason}")]
    ModuleLoad { path: PathBuf, reason: String },
    #[error("no token labelled {label:?} in {module}; tokens present: {present}")]
    TokenAbsent {
        label: String,
        module: PathBuf,
        present: String,
    },
    #[error("PKCS#11 {operation} failed: {source}")]
    Pkcs11 {
        operation: &'static str,
        #[source]
        source: cryptoki::error::Error,
    },
}

impl HsmError {
    pub(crate) fn pkcs11(operation: &'static str) -> impl FnOnce(cryptoki::error::Error) -> Self {
        move |source| Self::Pkcs11 { operation, source }
    }
}
