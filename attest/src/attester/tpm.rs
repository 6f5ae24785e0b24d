//! A connection to a TPM 2.0 through a TCTI.

use std::fmt;
use std::str::FromStr;

use tss_esapi::abstraction::ek::retrieve_ek_pubcert;
use tss_esapi::abstraction::AsymmetricAlgorithmSelection;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::Context;

/// TPM2_GetRandom returns at most one SHA-256 digest's worth per call.
const MAX_RANDOM_CHUNK: usize = 32;

/// Why a TPM operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    #[error("invalid TCTI {tcti:?}: {reason} (expected e.g. device:/dev/tpmrm0, swtpm:host=127.0.0.1,port=2321, tabrmd)")]
    Tcti { tcti: String, reason: String },
    #[error("cannot open the TPM at {tcti}: {reason}")]
    Open { tcti: String, reason: String },
    #[error("TPM {operation} failed: {reason}")]
    Tpm {
        operation: &'static str,
        reason: String,
    },
}

/// Which endorsement key family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EkAlgorithm {
    /// RSA-2048, certificate at NV 0x01c00002 (the TCG default).
    Rsa2048,
    /// ECC NIST P-256, certificate at NV 0x01c0000a.
    EccP256,
    /// ECC NIST P-384, certificate at NV 0x01c00016.
    EccP384,
}

impl EkAlgorithm {
    fn selection(self) -> AsymmetricAlgorithmSelection {
        match self {
            Self::Rsa2048 => AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
            Self::EccP256 => AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
            Self::EccP384 => AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP384),
        }
    }
}

impl fmt::Display for EkAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rsa2048 => "RSA-2048",
            Self::EccP256 => "ECC P-256",
            Self::EccP384 => "ECC P-384",
        })
    }
}

/// An open TPM. The ESAPI context is not thread-safe: a `Tpm` is used from
/// one thread at a time.
pub struct Tpm {
    ctx: Context,
    tcti: String,
}

impl fmt::Debug for Tpm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tpm").field("tcti", &self.tcti).finish()
    }
}

impl Tpm {
    /// Opens the TPM named by a TCTI string (`device:/dev/tpmrm0`,
    /// `swtpm:host=…,port=…`, `tabrmd`).
    pub fn open(tcti: &str) -> Result<Self, AttestError> {
        let conf = TctiNameConf::from_str(tcti).map_err(|e| AttestError::Tcti {
            tcti: tcti.to_owned(),
            reason: e.to_string(),
        })?;
        let ctx = Context::new(conf).map_err(|e| AttestError::Open {
            tcti: tcti.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            ctx,
            tcti: tcti.to_owned(),
        })
    }

    /// `n` bytes from the TPM's random number generator (TPM2_GetRandom).
    pub fn random(&mut self, n: usize) -> Result<Vec<u8>, AttestError> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            // One TPM2_GetRandom returns at most the size of the largest digest.
            let want = (n - out.len()).min(MAX_RANDOM_CHUNK);
            let d = self.ctx.get_random(want).map_err(|e| AttestError::Tpm {
                operation: "GetRandom",
                reason: e.to_string(),
            })?;
            if d.is_empty() {
                return Err(AttestError::Tpm {
                    operation: "GetRandom",
                    reason: "the TPM returned no bytes".into(),
                });
            }
            out.extend_from_slice(d.value());
        }
        Ok(out)
    }

    /// The EK certificate (DER) the manufacturer stored in NV for `alg`.
    pub fn ek_certificate(&mut self, alg: EkAlgorithm) -> Result<Vec<u8>, AttestError> {
        retrieve_ek_pubcert(&mut self.ctx, alg.selection()).map_err(|e| AttestError::Tpm {
            operation: "NV_Read of the EK certificate",
            reason: format!("{alg}: {e}"),
        })
    }

    pub fn tcti(&self) -> &str {
        &self.tcti
    }
}
