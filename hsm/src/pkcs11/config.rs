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

/// Where an encrypted credential is looked for outside its unit (an
/// operator's root shell): `DIR/NAME.cred`, as the packaged units load
/// them, then systemd's own credential store, `DIR/NAME`.
pub const ENCRYPTED_CREDENTIALS: [(&str, &str); 2] =
    [("/etc/zeroth", ".cred"), ("/etc/credstore.encrypted", "")];

impl PinSource {
    /// Reads the PIN; one trailing newline is dropped. A systemd
    /// credential is read from `$CREDENTIALS_DIRECTORY` inside its unit;
    /// outside it (an offline command in a root shell) the same encrypted
    /// credential is decrypted with `systemd-creds`, which only root can.
    pub fn read(&self) -> Result<SecretString, HsmError> {
        let refused = |reason: String| HsmError::PinSource {
            source_name: self.to_string(),
            reason,
        };
        let bytes = match self {
            Self::File(p) => {
                let mut file = std::fs::File::open(p).map_err(|e| refused(e.to_string()))?;
                check_private(&file).map_err(refused)?;
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut file, &mut bytes)
                    .map_err(|e| refused(e.to_string()))?;
                bytes
            }
            Self::SystemdCredential(name) => match std::env::var_os("CREDENTIALS_DIRECTORY") {
                Some(dir) => {
                    std::fs::read(Path::new(&dir).join(name)).map_err(|e| refused(e.to_string()))?
                }
                None => decrypt_credential(name).map_err(refused)?,
            },
        };
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

/// Decrypts the encrypted credential `name` outside its unit, with
/// `systemd-creds decrypt` (the host key and the TPM it was sealed to are
/// root's).
fn decrypt_credential(name: &str) -> Result<Vec<u8>, String> {
    let file = ENCRYPTED_CREDENTIALS
        .iter()
        .map(|(dir, ext)| PathBuf::from(format!("{dir}/{name}{ext}")))
        .find(|p| p.exists())
        .ok_or_else(|| {
            format!(
                "$CREDENTIALS_DIRECTORY is not set (this is not the unit) and no encrypted credential {} exists to decrypt",
                ENCRYPTED_CREDENTIALS
                    .iter()
                    .map(|(dir, ext)| format!("{dir}/{name}{ext}"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            )
        })?;
    let out = std::process::Command::new("systemd-creds")
        .arg("decrypt")
        .arg(format!("--name={name}"))
        .arg(&file)
        .arg("-")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "cannot run systemd-creds to decrypt {}: {e}",
                file.display()
            )
        })?;
    if !out.status.success() {
        return Err(format!(
            "systemd-creds could not decrypt {} ({}): run this command as root, on the host the credential was made on",
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

/// A PIN file must be this account's (or root's) and closed to everyone
/// else: a PIN others can read is a PIN others have.
fn check_private(file: &std::fs::File) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "the PIN file is open to group or others (mode {mode:04o}): chmod 600 it"
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(format!(
            "the PIN file belongs to uid {}, neither this account (uid {me}) nor root: chown it",
            meta.uid()
        ));
    }
    Ok(())
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

    fn write_private(p: &std::path::Path, contents: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(p, contents).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn a_pin_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pin");
        write_private(&p, "1234");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = PinSource::File(p.clone()).read().unwrap_err().to_string();
        assert!(
            err.contains("mode 0640") && err.contains("chmod 600"),
            "{err}"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(PinSource::File(p).read().is_ok());
    }

    #[test]
    fn pin_file_drops_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pin");
        write_private(&p, "12 34\n");
        let pin = PinSource::File(p).read().unwrap();
        assert_eq!(pin.expose_secret(), "12 34");
    }

    #[test]
    fn missing_and_empty_pins_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = PinSource::File(dir.path().join("nope")).read().unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
        let p = dir.path().join("empty");
        write_private(&p, "\n");
        let empty = PinSource::File(p).read().unwrap_err();
        assert!(empty.to_string().contains("empty"), "{empty}");
    }

    #[test]
    fn pin_never_appears_in_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pin");
        write_private(&p, "s3cr3t-pin");
        let pin = PinSource::File(p).read().unwrap();
        assert!(!format!("{pin:?}").contains("s3cr3t-pin"));
    }
}
