//! TPM2_MakeCredential in software (TPM 2.0 Part 1 §24; Part 3 §12.6;
//! Part 1 Annex B.10.4 and C.6.4 for the seed).
//!
//! The verifier encrypts a fresh secret to the EK such that only a TPM
//! holding both that EK and an object with the given Name (the AK) can
//! recover it with TPM2_ActivateCredential. Getting the secret back proves
//! the AK and the EK share a TPM.

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::alg::{self, HashAlg};
use super::public::{KeyMaterial, ObjectAttributes, Public};
use super::quote::rsa_key;
use super::wire::put_tpm2b;
use super::VerifyError;

/// The two inputs of TPM2_ActivateCredential, as TPM2B contents.
#[derive(Clone, PartialEq, Eq)]
pub struct MadeCredential {
    /// TPM2B_ID_OBJECT contents: TPM2B outer HMAC || encrypted identity.
    pub credential_blob: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET contents: the seed, encrypted to the EK.
    pub encrypted_secret: Vec<u8>,
}

impl std::fmt::Debug for MadeCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MadeCredential {{ credential_blob: {} bytes, encrypted_secret: {} bytes }}",
            self.credential_blob.len(),
            self.encrypted_secret.len()
        )
    }
}

impl MadeCredential {
    /// The file format tpm2-tools reads with `tpm2_activatecredential -i`:
    /// magic 0xBADCC0DE, version 1, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET.
    pub fn to_tpm2_tools_file(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0xBADC_C0DEu32.to_be_bytes());
        out.extend_from_slice(&1u32.to_be_bytes());
        put_tpm2b(&mut out, &self.credential_blob);
        put_tpm2b(&mut out, &self.encrypted_secret);
        out
    }
}

/// Encrypts `secret` (at most one digest long) for the TPM holding `ek`,
/// bound to the object named `ak_name`.
pub fn make_credential(
    ek: &Public,
    ak_name: &[u8],
    secret: &[u8],
) -> Result<MadeCredential, VerifyError> {
    let hash = ek.name_alg;
    if secret.is_empty() || secret.len() > hash.size() {
        return Err(VerifyError::EkUnusable(format!(
            "a credential must be 1 to {} bytes",
            hash.size()
        )));
    }
    let sym = check_ek(ek)?;
    let (seed, encrypted_secret) = match &ek.key {
        KeyMaterial::Rsa {
            exponent, modulus, ..
        } => rsa_seed(hash, *exponent, modulus)?,
        KeyMaterial::Ecc { curve, x, y, .. } => ecc_seed(hash, *curve, x, y)?,
    };

    // The credential is a TPM2B_DIGEST, encrypted with AES-CFB under a key
    // derived from the seed and the AK's Name, IV zero (Part 1, §24.4).
    let sym_key = Zeroizing::new(kdfa(
        hash,
        &seed,
        b"STORAGE",
        ak_name,
        &[],
        usize::from(sym.key_bits),
    ));
    let mut enc_identity = Vec::with_capacity(secret.len() + 2);
    put_tpm2b(&mut enc_identity, secret);
    cfb_encrypt(&sym_key, &mut enc_identity)?;

    let hmac_key = Zeroizing::new(kdfa(hash, &seed, b"INTEGRITY", &[], &[], hash.size() * 8));
    let outer_hmac = hash.hmac(&hmac_key, &[&enc_identity, ak_name]);
    let mut credential_blob = Vec::with_capacity(2 + outer_hmac.len() + enc_identity.len());
    put_tpm2b(&mut credential_blob, &outer_hmac);
    credential_blob.extend_from_slice(&enc_identity);
    Ok(MadeCredential {
        credential_blob,
        encrypted_secret,
    })
}

/// Compares the secret a machine recovered with the one issued, in constant time.
pub fn check_activation(issued: &[u8], recovered: &[u8]) -> Result<(), VerifyError> {
    if issued.len() == recovered.len() && bool::from(issued.ct_eq(recovered)) {
        Ok(())
    } else {
        Err(VerifyError::CredentialMismatch)
    }
}

struct Sym {
    key_bits: u16,
}

/// An EK is a restricted decryption (storage) key with AES-CFB.
fn check_ek(ek: &Public) -> Result<Sym, VerifyError> {
    let a = ek.attributes;
    if !a.has(ObjectAttributes::RESTRICTED)
        || !a.has(ObjectAttributes::DECRYPT)
        || a.has(ObjectAttributes::SIGN)
    {
        return Err(VerifyError::EkUnusable(
            "not a restricted decryption key".into(),
        ));
    }
    match ek.symmetric {
        Some(s) if s.alg == alg::AES && s.mode == alg::CFB && matches!(s.key_bits, 128 | 256) => {
            Ok(Sym {
                key_bits: s.key_bits,
            })
        }
        _ => Err(VerifyError::EkUnusable(
            "its symmetric algorithm is not AES-128/256-CFB".into(),
        )),
    }
}

fn random(n: usize) -> Result<Zeroizing<Vec<u8>>, VerifyError> {
    let mut b = Zeroizing::new(vec![0u8; n]);
    getrandom::fill(&mut b)
        .map_err(|_| VerifyError::EkUnusable("the OS random source failed".into()))?;
    Ok(b)
}

