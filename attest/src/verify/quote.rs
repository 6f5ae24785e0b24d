//! Verifying what an AK signed: quotes over PCRs and certifications of
//! other keys, with the AK checked first.

use subtle::ConstantTimeEq;

use super::alg::{self, HashAlg};
use super::attestation::{
    Attestation, Attested, ClockInfo, Signature, ST_ATTEST_CERTIFY, ST_ATTEST_QUOTE, TPM_GENERATED,
};
use super::pcr::{PcrSelection, PcrValues};
use super::public::{KeyMaterial, ObjectAttributes, Public};
use super::VerifyError;

/// Checks that `ak` is an attestation key: created in a TPM, bound to it,
/// restricted to signing what the TPM itself produced. Runs before
/// MakeCredential, so no credential is ever issued for an unfit key.
pub fn check_ak(ak: &Public) -> Result<(), VerifyError> {
    if ak.attributes.has(ObjectAttributes::DECRYPT) {
        return Err(VerifyError::AkCanDecrypt);
    }
    for bit in [
        ObjectAttributes::FIXED_TPM,
        ObjectAttributes::FIXED_PARENT,
        ObjectAttributes::SENSITIVE_DATA_ORIGIN,
        ObjectAttributes::RESTRICTED,
        ObjectAttributes::SIGN,
    ] {
        if !ak.attributes.has(bit) {
            return Err(VerifyError::AkAttributeMissing(ObjectAttributes::bit_name(
                bit,
            )));
        }
    }
    pinned_scheme(ak)?;
    match &ak.key {
        KeyMaterial::Rsa { bits, .. } if *bits < 2048 => Err(VerifyError::AkKeyInvalid(format!(
            "RSA-{bits} is too short"
        ))),
        KeyMaterial::Ecc { curve, .. }
            if ![alg::ECC_NIST_P256, alg::ECC_NIST_P384].contains(curve) =>
        {
            Err(VerifyError::UnsupportedAlgorithm {
                what: "ECC curve",
                id: *curve,
            })
        }
        _ => Ok(()),
    }
}

/// The (scheme, hash) every signature by `ak` must use: the key's own
/// scheme when it fixes one, else ECDSA/RSASSA with SHA-256. A signature
/// with any other pair is refused, so an attacker cannot pick a weaker one.
pub fn pinned_scheme(ak: &Public) -> Result<(u16, HashAlg), VerifyError> {
    let default = match ak.key {
        KeyMaterial::Ecc { .. } => alg::ECDSA,
        KeyMaterial::Rsa { .. } => alg::RSASSA,
    };
    match (ak.scheme.alg, ak.scheme.hash) {
        (alg::NULL, _) => Ok((default, HashAlg::Sha256)),
        (a @ (alg::ECDSA | alg::RSASSA | alg::RSAPSS), Some(h)) => Ok((a, HashAlg::from_tpm(h)?)),
        (other, _) => Err(VerifyError::UnsupportedAlgorithm {
            what: "AK signing scheme",
            id: other,
        }),
    }
}

/// Verifies `signature` over `message` by `key` with the pinned scheme.
pub fn verify_signature(
    key: &Public,
    message: &[u8],
    signature: &Signature,
) -> Result<(), VerifyError> {
    let (want_alg, want_hash) = pinned_scheme(key)?;
    let (got_alg, got_hash) = signature.scheme();
    if got_alg != want_alg || got_hash != want_hash.tpm_id() {
        return Err(VerifyError::SchemeMismatch {
            expected: format!("{}-{}", alg::name(want_alg), want_hash),
            found: format!("{}-{}", alg::name(got_alg), alg::name(got_hash)),
        });
    }
    // The common case, ECDSA P-256 over SHA-256, goes through ring's
    // constant-time, assembly-optimised verifier.
    if let (
        KeyMaterial::Ecc {
            curve: alg::ECC_NIST_P256,
            x,
            y,
            ..
        },
        Signature::Ecdsa { r, s, .. },
        HashAlg::Sha256,
    ) = (&key.key, signature, want_hash)
    {
        return verify_p256_sha256(x, y, message, r, s);
    }
    let digest = want_hash.digest(&[message]);
    match (&key.key, signature) {
        (KeyMaterial::Ecc { curve, x, y, .. }, Signature::Ecdsa { r, s, .. }) => {
            verify_ecdsa(*curve, x, y, &digest, r, s)
        }
        (
            KeyMaterial::Rsa {
                exponent, modulus, ..
            },
            Signature::RsaSsa { sig, .. } | Signature::RsaPss { sig, .. },
        ) => verify_rsa(
            *exponent,
            modulus,
            want_hash,
            &digest,
            sig,
            matches!(signature, Signature::RsaPss { .. }),
        ),
        _ => Err(VerifyError::BadSignature),
    }
}

