//! TPMS_ATTEST (TPM 2.0 Part 2, §10.12) and TPMT_SIGNATURE (§11.3.4).

use super::alg;
use super::pcr::PcrSelection;
use super::wire::Reader;
use super::VerifyError;

/// TPM_GENERATED_VALUE: only the TPM writes this into structures it signs.
pub const TPM_GENERATED: u32 = 0xff54_4347;
pub const ST_ATTEST_CERTIFY: u16 = 0x8017;
pub const ST_ATTEST_QUOTE: u16 = 0x8018;

/// TPMS_CLOCK_INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockInfo {
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    pub safe: bool,
}

/// What was attested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attested {
    Quote {
        selection: PcrSelection,
        pcr_digest: Vec<u8>,
    },
    Certify {
        name: Vec<u8>,
        qualified_name: Vec<u8>,
    },
    Other(u16),
}

/// A parsed TPMS_ATTEST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    pub magic: u32,
    pub type_: u16,
    pub qualified_signer: Vec<u8>,
    pub extra_data: Vec<u8>,
    pub clock: ClockInfo,
    pub firmware_version: u64,
    pub attested: Attested,
}

impl Attestation {
    /// Parses TPMS_ATTEST bytes (what TPM2_Quote returns inside TPM2B_ATTEST).
    /// The magic and type are checked by the verifier, not here, so that
    /// each gets its own error.
    pub fn parse(bytes: &[u8]) -> Result<Self, VerifyError> {
        let mut r = Reader::new("TPMS_ATTEST", bytes);
        let magic = r.u32("magic")?;
        let type_ = r.u16("type")?;
        let qualified_signer = r.tpm2b("qualifiedSigner")?.to_vec();
        let extra_data = r.tpm2b("extraData")?.to_vec();
        let clock = ClockInfo {
            clock: r.u64("clockInfo.clock")?,
            reset_count: r.u32("clockInfo.resetCount")?,
            restart_count: r.u32("clockInfo.restartCount")?,
            safe: match r.u8("clockInfo.safe")? {
                0 => false,
                1 => true,
                v => {
                    return Err(VerifyError::Malformed {
                        structure: "TPMS_ATTEST",
                        reason: format!("clockInfo.safe is {v}, not YES or NO"),
                    })
                }
            },
        };
        let firmware_version = r.u64("firmwareVersion")?;
        let attested = match type_ {
            ST_ATTEST_QUOTE => {
                let selection = PcrSelection::read(&mut r)?;
                let pcr_digest = r.tpm2b("quote.pcrDigest")?.to_vec();
                Attested::Quote {
                    selection,
                    pcr_digest,
                }
            }
            ST_ATTEST_CERTIFY => Attested::Certify {
                name: r.tpm2b("certify.name")?.to_vec(),
                qualified_name: r.tpm2b("certify.qualifiedName")?.to_vec(),
            },
            other => {
                // Other attestation types are not parsed further.
                let _ = r.bytes(bytes.len() - r.position(), "attested")?;
                Attested::Other(other)
            }
        };
        r.finish()?;
        Ok(Self {
            magic,
            type_,
            qualified_signer,
            extra_data,
            clock,
            firmware_version,
            attested,
        })
    }
}

/// A parsed TPMT_SIGNATURE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    Ecdsa { hash: u16, r: Vec<u8>, s: Vec<u8> },
    RsaSsa { hash: u16, sig: Vec<u8> },
    RsaPss { hash: u16, sig: Vec<u8> },
}

impl Signature {
    pub fn parse(bytes: &[u8]) -> Result<Self, VerifyError> {
        let mut r = Reader::new("TPMT_SIGNATURE", bytes);
        let sig_alg = r.u16("sigAlg")?;
        let sig = match sig_alg {
            alg::ECDSA => Self::Ecdsa {
                hash: r.u16("hash")?,
                r: r.tpm2b("signatureR")?.to_vec(),
                s: r.tpm2b("signatureS")?.to_vec(),
            },
            alg::RSASSA => Self::RsaSsa {
                hash: r.u16("hash")?,
                sig: r.tpm2b("sig")?.to_vec(),
            },
            alg::RSAPSS => Self::RsaPss {
                hash: r.u16("hash")?,
                sig: r.tpm2b("sig")?.to_vec(),
            },
            other => {
                return Err(VerifyError::UnsupportedAlgorithm {
                    what: "signature",
                    id: other,
                })
            }
        };
        r.finish()?;
        Ok(sig)
    }

    pub fn scheme(&self) -> (u16, u16) {
        match self {
            Self::Ecdsa { hash, .. } => (alg::ECDSA, *hash),
            Self::RsaSsa { hash, .. } => (alg::RSASSA, *hash),
            Self::RsaPss { hash, .. } => (alg::RSAPSS, *hash),
        }
    }
}
