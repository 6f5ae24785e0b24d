//! Where the PKCS#11 backend finds its module, token and PIN.

use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::SecretString;

use crate::HsmError;

/// Which token to use. Slot numbers are not stable across restarts (SoftHSM
/// moves an initialised token to a random slot); labels and serials are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSelector {
    Label(String),
    Serial(String),
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Label(l) => write!(f, "labelled {l:?}"),
            Self::Serial(s) => write!(f, "with serial {s:?}"),
        }
    }
}

/// Where the user PIN comes from. Never the command line or the environment,
/// where other processes and crash reports can read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// A file readable only by zeroth's account.
    File(PathBuf),
    /// A systemd credential (`LoadCredentialEncrypted=NAME:…`), read from
    /// `$CREDENTIALS_DIRECTORY/NAME`.
    SystemdCredential(String),
}

impl fmt::Display for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => write!(f, "file {}", p.display()),
            Self::SystemdCredential(n) => write!(f, "systemd credential {n:?}"),
        }
    }
}

impl PinSource {
    /// Reads the PIN; one trailing newline is dropped.
    pub fn read(&self) -> Result<SecretString, HsmError> {
        let path = match self {
            Self::File(p) => p.clone(),
            Self::SystemdCredential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                    HsmError::PinSource {
                        source_name: self.to_string(),
                        reason: "$CREDENTIALS_DIRECTORY is not set (run under systemd with LoadCredential= or LoadCredentialEncrypted=)".into(),
                    }
                })?;
                Path::new(&dir).join(name)
            }
        };
        let bytes = std::fs::read(&path).map_err(|e| HsmError::PinSource {
            source_name: self.to_string(),
            reason: e.to_string(),
        })?;
        let mut text = String::from_utf8(bytes).map_err(|_| HsmError::PinSource {
            source_name: self.to_string(),
            reason: "the PIN is not UTF-8".into(),
        })?;
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        if text.is_empty() {
            return Err(HsmError::PinSource {
                source_name: self.to_string(),
                reason: "the PIN is empty".into(),
            });
        }
        Ok(SecretString::from(text))
    }
}

/// Everything the PKCS#11 backend needs to reach its keys.
#[derive(Debug, Clone)]
pub struct Pkcs11Config {
    /// The module's shared library, e.g. /usr/lib/softhsm/libsofthsm2.so.
    pub module: PathBuf,
    pub token: TokenSelector,
    pub pin: PinSource,
    /// Most sessions opened at once; 0 means two per CPU.
    pub max_sessions: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn pin_file_drops_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pin");
        std::fs::write(&p, "12 34\n").unwrap();
        let pin = PinSource::File(p).read().unwrap();
        assert_eq!(pin.expose_secret(), "12 34");
    }

    #[test]
    fn missing_and_empty_pins_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = PinSource::File(dir.path().join("nope")).read().unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
        let p = dir.path().join("empty");
        std::fs::write(&p, "\n").unwrap();
        let empty = PinSource::File(p).read().unwrap_err();
        assert!(empty.to_string().contains("empty"), "{empty}");
    }

    #[test]
    fn pin_never_appears_in_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pin");
        std::fs::write(&p, "s3cr3t-pin").unwrap();
        let pin = PinSource::File(p).read().unwrap();
        assert!(!format!("{pin:?}").contains("s3cr3t-pin"));
    }
}