fn left_pad(v: &[u8], n: usize) -> Option<Vec<u8>> {
    let v = match v.iter().position(|b| *b != 0) {
        Some(i) => &v[i..],
        None => &[][..],
    };
    (v.len() <= n).then(|| {
        let mut out = vec![0u8; n - v.len()];
        out.extend_from_slice(v);
        out
    })
}

fn verify_p256_sha256(
    x: &[u8],
    y: &[u8],
    message: &[u8],
    r: &[u8],
    s: &[u8],
) -> Result<(), VerifyError> {
    let invalid = |_| VerifyError::AkKeyInvalid("ECC point too long for P-256".into());
    let point = [
        &[0x04][..],
        &left_pad(x, 32).ok_or(()).map_err(invalid)?,
        &left_pad(y, 32).ok_or(()).map_err(invalid)?,
    ]
    .concat();
    let rs = [
        left_pad(r, 32).ok_or(VerifyError::BadSignature)?,
        left_pad(s, 32).ok_or(VerifyError::BadSignature)?,
    ]
    .concat();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &point)
        .verify(message, &rs)
        .map_err(|_| VerifyError::BadSignature)
}

fn verify_ecdsa(
    curve: u16,
    x: &[u8],
    y: &[u8],
    digest: &[u8],
    r: &[u8],
    s: &[u8],
) -> Result<(), VerifyError> {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    let size = match curve {
        alg::ECC_NIST_P256 => 32,
        alg::ECC_NIST_P384 => 48,
        other => {
            return Err(VerifyError::UnsupportedAlgorithm {
                what: "ECC curve",
                id: other,
            })
        }
    };
    let pad = |v: &[u8]| left_pad(v, size).ok_or(VerifyError::BadSignature);
    let point = [
        &[0x04][..],
        &pad(x).map_err(|_| VerifyError::AkKeyInvalid("ECC point too long".into()))?,
        &pad(y).map_err(|_| VerifyError::AkKeyInvalid("ECC point too long".into()))?,
    ]
    .concat();
    let (r, s) = (pad(r)?, pad(s)?);
    let rs = [r, s].concat();
    let ok = match curve {
        alg::ECC_NIST_P256 => {
            let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                .map_err(|_| VerifyError::AkKeyInvalid("the ECC point is not on P-256".into()))?;
            let sig =
                p256::ecdsa::Signature::from_slice(&rs).map_err(|_| VerifyError::BadSignature)?;
            vk.verify_prehash(digest, &sig).is_ok()
        }
        _ => {
            let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                .map_err(|_| VerifyError::AkKeyInvalid("the ECC point is not on P-384".into()))?;
            let sig =
                p384::ecdsa::Signature::from_slice(&rs).map_err(|_| VerifyError::BadSignature)?;
            vk.verify_prehash(digest, &sig).is_ok()
        }
    };
    ok.then_some(()).ok_or(VerifyError::BadSignature)
}

