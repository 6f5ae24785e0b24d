//! TPM2B_PUBLIC / TPMT_PUBLIC (TPM 2.0 Part 2, §12.2) and object Names.

use std::fmt;

use super::alg::{self, HashAlg};
use super::wire::Reader;
use super::VerifyError;

/// TPMA_OBJECT bits (Part 2, §8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectAttributes(pub u32);

impl ObjectAttributes {
    pub const FIXED_TPM: u32 = 1 << 1;
    pub const ST_CLEAR: u32 = 1 << 2;
    pub const FIXED_PARENT: u32 = 1 << 4;
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    pub const NO_DA: u32 = 1 << 10;
    pub const ENCRYPTED_DUPLICATION: u32 = 1 << 11;
    pub const RESTRICTED: u32 = 1 << 16;
    pub const DECRYPT: u32 = 1 << 17;
    pub const SIGN: u32 = 1 << 18;

    pub fn has(self, bit: u32) -> bool {
        self.0 & bit == bit
    }

    pub fn bit_name(bit: u32) -> &'static str {
        match bit {
            Self::FIXED_TPM => "fixedTPM",
            Self::ST_CLEAR => "stClear",
            Self::FIXED_PARENT => "fixedParent",
            Self::SENSITIVE_DATA_ORIGIN => "sensitiveDataOrigin",
            Self::USER_WITH_AUTH => "userWithAuth",
            Self::ADMIN_WITH_POLICY => "adminWithPolicy",
            Self::NO_DA => "noDA",
            Self::ENCRYPTED_DUPLICATION => "encryptedDuplication",
            Self::RESTRICTED => "restricted",
            Self::DECRYPT => "decrypt",
            Self::SIGN => "sign",
            _ => "unknown",
        }
    }
}

/// TPMT_SYM_DEF_OBJECT: the symmetric algorithm of a storage key (an EK's
/// is AES-128-CFB), or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymDef {
    pub alg: u16,
    pub key_bits: u16,
    pub mode: u16,
}

/// The signing or encryption scheme a key is bound to (alg NULL: any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheme {
    pub alg: u16,
    pub hash: Option<u16>,
}

/// The public key material.
#[derive(Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    Rsa {
        bits: u16,
        exponent: u32,
        modulus: Vec<u8>,
    },
    Ecc {
        curve: u16,
        kdf: Scheme,
        x: Vec<u8>,
        y: Vec<u8>,
    },
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rsa { bits, .. } => write!(f, "Rsa({bits} bits)"),
            Self::Ecc { curve, .. } => write!(f, "Ecc(curve 0x{curve:04x})"),
        }
    }
}

/// A parsed TPMT_PUBLIC, with its exact bytes kept for the Name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Public {
    tpmt: Vec<u8>,
    pub name_alg: HashAlg,
    pub attributes: ObjectAttributes,
    pub auth_policy: Vec<u8>,
    pub symmetric: Option<SymDef>,
    pub scheme: Scheme,
    pub key: KeyMaterial,
}

impl Public {
    /// Parses a TPM2B_PUBLIC (u16 size + TPMT_PUBLIC), as tpm2-tools and
    /// tss-esapi marshal it.
    pub fn from_tpm2b(bytes: &[u8]) -> Result<Self, VerifyError> {
        let mut r = Reader::new("TPM2B_PUBLIC", bytes);
        let inner = r.tpm2b("size")?;
        r.finish()?;
        Self::from_tpmt(inner)
    }

    /// Parses a TPMT_PUBLIC.
    pub fn from_tpmt(bytes: &[u8]) -> Result<Self, VerifyError> {
        let mut r = Reader::new("TPMT_PUBLIC", bytes);
        let type_ = r.u16("type")?;
        let name_alg = HashAlg::from_tpm(r.u16("nameAlg")?)?;
        let attributes = ObjectAttributes(r.u32("objectAttributes")?);
        let auth_policy = r.tpm2b("authPolicy")?.to_vec();
        let (symmetric, scheme, key) = match type_ {
            alg::RSA => {
                let symmetric = sym_def(&mut r)?;
                let scheme = scheme(&mut r, "RSA scheme")?;
                let bits = r.u16("keyBits")?;
                let exponent = r.u32("exponent")?;
                let modulus = r.tpm2b("unique.rsa")?.to_vec();
                if modulus.len() * 8 != usize::from(bits) {
                    return Err(VerifyError::Malformed {
                        structure: "TPMT_PUBLIC",
                        reason: format!(
                            "a {bits}-bit RSA key with a {}-byte modulus",
                            modulus.len()
                        ),
                    });
                }
                (
                    symmetric,
                    scheme,
                    KeyMaterial::Rsa {
                        bits,
                        exponent,
                        modulus,
                    },
                )
            }
            alg::ECC => {
                let symmetric = sym_def(&mut r)?;
                let scheme = scheme(&mut r, "ECC scheme")?;
                let curve = r.u16("curveID")?;
                let kdf = scheme_hash_only(&mut r, "kdf")?;
                let x = r.tpm2b("unique.ecc.x")?.to_vec();
                let y = r.tpm2b("unique.ecc.y")?.to_vec();
                (symmetric, scheme, KeyMaterial::Ecc { curve, kdf, x, y })
            }
            other => {
                return Err(VerifyError::UnsupportedAlgorithm {
                    what: "object type",
                    id: other,
                })
            }
        };
        r.finish()?;
        Ok(Self {
            tpmt: bytes.to_vec(),
            name_alg,
            attributes,
            auth_policy,
            symmetric,
            scheme,
            key,
        })
    }

    /// The object's Name: nameAlg || H_nameAlg(TPMT_PUBLIC) (Part 1, §16).
    /// Always computed here, never taken from the machine being verified.
    pub fn name(&self) -> Vec<u8> {
        let mut n = self.name_alg.tpm_id().to_be_bytes().to_vec();
        n.extend(self.name_alg.digest(&[&self.tpmt]));
        n
    }

    /// The exact TPMT_PUBLIC bytes.
    pub fn tpmt_bytes(&self) -> &[u8] {
        &self.tpmt
    }

    /// TPM2B_PUBLIC encoding.
    pub fn to_tpm2b(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.tpmt.len() + 2);
        super::wire::put_tpm2b(&mut out, &self.tpmt);
        out
    }
}

fn sym_def(r: &mut Reader<'_>) -> Result<Option<SymDef>, VerifyError> {
    let alg = r.u16("symmetric.algorithm")?;
    if alg == alg::NULL {
        return Ok(None);
    }
    let key_bits = r.u16("symmetric.keyBits")?;
    let mode = r.u16("symmetric.mode")?;
    Ok(Some(SymDef {
        alg,
        key_bits,
        mode,
    }))
}

/// TPMT_RSA_SCHEME / TPMT_ECC_SCHEME: every scheme but NULL and RSAES
/// carries a hash; ECDAA also a count.
fn scheme(r: &mut Reader<'_>, field: &'static str) -> Result<Scheme, VerifyError> {
    let alg = r.u16(field)?;
    let hash = match alg {
        alg::NULL | alg::RSAES => None,
        alg::ECDAA => {
            let h = r.u16(field)?;
            r.u16(field)?; // count
            Some(h)
        }
        _ => Some(r.u16(field)?),
    };
    Ok(Scheme { alg, hash })
}

fn scheme_hash_only(r: &mut Reader<'_>, field: &'static str) -> Result<Scheme, VerifyError> {
    let alg = r.u16(field)?;
    let hash = match alg {
        alg::NULL => None,
        _ => Some(r.u16(field)?),
    };
    Ok(Scheme { alg, hash })
}
