//! Validly signed attestations from software keys, each built to reach one
//! refusal of the verifier: the checks that follow the signature can only
//! be exercised by evidence whose signature holds.

use p256::ecdsa::signature::Signer;
use p256::ecdsa::SigningKey;
use sha2::{Digest, Sha256};

use super::alg::{self, HashAlg};
use super::attestation::{ST_ATTEST_CERTIFY, ST_ATTEST_QUOTE, TPM_GENERATED};
use super::pcr::{PcrSelection, PcrValues};
use super::public::{ObjectAttributes, Public};
use super::quote::{qualified_name, verify_certify, verify_quote, Ak};
use super::wire::put_tpm2b;
use super::VerifyError;

const AK_ATTRIBUTES: u32 = ObjectAttributes::FIXED_TPM
    | ObjectAttributes::FIXED_PARENT
    | ObjectAttributes::SENSITIVE_DATA_ORIGIN
    | ObjectAttributes::USER_WITH_AUTH
    | ObjectAttributes::RESTRICTED
    | ObjectAttributes::SIGN;

/// A P-256 key as a TPM would describe it (TPM2B_PUBLIC).
fn ecc_public(key: &SigningKey, attributes: u32, scheme: Option<u16>) -> Public {
    let point = key.verifying_key().to_encoded_point(false);
    let mut t = Vec::new();
    t.extend(alg::ECC.to_be_bytes());
    t.extend(alg::SHA256.to_be_bytes());
    t.extend(attributes.to_be_bytes());
    put_tpm2b(&mut t, &[]);
    t.extend(alg::NULL.to_be_bytes());
    match scheme {
        Some(s) => {
            t.extend(s.to_be_bytes());
            t.extend(alg::SHA256.to_be_bytes());
        }
        None => t.extend(alg::NULL.to_be_bytes()),
    }
    t.extend(alg::ECC_NIST_P256.to_be_bytes());
    t.extend(alg::NULL.to_be_bytes());
    // Uncompressed SEC1: 04 || x || y.
    put_tpm2b(&mut t, &point.as_bytes()[1..33]);
    put_tpm2b(&mut t, &point.as_bytes()[33..65]);
    let mut b = Vec::new();
    put_tpm2b(&mut b, &t);
    Public::from_tpm2b(&b).expect("a well-formed TPM2B_PUBLIC")
}

/// The fields of a TPMS_ATTEST that a test varies.
struct Evidence {
    magic: u32,
    type_: u16,
    signer: Vec<u8>,
    nonce: Vec<u8>,
    body: Vec<u8>,
}

impl Evidence {
    fn bytes(&self) -> Vec<u8> {
        let mut a = self.magic.to_be_bytes().to_vec();
        a.extend(self.type_.to_be_bytes());
        put_tpm2b(&mut a, &self.signer);
        put_tpm2b(&mut a, &self.nonce);
        a.extend(1234u64.to_be_bytes()); // clock
        a.extend(1u32.to_be_bytes()); // resetCount
        a.extend(0u32.to_be_bytes()); // restartCount
        a.push(1); // safe
        a.extend(0x2001_0000u64.to_be_bytes()); // firmwareVersion
        a.extend(&self.body);
        a
    }
}

/// TPMT_SIGNATURE: ECDSA over SHA-256 of `message` (or `hash` named instead).
fn sign(key: &SigningKey, message: &[u8], named_hash: u16) -> Vec<u8> {
    let sig: p256::ecdsa::Signature = key.sign(message);
    let (r, s) = sig.split_bytes();
    let mut out = alg::ECDSA.to_be_bytes().to_vec();
    out.extend(named_hash.to_be_bytes());
    put_tpm2b(&mut out, &r);
    put_tpm2b(&mut out, &s);
    out
}

struct Bench {
    key: SigningKey,
    ak: Ak,
    nonce: Vec<u8>,
}

fn bench() -> Bench {
    let key = SigningKey::random(&mut rand_core::OsRng);
    let ek = ecc_public(
        &SigningKey::random(&mut rand_core::OsRng),
        ObjectAttributes::FIXED_TPM | ObjectAttributes::DECRYPT | ObjectAttributes::RESTRICTED,
        None,
    );
    let ak = Ak::under_ek(ecc_public(&key, AK_ATTRIBUTES, None), &ek);
    Bench {
        key,
        ak,
        nonce: Sha256::digest(b"nonce").to_vec(),
    }
}