pub(crate) fn rsa_key(exponent: u32, modulus: &[u8]) -> Result<rsa::RsaPublicKey, VerifyError> {
    // An exponent of 0 means the default, 2^16 + 1 (Part 2, §12.2.3.5).
    let e = if exponent == 0 { 65537 } else { exponent };
    rsa::RsaPublicKey::new(rsa::BigUint::from_bytes_be(modulus), rsa::BigUint::from(e))
        .map_err(|e| VerifyError::AkKeyInvalid(format!("RSA key: {e}")))
}

fn verify_rsa(
    exponent: u32,
    modulus: &[u8],
    hash: HashAlg,
    digest: &[u8],
    sig: &[u8],
    pss: bool,
) -> Result<(), VerifyError> {
    use rsa::pkcs1v15::Pkcs1v15Sign;
    use rsa::pss::Pss;
    use sha2::{Sha256, Sha384, Sha512};
    let key = rsa_key(exponent, modulus)?;
    let result = match (hash, pss) {
        (HashAlg::Sha256, false) => key.verify(Pkcs1v15Sign::new::<Sha256>(), digest, sig),
        (HashAlg::Sha384, false) => key.verify(Pkcs1v15Sign::new::<Sha384>(), digest, sig),
        (HashAlg::Sha512, false) => key.verify(Pkcs1v15Sign::new::<Sha512>(), digest, sig),
        (HashAlg::Sha256, true) => key.verify(Pss::new::<Sha256>(), digest, sig),
        (HashAlg::Sha384, true) => key.verify(Pss::new::<Sha384>(), digest, sig),
        (HashAlg::Sha512, true) => key.verify(Pss::new::<Sha512>(), digest, sig),
    };
    result.map_err(|_| VerifyError::BadSignature)
}

/// An attestation key as the verifier knows it: its public area and its
/// Qualified Name, which the TPM writes as `qualifiedSigner` into everything
/// the key signs (Part 1, §16: QN = nameAlg || H(parent's QN || Name)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ak {
    pub public: Public,
    pub qualified_name: Vec<u8>,
}

/// TPM_RH_ENDORSEMENT: the Qualified Name of the endorsement hierarchy.
const RH_ENDORSEMENT: u32 = 0x4000_000B;

impl Ak {
    /// An AK created as a child of `ek`, a primary key of the endorsement
    /// hierarchy (how the TCG profile and zeroth's agent create it).
    pub fn under_ek(public: Public, ek: &Public) -> Self {
        let ek_qn = qualified_name(&RH_ENDORSEMENT.to_be_bytes(), ek);
        let qualified_name = qualified_name(&ek_qn, &public);
        Self {
            public,
            qualified_name,
        }
    }
}

/// QN(child) = nameAlg || H_nameAlg(QN(parent) || Name(child)).
pub fn qualified_name(parent_qn: &[u8], child: &Public) -> Vec<u8> {
    let mut qn = child.name_alg.tpm_id().to_be_bytes().to_vec();
    qn.extend(child.name_alg.digest(&[parent_qn, &child.name()]));
    qn
}

/// What a verified quote established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedQuote {
    pub clock: ClockInfo,
    pub firmware_version: u64,
    pub selection: PcrSelection,
    /// The reported PCR values the quote covers, now authenticated.
    pub pcrs: PcrValues,
}

/// Verifies a TPM2_Quote: the AK's signature with its pinned scheme, the
/// TPM's magic, the quote type, the signer's Name, the nonce, the PCR digest
/// against the reported values, and that the TPM's clock did not go back
/// since `previous` (the last quote accepted from this machine).
pub fn verify_quote(
    ak: &Ak,
    attest: &[u8],
    signature: &[u8],
    nonce: &[u8],
    reported: &PcrValues,
    previous: Option<&ClockInfo>,
) -> Result<VerifiedQuote, VerifyError> {
    let a = verify_attestation(
        ak,
        attest,
        signature,
        nonce,
        ST_ATTEST_QUOTE,
        "a quote (TPM_ST_ATTEST_QUOTE)",
    )?;
    let Attested::Quote {
        selection,
        pcr_digest,
    } = a.attested
    else {
        return Err(VerifyError::WrongAttestType {
            expected: "a quote",
            found: a.type_,
        });
    };
    let (_, hash) = pinned_scheme(&ak.public)?;
    let computed = reported.quote_digest(&selection, hash)?;
    if !bool::from(computed.ct_eq(&pcr_digest)) {
        return Err(VerifyError::PcrMismatch(
            "the reported values do not hash to the quoted PCR digest".into(),
        ));
    }
    if let Some(prev) = previous {
        check_clock(prev, &a.clock)?;
    }
    let mut pcrs = PcrValues::default();
    for (bank, list) in &selection.banks {
        for p in list {
            if let Some(v) = reported.0.get(&(*bank, *p)) {
                pcrs.0.insert((*bank, *p), v.clone());
            }
        }
    }
    Ok(VerifiedQuote {
        clock: a.clock,
        firmware_version: a.firmware_version,
        selection,
        pcrs,
    })
}

