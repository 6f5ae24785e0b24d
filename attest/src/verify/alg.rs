//! TPM algorithm identifiers (TPM 2.0 Part 2, §6.3) and hashing by TPM_ALG_ID.

use sha2::{Digest, Sha256, Sha384, Sha512};

use super::VerifyError;

pub const RSA: u16 = 0x0001;
pub const SHA1: u16 = 0x0004;
pub const HMAC: u16 = 0x0005;
pub const AES: u16 = 0x0006;
pub const KEYEDHASH: u16 = 0x0008;
pub const XOR: u16 = 0x000A;
pub const SHA256: u16 = 0x000B;
pub const SHA384: u16 = 0x000C;
pub const SHA512: u16 = 0x000D;
pub const NULL: u16 = 0x0010;
pub const RSASSA: u16 = 0x0014;
pub const RSAES: u16 = 0x0015;
pub const RSAPSS: u16 = 0x0016;
pub const OAEP: u16 = 0x0017;
pub const ECDSA: u16 = 0x0018;
pub const ECDH: u16 = 0x0019;
pub const ECDAA: u16 = 0x001A;
pub const SM2: u16 = 0x001B;
pub const ECSCHNORR: u16 = 0x001C;
pub const ECMQV: u16 = 0x001D;
pub const ECC: u16 = 0x0023;
pub const SYMCIPHER: u16 = 0x0025;
pub const CFB: u16 = 0x0043;

pub const ECC_NIST_P256: u16 = 0x0003;
pub const ECC_NIST_P384: u16 = 0x0004;

/// A hash algorithm the verifier implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlg {
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    /// SHA-1 is refused: a verifier must not accept collisions it can be fed.
    pub fn from_tpm(id: u16) -> Result<Self, VerifyError> {
        match id {
            SHA256 => Ok(Self::Sha256),
            SHA384 => Ok(Self::Sha384),
            SHA512 => Ok(Self::Sha512),
            other => Err(VerifyError::UnsupportedAlgorithm {
                what: "hash",
                id: other,
            }),
        }
    }

    pub fn tpm_id(self) -> u16 {
        match self {
            Self::Sha256 => SHA256,
            Self::Sha384 => SHA384,
            Self::Sha512 => SHA512,
        }
    }

    pub fn size(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    pub fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut h = D::new();
            for p in parts {
                h.update(p);
            }
            h.finalize().to_vec()
        }
        match self {
            Self::Sha256 => run::<Sha256>(parts),
            Self::Sha384 => run::<Sha384>(parts),
            Self::Sha512 => run::<Sha512>(parts),
        }
    }

    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        use hmac::{Mac, SimpleHmac};
        fn run<D: Digest + hmac::digest::core_api::BlockSizeUser>(
            key: &[u8],
            parts: &[&[u8]],
        ) -> Vec<u8> {
            // SimpleHmac accepts keys of any length; the error is unreachable.
            let Ok(mut m) = <SimpleHmac<D> as Mac>::new_from_slice(key) else {
                return Vec::new();
            };
            for p in parts {
                m.update(p);
            }
            m.finalize().into_bytes().to_vec()
        }
        match self {
            Self::Sha256 => run::<Sha256>(key, parts),
            Self::Sha384 => run::<Sha384>(key, parts),
            Self::Sha512 => run::<Sha512>(key, parts),
        }
    }
}

impl std::fmt::Display for HashAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        })
    }
}

/// A readable name for an algorithm id, for error messages.
pub fn name(id: u16) -> String {
    let n = match id {
        RSA => "rsa",
        SHA1 => "sha1",
        HMAC => "hmac",
        AES => "aes",
        KEYEDHASH => "keyedhash",
        XOR => "xor",
        SHA256 => "sha256",
        SHA384 => "sha384",
        SHA512 => "sha512",
        NULL => "null",
        RSASSA => "rsassa",
        RSAES => "rsaes",
        RSAPSS => "rsapss",
        OAEP => "oaep",
        ECDSA => "ecdsa",
        ECDH => "ecdh",
        ECDAA => "ecdaa",
        SM2 => "sm2",
        ECSCHNORR => "ecschnorr",
        ECMQV => "ecmqv",
        ECC => "ecc",
        SYMCIPHER => "symcipher",
        CFB => "cfb",
        _ => return format!("0x{id:04x}"),
    };
    n.to_owned()
}