/// RSA: a random seed, OAEP-encrypted to the EK with label "IDENTITY".
fn rsa_seed(
    hash: HashAlg,
    exponent: u32,
    modulus: &[u8],
) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), VerifyError> {
    use rsa::Oaep;
    use sha2::{Sha256, Sha384, Sha512};
    let key = rsa_key(exponent, modulus).map_err(|e| VerifyError::EkUnusable(e.to_string()))?;
    let seed = random(hash.size())?;
    let label = "IDENTITY\0";
    let padding = match hash {
        HashAlg::Sha256 => Oaep::new_with_label::<Sha256, _>(label),
        HashAlg::Sha384 => Oaep::new_with_label::<Sha384, _>(label),
        HashAlg::Sha512 => Oaep::new_with_label::<Sha512, _>(label),
    };
    let mut rng = rand_core::OsRng;
    let enc = key
        .encrypt(&mut rng, padding, &seed)
        .map_err(|e| VerifyError::EkUnusable(format!("RSA-OAEP: {e}")))?;
    Ok((seed, enc))
}

/// ECC: one-pass ECDH with an ephemeral key; the seed is KDFe over the
/// shared x-coordinate, and the ephemeral public point is the "secret".
fn ecc_seed(
    hash: HashAlg,
    curve: u16,
    x: &[u8],
    y: &[u8],
) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), VerifyError> {
    let point = |size: usize| -> Result<Vec<u8>, VerifyError> {
        if x.len() != size || y.len() != size {
            return Err(VerifyError::EkUnusable(
                "the EK's ECC point has the wrong size".into(),
            ));
        }
        Ok([&[0x04][..], x, y].concat())
    };
    let mut rng = rand_core::OsRng;
    let (z, ex, ey) = match curve {
        alg::ECC_NIST_P256 => {
            let ek = p256::PublicKey::from_sec1_bytes(&point(32)?)
                .map_err(|_| VerifyError::EkUnusable("the EK point is not on P-256".into()))?;
            let eph = p256::ecdh::EphemeralSecret::random(&mut rng);
            let shared = eph.diffie_hellman(&ek);
            let ep = p256::EncodedPoint::from(eph.public_key());
            (
                shared.raw_secret_bytes().to_vec(),
                ep.x().map(|v| v.to_vec()),
                ep.y().map(|v| v.to_vec()),
            )
        }
        alg::ECC_NIST_P384 => {
            let ek = p384::PublicKey::from_sec1_bytes(&point(48)?)
                .map_err(|_| VerifyError::EkUnusable("the EK point is not on P-384".into()))?;
            let eph = p384::ecdh::EphemeralSecret::random(&mut rng);
            let shared = eph.diffie_hellman(&ek);
            let ep = p384::EncodedPoint::from(eph.public_key());
            (
                shared.raw_secret_bytes().to_vec(),
                ep.x().map(|v| v.to_vec()),
                ep.y().map(|v| v.to_vec()),
            )
        }
        other => {
            return Err(VerifyError::UnsupportedAlgorithm {
                what: "EK curve",
                id: other,
            })
        }
    };
    let z = Zeroizing::new(z);
    let (Some(ex), Some(ey)) = (ex, ey) else {
        return Err(VerifyError::EkUnusable(
            "the ephemeral point is the identity".into(),
        ));
    };
    let seed = Zeroizing::new(kdfe(hash, &z, b"IDENTITY", &ex, x, hash.size() * 8));
    let mut secret = Vec::with_capacity(4 + ex.len() + ey.len());
    put_tpm2b(&mut secret, &ex);
    put_tpm2b(&mut secret, &ey);
    Ok((seed, secret))
}

/// KDFa (Part 1, §11.4.10.2): SP 800-108 counter mode with HMAC.
pub fn kdfa(
    hash: HashAlg,
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    bits: usize,
) -> Vec<u8> {
    let bytes = bits.div_ceil(8);
    let bits_be = (bits as u32).to_be_bytes();
    let mut out = Vec::with_capacity(bytes + hash.size());
    let mut counter: u32 = 1;
    while out.len() < bytes {
        out.extend(hash.hmac(
            key,
            &[
                &counter.to_be_bytes(),
                label,
                &[0],
                context_u,
                context_v,
                &bits_be,
            ],
        ));
        counter += 1;
    }
    out.truncate(bytes);
    out
}

/// KDFe (Part 1, §11.4.10.3): SP 800-56A concatenation KDF.
pub fn kdfe(
    hash: HashAlg,
    z: &[u8],
    label: &[u8],
    party_u: &[u8],
    party_v: &[u8],
    bits: usize,
) -> Vec<u8> {
    let bytes = bits.div_ceil(8);
    let mut out = Vec::with_capacity(bytes + hash.size());
    let mut counter: u32 = 1;
    while out.len() < bytes {
        out.extend(hash.digest(&[&counter.to_be_bytes(), z, label, &[0], party_u, party_v]));
        counter += 1;
    }
    out.truncate(bytes);
    out
}

fn cfb_encrypt(key: &[u8], data: &mut [u8]) -> Result<(), VerifyError> {
    use cfb_mode::cipher::{AsyncStreamCipher, KeyIvInit};
    let iv = [0u8; 16];
    match key.len() {
        16 => cfb_mode::Encryptor::<aes::Aes128>::new_from_slices(key, &iv)
            .map_err(|_| VerifyError::EkUnusable("AES key".into()))?
            .encrypt(data),
        32 => cfb_mode::Encryptor::<aes::Aes256>::new_from_slices(key, &iv)
            .map_err(|_| VerifyError::EkUnusable("AES key".into()))?
            .encrypt(data),
        _ => return Err(VerifyError::EkUnusable("AES key size".into())),
    }
    Ok(())
}
