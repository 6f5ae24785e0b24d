//! Loading a PKCS#11 module and finding a token by label.

use std::fmt;
use std::path::{Path, PathBuf};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::slot::Slot;

use super::TokenSelector;
use crate::HsmError;

/// A loaded and initialised PKCS#11 module.
pub struct Module {
    ctx: Pkcs11,
    path: PathBuf,
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module").field("path", &self.path).finish()
    }
}

impl Module {
    /// Loads the module's shared library and calls C_Initialize with OS locking,
    /// so one context can be shared by many threads.
    pub fn load(path: &Path) -> Result<Self, HsmError> {
        let ctx = Pkcs11::new(path).map_err(|e| HsmError::ModuleLoad {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            // Another part of this process initialised the module: share it.
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => {
                // When files are to blame, say so instead of PKCS#11's prose.
                let access = super::access::diagnose(path);
                let reason = match (&e, access.is_empty()) {
                    (CkError::Pkcs11(rv, _), false) => {
                        format!("C_Initialize failed ({rv:?}){access}")
                    }
                    _ => format!("C_Initialize: {e}{access}"),
                };
                return Err(HsmError::ModuleLoad {
                    path: path.to_owned(),
                    reason,
                });
            }
        }
        Ok(Self {
            ctx,
            path: path.to_owned(),
        })
    }

    /// C_Finalize then C_Initialize: every session and handle of the old
    /// state is gone, and the module looks at its tokens afresh (what a
    /// token that disappeared and came back needs).
    pub(crate) fn reinitialize(&self) -> Result<(), HsmError> {
        // Fails harmlessly if another caller finalised already.
        let _ = self.ctx.clone().finalize();
        match self
            .ctx
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
            Err(e) => Err(HsmError::ModuleLoad {
                path: self.path.clone(),
                reason: format!("C_Initialize: {e}"),
            }),
        }
    }

    pub(crate) fn ctx(&self) -> &Pkcs11 {
        &self.ctx
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The module's own description, e.g. "Implementation of PKCS11 2.40".
    pub fn description(&self) -> Result<String, HsmError> {
        let info = self
            .ctx
            .get_library_info()
            .map_err(HsmError::pkcs11("C_GetInfo"))?;
        Ok(format!(
            "{} {} (library {})",
            info.manufacturer_id().trim(),
            info.library_description().trim(),
            info.library_version()
        ))
    }

    /// Finds the token. Slot numbers are not stable (SoftHSM moves an
    /// initialised token to a random slot), labels and serials are.
    pub fn find_slot(&self, token: &TokenSelector) -> Result<Slot, HsmError> {
        let mut present = Vec::new();
        let slots = self
            .ctx
            .get_slots_with_token()
            .map_err(HsmError::pkcs11("C_GetSlotList"))?;
        for slot in slots {
            let info = self
                .ctx
                .get_token_info(slot)
                .map_err(HsmError::pkcs11("C_GetTokenInfo"))?;
            let label = info.label().trim_end();
            let serial = info.serial_number().trim_end();
            let hit = match token {
                TokenSelector::Label(l) => l == label,
                TokenSelector::Serial(s) => s == serial,
            };
            if hit {
                return Ok(slot);
            }
            present.push(format!("{label:?} (serial {serial})"));
        }
        Err(HsmError::TokenAbsent {
            token: token.to_string(),
            module: self.path.clone(),
            present: if present.is_empty() {
                "none".into()
            } else {
                present.join(", ")
            },
            access: super::access::diagnose(&self.path),
        })
    }

    /// Logs the user out of the token for this whole process (PKCS#11 login
    /// state is per application). Every session of every key store in the
    /// process loses its login; the stores log in again on next use.
    pub fn logout(&self, token: &TokenSelector) -> Result<(), HsmError> {
        let slot = self.find_slot(token)?;
        let session = self
            .ctx
            .open_ro_session(slot)
            .map_err(HsmError::pkcs11("C_OpenSession"))?;
        session.logout().map_err(HsmError::pkcs11("C_Logout"))
    }

    /// Describes the token: identity and mechanisms.
    pub fn token_summary(&self, token: &TokenSelector) -> Result<TokenSummary, HsmError> {
        let slot = self.find_slot(token)?;
        let info = self
            .ctx
            .get_token_info(slot)
            .map_err(HsmError::pkcs11("C_GetTokenInfo"))?;
        let mechanisms = self
            .ctx
            .get_mechanism_list(slot)
            .map_err(HsmError::pkcs11("C_GetMechanismList"))?;
        Ok(TokenSummary {
            label: info.label().trim_end().to_owned(),
            manufacturer: info.manufacturer_id().trim_end().to_owned(),
            model: info.model().trim_end().to_owned(),
            serial: info.serial_number().trim_end().to_owned(),
            mechanisms,
        })
    }
}

/// What zeroth needs a token to do, and the PKCS#11 mechanisms each needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Generate Ed25519 keys and sign with pure EdDSA (SSH CAs).
    Ed25519,
    /// Generate P-256 keys and sign digests with ECDSA (X.509 CA, JWTs).
    EcdsaP256,
    /// Generate AES-256 keys and seal with AES-GCM (the store's KEK).
    AesGcm,
}

impl Capability {
    pub const ALL: [Capability; 3] = [Self::Ed25519, Self::EcdsaP256, Self::AesGcm];

    pub fn required_mechanisms(self) -> [MechanismType; 2] {
        match self {
            Self::Ed25519 => [
                MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
                MechanismType::EDDSA,
            ],
            Self::EcdsaP256 => [MechanismType::ECC_KEY_PAIR_GEN, MechanismType::ECDSA],
            Self::AesGcm => [MechanismType::AES_KEY_GEN, MechanismType::AES_GCM],
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ed25519 => "Ed25519",
            Self::EcdsaP256 => "ECDSA",
            Self::AesGcm => "AES-GCM",
        })
    }
}

/// A token's identity and the mechanisms it offers.
#[derive(Debug, Clone)]
pub struct TokenSummary {
    pub label: String,
    pub manufacturer: String,
    pub model: String,
    pub serial: String,
    pub mechanisms: Vec<MechanismType>,
}

impl TokenSummary {
    /// True if the token offers every mechanism `cap` needs.
    pub fn supports(&self, cap: Capability) -> bool {
        cap.required_mechanisms()
            .iter()
            .all(|m| self.mechanisms.contains(m))
    }

    /// The mechanisms `cap` needs that the token lacks, by PKCS#11 name.
    pub fn missing(&self, cap: Capability) -> Vec<String> {
        cap.required_mechanisms()
            .iter()
            .filter(|m| !self.mechanisms.contains(m))
            .map(|m| m.to_string())
            .collect()
    }
}
