//! What the TPM connection takes and gives: key families, wrapped key
//! blobs, quotes, the TPM's facts, and why an operation failed.

use std::fmt;

use tss_esapi::abstraction::{AsymmetricAlgorithmSelection, KeyCustomization};
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;

use crate::verify::pcr::PcrValues;

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
    #[error("invalid input for {operation}: {reason}")]
    Input {
        operation: &'static str,
        reason: String,
    },
    #[error("the TPM worker thread is gone")]
    WorkerGone,
}

pub(super) fn tpm_err(operation: &'static str) -> impl FnOnce(tss_esapi::Error) -> AttestError {
    move |e| AttestError::Tpm {
        operation,
        reason: e.to_string(),
    }
}

pub(super) fn input_err(operation: &'static str) -> impl FnOnce(tss_esapi::Error) -> AttestError {
    move |e| AttestError::Input {
        operation,
        reason: e.to_string(),
    }
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
    pub(super) fn selection(self) -> AsymmetricAlgorithmSelection {
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

/// Which attestation key to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AkAlgorithm {
    /// ECDSA over NIST P-256 with SHA-256 (the default: fast quotes).
    #[default]
    EccP256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 over RSA-2048.
    Rsa2048,
}

/// A key created in the TPM under the EK: its public area (TPM2B_PUBLIC)
/// and its private area wrapped by the TPM (TPM2B_PRIVATE contents), useless
/// outside that TPM. Safe to keep on disk.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyBlob {
    pub public: Vec<u8>,
    pub private: Vec<u8>,
}

impl fmt::Debug for KeyBlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KeyBlob {{ public: {} bytes, private: TPM-wrapped }}",
            self.public.len()
        )
    }
}

/// A quote and the PCR values it covers.
#[derive(Debug, Clone)]
pub struct Quote {
    /// TPMS_ATTEST as the TPM signed it.
    pub attest: Vec<u8>,
    /// TPMT_SIGNATURE.
    pub signature: Vec<u8>,
    pub pcrs: PcrValues,
}

/// Facts about the TPM, from TPM2_GetCapability.
#[derive(Debug, Clone)]
pub struct TpmInfo {
    pub manufacturer: String,
    pub vendor: String,
    pub firmware: String,
    pub pcr_banks: Vec<String>,
}

/// Makes a key a plain (unrestricted) signing key: it may sign any digest,
/// for mTLS, and is never a decryption key.
pub(super) struct UnrestrictedSigning;

impl KeyCustomization for UnrestrictedSigning {
    fn attributes(&self, b: ObjectAttributesBuilder) -> ObjectAttributesBuilder {
        b.with_restricted(false)
    }
}

/// The attestation key template as the TCG profile defines it.
pub(super) struct AkTemplate;

impl KeyCustomization for AkTemplate {}
