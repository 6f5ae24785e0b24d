//! A private PKCS#11 token: SoftHSM2 with its own configuration and token store.

use std::path::{Path, PathBuf};
use std::process::Command;

use secrecy::{ExposeSecret, SecretString};

use super::process::run;
use super::tools::{SOFTHSM2_MODULE, SOFTHSM2_UTIL};
use super::{random_password, version_of, LabDir, LabError};

/// The label the lab gives its token.
pub const TOKEN_LABEL: &str = "zeroth-lab";

/// An initialised SoftHSM2 token in a private token directory.
///
/// SoftHSM is a library, not a daemon: whoever loads the module with
/// `SOFTHSM2_CONF` pointing at [`SoftHsm::conf`] sees this token.
#[derive(Debug)]
pub struct SoftHsm {
    conf: PathBuf,
    module: PathBuf,
    pin_file: PathBuf,
    version: String,
    dir: LabDir,
}

impl SoftHsm {
    pub fn start() -> Result<Self, LabError> {
        let util = SOFTHSM2_UTIL.path()?;
        let module = SOFTHSM2_MODULE.path()?;
        let dir = LabDir::new("softhsm")?;
        let tokens = dir.subdir("tokens", 0o700)?;
        let conf = write_conf(&dir, &tokens)?;
        let pin = random_password();
        let so_pin = random_password();
        let pin_file = dir.write_private("user.pin", pin.expose_secret().as_bytes())?;
        run(
            "initialise the SoftHSM token",
            Command::new(&util)
                .env("SOFTHSM2_CONF", &conf)
                .args(["--init-token", "--free", "--label", TOKEN_LABEL])
                .arg("--pin")
                .arg(pin.expose_secret())
                .arg("--so-pin")
                .arg(so_pin.expose_secret()),
        )?;
        let version = version_of(&util, "--version")?;
        Ok(Self {
            conf,
            module,
            pin_file,
            version,
            dir,
        })
    }

    /// Saves this token (its directory of objects) and its PIN under `to`,
    /// for a fixture that needs the very keys a store was made with.
    pub fn save(&self, to: &Path) -> Result<(), LabError> {
        copy_tree(&self.dir.join("tokens"), &to.join("tokens"))?;
        std::fs::copy(&self.pin_file, to.join("user.pin"))
            .map_err(|e| LabError::io("save the token's PIN", e))?;
        Ok(())
    }

    /// A private copy of a token [saved](SoftHsm::save) under `saved`.
    pub fn from_saved(saved: &Path) -> Result<Self, LabError> {
        let module = SOFTHSM2_MODULE.path()?;
        let util = SOFTHSM2_UTIL.path()?;
        let dir = LabDir::new("softhsm")?;
        let tokens = dir.subdir("tokens", 0o700)?;
        copy_tree(&saved.join("tokens"), &tokens)?;
        let conf = write_conf(&dir, &tokens)?;
        let pin = std::fs::read(saved.join("user.pin"))
            .map_err(|e| LabError::io("read the saved token's PIN", e))?;
        let pin_file = dir.write_private("user.pin", &pin)?;
        let version = version_of(&util, "--version")?;
        Ok(Self {
            conf,
            module,
            pin_file,
            version,
            dir,
        })
    }

    /// The softhsm2.conf to export as `SOFTHSM2_CONF` before loading the module.
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// The PKCS#11 module (shared library) path.
    pub fn module(&self) -> &Path {
        &self.module
    }

    pub fn token_label(&self) -> &str {
        TOKEN_LABEL
    }

    /// A file (mode 0600) holding the token's user PIN.
    pub fn pin_file(&self) -> &Path {
        &self.pin_file
    }

    /// The user PIN, for tests that drive `pkcs11-tool`.
    pub fn pin(&self) -> Result<SecretString, LabError> {
        std::fs::read_to_string(&self.pin_file)
            .map(SecretString::from)
            .map_err(|e| LabError::io(format!("read {}", self.pin_file.display()), e))
    }

    /// The configuration zeroth's PKCS#11 key store uses for this token.
    pub fn pkcs11_config(&self) -> zeroth_hsm::Pkcs11Config {
        zeroth_hsm::Pkcs11Config {
            module: self.module.clone(),
            token: zeroth_hsm::TokenSelector::Label(TOKEN_LABEL.into()),
            pin: zeroth_hsm::PinSource::File(self.pin_file.clone()),
            max_sessions: 0,
        }
    }

    /// Points this process's SoftHSM at the lab token. SoftHSM reads
    /// `SOFTHSM2_CONF` once, when the module is initialised, so a process
    /// can use one lab token; call this before opening the module and
    /// before starting threads that read the environment.
    pub fn export_conf(&self) {
        std::env::set_var("SOFTHSM2_CONF", &self.conf);
    }

    /// The arguments `zeroth hsm …` (and friends) need to reach this token.
    pub fn zeroth_args(&self) -> Vec<std::ffi::OsString> {
        vec![
            "--module".into(),
            self.module.clone().into(),
            "--token-label".into(),
            TOKEN_LABEL.into(),
            "--pin-file".into(),
            self.pin_file.clone().into(),
        ]
    }

    /// `pkcs11-tool` (OpenSC), an independent client, logged in to this token.
    pub fn pkcs11_tool(&self) -> Result<Command, LabError> {
        let mut cmd = Command::new(super::tools::PKCS11_TOOL.path()?);
        cmd.env("SOFTHSM2_CONF", &self.conf)
            .arg("--module")
            .arg(&self.module)
            .args(["--token-label", TOKEN_LABEL, "--login", "--pin"])
            .arg(self.pin()?.expose_secret());
        Ok(cmd)
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Copies the files and directories under `from` into `to` (private modes).
fn copy_tree(from: &Path, to: &Path) -> Result<(), LabError> {
    use std::os::unix::fs::DirBuilderExt;
    let io = |e| LabError::io(format!("copy {} to {}", from.display(), to.display()), e);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(to)
        .map_err(io)?;
    for entry in std::fs::read_dir(from).map_err(io)? {
        let entry = entry.map_err(io)?;
        let target = to.join(entry.file_name());
        if entry.file_type().map_err(io)?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).map_err(io)?;
        }
    }
    Ok(())
}

/// A softhsm2.conf in `dir` whose tokens live in `tokens`.
fn write_conf(dir: &LabDir, tokens: &Path) -> Result<PathBuf, LabError> {
    dir.write(
        "softhsm2.conf",
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            tokens.display()
        )
        .as_bytes(),
        0o600,
    )
}