fn quote_body() -> Vec<u8> {
    let selection = PcrSelection::new(HashAlg::Sha256, &[]);
    let mut body = selection.to_bytes();
    let digest = PcrValues::default()
        .quote_digest(&selection, HashAlg::Sha256)
        .expect("an empty selection");
    put_tpm2b(&mut body, &digest);
    body
}

impl Bench {
    fn quote(&self) -> Evidence {
        Evidence {
            magic: TPM_GENERATED,
            type_: ST_ATTEST_QUOTE,
            signer: self.ak.qualified_name.clone(),
            nonce: self.nonce.clone(),
            body: quote_body(),
        }
    }

    fn check_quote(&self, e: &Evidence) -> Result<(), VerifyError> {
        let attest = e.bytes();
        let sig = sign(&self.key, &attest, alg::SHA256);
        verify_quote(
            &self.ak,
            &attest,
            &sig,
            &self.nonce,
            &PcrValues::default(),
            None,
        )
        .map(drop)
    }

    fn certify(&self, certified: &Public) -> Result<(), VerifyError> {
        let mut body = Vec::new();
        put_tpm2b(&mut body, &certified.name());
        put_tpm2b(&mut body, &qualified_name(&[0x40, 0, 0, 0x0b], certified));
        let e = Evidence {
            type_: ST_ATTEST_CERTIFY,
            body,
            ..self.quote()
        };
        let attest = e.bytes();
        let sig = sign(&self.key, &attest, alg::SHA256);
        verify_certify(&self.ak, &attest, &sig, &self.nonce, certified)
    }
}

#[test]
fn a_soundly_signed_quote_passes_so_each_refusal_below_is_its_own() {
    let b = bench();
    b.check_quote(&b.quote()).unwrap();
}

#[test]
fn a_quote_signed_by_another_ak_names_the_signer_mismatch() {
    let b = bench();
    let mut e = b.quote();
    e.signer[5] ^= 1;
    assert!(matches!(
        b.check_quote(&e),
        Err(VerifyError::SignerMismatch)
    ));
}

#[test]
fn a_structure_the_tpm_did_not_generate_is_refused_by_its_magic() {
    let b = bench();
    let e = Evidence {
        magic: 0x1234_5678,
        ..b.quote()
    };
    assert!(matches!(
        b.check_quote(&e),
        Err(VerifyError::BadMagic(0x1234_5678))
    ));
}

#[test]
fn a_certification_offered_as_a_quote_is_the_wrong_type() {
    let b = bench();
    let e = Evidence {
        type_: ST_ATTEST_CERTIFY,
        body: vec![0, 0, 0, 0],
        ..b.quote()
    };
    assert!(
        matches!(b.check_quote(&e), Err(VerifyError::WrongAttestType { .. })),
        "{:?}",
        b.check_quote(&e)
    );
}

#[test]
fn a_signature_naming_another_hash_than_the_ak_pins_is_refused() {
    let b = bench();
    let attest = b.quote().bytes();
    // A valid ECDSA signature, but labelled SHA-384: the AK pins SHA-256.
    let sig = sign(&b.key, &attest, alg::SHA384);
    let err = verify_quote(&b.ak, &attest, &sig, &b.nonce, &PcrValues::default(), None);
    assert!(
        matches!(err, Err(VerifyError::SchemeMismatch { .. })),
        "{err:?}"
    );
}

#[test]
fn a_certified_key_that_could_leave_the_tpm_is_refused() {
    let b = bench();
    let key = SigningKey::random(&mut rand_core::OsRng);
    let bound = ecc_public(&key, AK_ATTRIBUTES & !ObjectAttributes::RESTRICTED, None);
    b.certify(&bound).unwrap();
    let loose = ecc_public(
        &key,
        ObjectAttributes::SIGN | ObjectAttributes::USER_WITH_AUTH | ObjectAttributes::FIXED_TPM,
        None,
    );
    assert!(matches!(
        b.certify(&loose),
        Err(VerifyError::CertifiedAttributeMissing("fixedParent"))
    ));
}