/// Verifies a TPM2_Certify by the AK of `certified`: proof that the key
/// lives in the same TPM and can never leave it.
pub fn verify_certify(
    ak: &Ak,
    attest: &[u8],
    signature: &[u8],
    nonce: &[u8],
    certified: &Public,
) -> Result<(), VerifyError> {
    let a = verify_attestation(
        ak,
        attest,
        signature,
        nonce,
        ST_ATTEST_CERTIFY,
        "a certification (TPM_ST_ATTEST_CERTIFY)",
    )?;
    let Attested::Certify { name, .. } = a.attested else {
        return Err(VerifyError::WrongAttestType {
            expected: "a certification",
            found: a.type_,
        });
    };
    if !bool::from(name.ct_eq(&certified.name())) {
        return Err(VerifyError::CertifiedNameMismatch);
    }
    for bit in [
        ObjectAttributes::FIXED_TPM,
        ObjectAttributes::FIXED_PARENT,
        ObjectAttributes::SENSITIVE_DATA_ORIGIN,
    ] {
        if !certified.attributes.has(bit) {
            return Err(VerifyError::CertifiedAttributeMissing(
                ObjectAttributes::bit_name(bit),
            ));
        }
    }
    Ok(())
}

fn verify_attestation(
    ak: &Ak,
    attest: &[u8],
    signature: &[u8],
    nonce: &[u8],
    want_type: u16,
    want_name: &'static str,
) -> Result<Attestation, VerifyError> {
    let sig = Signature::parse(signature)?;
    // Authenticate before trusting any field.
    verify_signature(&ak.public, attest, &sig)?;
    let a = Attestation::parse(attest)?;
    if a.magic != TPM_GENERATED {
        return Err(VerifyError::BadMagic(a.magic));
    }
    if a.type_ != want_type {
        return Err(VerifyError::WrongAttestType {
            expected: want_name,
            found: a.type_,
        });
    }
    if !bool::from(a.qualified_signer.ct_eq(&ak.qualified_name)) {
        return Err(VerifyError::SignerMismatch);
    }
    if nonce.is_empty() || !bool::from(a.extra_data.ct_eq(nonce)) {
        return Err(VerifyError::NonceMismatch);
    }
    Ok(a)
}

/// resetCount never decreases; within one reset, restartCount never
/// decreases; within one boot cycle, the clock never decreases.
pub fn check_clock(previous: &ClockInfo, now: &ClockInfo) -> Result<(), VerifyError> {
    let back = |field, p: u64, n: u64| {
        Err(VerifyError::ClockWentBackwards {
            field,
            previous: p,
            now: n,
        })
    };
    if now.reset_count < previous.reset_count {
        return back(
            "resetCount",
            previous.reset_count.into(),
            now.reset_count.into(),
        );
    }
    if now.reset_count == previous.reset_count {
        if now.restart_count < previous.restart_count {
            return back(
                "restartCount",
                previous.restart_count.into(),
                now.restart_count.into(),
            );
        }
        if now.restart_count == previous.restart_count && now.clock < previous.clock {
            return back("clock", previous.clock, now.clock);
        }
    }
    Ok(())
}
