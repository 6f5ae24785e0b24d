//! A connection to a TPM 2.0 through a TCTI, and what the attester asks of it.
//!
//! Every transient object and session this module creates is flushed before
//! the call that created it returns, except attestation and signing keys it
//! keeps loaded for reuse (at most [`MAX_LOADED`]), which are flushed when
//! the `Tpm` is dropped. A soak test of thousands of quotes must not exhaust
//! the TPM's object or session slots.

use std::fmt;
use std::str::FromStr;

use tss_esapi::abstraction::ek::{create_ek_object_2, retrieve_ek_pubcert};
use tss_esapi::abstraction::{ak, pcr, AsymmetricAlgorithmSelection, DefaultKey, KeyCustomization};
use tss_esapi::attributes::{ObjectAttributesBuilder, SessionAttributesBuilder};
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{AuthHandle, KeyHandle, ObjectHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Data, Digest, EncryptedSecret, HashScheme, HashcheckTicket, IdObject, Nonce,
    PcrSelectionListBuilder, PcrSlot, Private, Public, SignatureScheme, SymmetricDefinition,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::Marshall;
use tss_esapi::Context;
use zeroize::Zeroizing;

use crate::verify::alg::HashAlg;
use crate::verify::pcr::{PcrSelection, PcrValues};

/// TPM2_GetRandom returns at most one SHA-256 digest's worth per call.
const MAX_RANDOM_CHUNK: usize = 32;
/// Keys kept loaded between calls; TPMs guarantee only three object slots.
const MAX_LOADED: usize = 2;
/// How often a quote is retaken when PCRs change between quote and read.
const QUOTE_ATTEMPTS: usize = 5;

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

fn tpm_err(operation: &'static str) -> impl FnOnce(tss_esapi::Error) -> AttestError {
    move |e| AttestError::Tpm {
        operation,
        reason: e.to_string(),
    }
}

fn input_err(operation: &'static str) -> impl FnOnce(tss_esapi::Error) -> AttestError {
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
struct UnrestrictedSigning;

impl KeyCustomization for UnrestrictedSigning {
    fn attributes(&self, b: ObjectAttributesBuilder) -> ObjectAttributesBuilder {
        b.with_restricted(false)
    }
}

/// The attestation key template as the TCG profile defines it.
struct AkTemplate;

impl KeyCustomization for AkTemplate {}

/// An open TPM. The ESAPI context is not thread-safe: a `Tpm` is used from
/// one thread at a time (see [`super::Attester`] for the worker thread).
pub struct Tpm {
    ctx: Context,
    tcti: String,
    /// Keys kept loaded, by their TPM2B_PUBLIC.
    loaded: Vec<(Vec<u8>, KeyHandle)>,
}

impl fmt::Debug for Tpm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tpm").field("tcti", &self.tcti).finish()
    }
}

impl Drop for Tpm {
    fn drop(&mut self) {
        for (_, h) in std::mem::take(&mut self.loaded) {
            let _ = self.ctx.flush_context(h.into());
        }
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
            loaded: Vec::new(),
        })
    }

    pub fn tcti(&self) -> &str {
        &self.tcti
    }

    /// `n` bytes from the TPM's random number generator (TPM2_GetRandom).
    pub fn random(&mut self, n: usize) -> Result<Vec<u8>, AttestError> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let want = (n - out.len()).min(MAX_RANDOM_CHUNK);
            let d = self.ctx.get_random(want).map_err(tpm_err("GetRandom"))?;
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

    /// Manufacturer, firmware version and active PCR banks.
    pub fn info(&mut self) -> Result<TpmInfo, AttestError> {
        use tss_esapi::constants::PropertyTag;
        let mut prop = |tag| -> Result<u32, AttestError> {
            Ok(self
                .ctx
                .get_tpm_property(tag)
                .map_err(tpm_err("GetCapability(properties)"))?
                .unwrap_or(0))
        };
        let text = |v: u32| -> String {
            v.to_be_bytes()
                .iter()
                .filter(|b| b.is_ascii_graphic())
                .map(|b| char::from(*b))
                .collect()
        };
        let manufacturer = text(prop(PropertyTag::Manufacturer)?);
        let vendor = [
            PropertyTag::VendorString1,
            PropertyTag::VendorString2,
            PropertyTag::VendorString3,
            PropertyTag::VendorString4,
        ]
        .into_iter()
        .map(|t| prop(t).map(text))
        .collect::<Result<Vec<_>, _>>()?
        .concat();
        let (fw1, fw2) = (
            prop(PropertyTag::FirmwareVersion1)?,
            prop(PropertyTag::FirmwareVersion2)?,
        );
        let firmware = format!(
            "{}.{}.{}.{}",
            fw1 >> 16,
            fw1 & 0xffff,
            fw2 >> 16,
            fw2 & 0xffff
        );
        let (caps, _) = self
            .ctx
            .get_capability(tss_esapi::constants::CapabilityType::AssignedPcr, 0, 16)
            .map_err(tpm_err("GetCapability(PCRs)"))?;
        let mut pcr_banks = Vec::new();
        if let tss_esapi::structures::CapabilityData::AssignedPcr(list) = caps {
            for s in list.get_selections() {
                if !s.is_empty() {
                    pcr_banks.push(format!("{:?}", s.hashing_algorithm()).to_lowercase());
                }
            }
        }
        Ok(TpmInfo {
            manufacturer,
            vendor,
            firmware,
            pcr_banks,
        })
    }

    /// The EK certificate (DER) the manufacturer stored in NV for `alg`.
    pub fn ek_certificate(&mut self, alg: EkAlgorithm) -> Result<Vec<u8>, AttestError> {
        retrieve_ek_pubcert(&mut self.ctx, alg.selection()).map_err(|e| AttestError::Tpm {
            operation: "NV_Read of the EK certificate",
            reason: format!("{alg}: {e}"),
        })
    }

    /// Certificates the manufacturer stored in NV 0x01c00100–0x01c001ff
    /// (TCG EK Credential Profile §2.2.1.5): intermediates between the EK
    /// certificate and the manufacturer's root, to help path building.
    pub fn nv_intermediates(&mut self) -> Result<Vec<Vec<u8>>, AttestError> {
        use tss_esapi::abstraction::nv;
        use tss_esapi::handles::TpmHandle;
        use tss_esapi::interface_types::resource_handles::NvAuth;
        let mut out = Vec::new();
        let indices = nv::list(&mut self.ctx).map_err(tpm_err("NV listing"))?;
        for (public, _) in indices {
            let idx = public.nv_index();
            if !(0x01c0_0100..=0x01c0_01ff).contains(&u32::from(idx)) {
                continue;
            }
            let handle = self
                .ctx
                .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::NvIndex(idx)))
                .map_err(tpm_err("TR_FromTPMPublic(NV)"))?;
            let read = self
                .ctx
                .execute_with_nullauth_session(|c| {
                    nv::read_full(c, NvAuth::NvIndex(handle.into()), idx)
                })
                .map_err(tpm_err("NV_Read(intermediate)"));
            let mut h = handle;
            let _ = self.ctx.tr_close(&mut h);
            out.push(read?);
        }
        Ok(out)
    }

    /// Runs `f` with the EK (created from the TCG default template, which
    /// reproduces the same key every time) loaded, then flushes it.
    fn with_ek<T>(
        &mut self,
        alg: EkAlgorithm,
        f: impl FnOnce(&mut Self, KeyHandle) -> Result<T, AttestError>,
    ) -> Result<T, AttestError> {
        let ek = create_ek_object_2(&mut self.ctx, alg.selection(), DefaultKey)
            .map_err(tpm_err("CreatePrimary(EK)"))?;
        let result = f(self, ek);
        let flushed = self
            .ctx
            .flush_context(ek.into())
            .map_err(tpm_err("FlushContext(EK)"));
        let out = result?;
        flushed?;
        Ok(out)
    }

    /// The EK's public area (TPM2B_PUBLIC).
    pub fn ek_public(&mut self, alg: EkAlgorithm) -> Result<Vec<u8>, AttestError> {
        self.with_ek(alg, |tpm, ek| {
            let (public, _, _) = tpm.ctx.read_public(ek).map_err(tpm_err("ReadPublic(EK)"))?;
            tpm2b_public(&public)
        })
    }

    /// Creates an attestation key under the RSA-2048 EK: restricted, signing
    /// only, fixedTPM and fixedParent, with no authorisation value.
    pub fn create_ak(&mut self, alg: AkAlgorithm) -> Result<KeyBlob, AttestError> {
        self.create_under_ek(alg, AkTemplate)
    }

    /// Creates an unrestricted ECC P-256 signing key under the EK, for a
    /// machine's identity (mTLS): it signs digests and never leaves the TPM.
    pub fn create_signing_key(&mut self) -> Result<KeyBlob, AttestError> {
        self.create_under_ek(AkAlgorithm::EccP256, UnrestrictedSigning)
    }

    fn create_under_ek<C: KeyCustomization>(
        &mut self,
        alg: AkAlgorithm,
        custom: C,
    ) -> Result<KeyBlob, AttestError> {
        let (key_alg, scheme) = match alg {
            AkAlgorithm::EccP256 => (
                AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
                SignatureSchemeAlgorithm::EcDsa,
            ),
            AkAlgorithm::Rsa2048 => (
                AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
                SignatureSchemeAlgorithm::RsaSsa,
            ),
        };
        self.with_ek(EkAlgorithm::Rsa2048, |tpm, ek| {
            let created = ak::create_ak_2(
                &mut tpm.ctx,
                ek,
                HashingAlgorithm::Sha256,
                key_alg,
                scheme,
                None,
                custom,
            )
            .map_err(tpm_err("Create(key under EK)"))?;
            Ok(KeyBlob {
                public: tpm2b_public(&created.out_public)?,
                private: created.out_private.value().to_vec(),
            })
        })
    }

    /// The handle of `key`, loading it under the EK if it is not loaded.
    fn load(&mut self, key: &KeyBlob) -> Result<KeyHandle, AttestError> {
        if let Some((_, h)) = self.loaded.iter().find(|(p, _)| *p == key.public) {
            return Ok(*h);
        }
        if self.loaded.len() >= MAX_LOADED {
            let (_, old) = self.loaded.remove(0);
            self.ctx
                .flush_context(old.into())
                .map_err(tpm_err("FlushContext(key)"))?;
        }
        let public = public_from_tpm2b(&key.public)?;
        let private =
            Private::try_from(key.private.clone()).map_err(input_err("Load: private area"))?;
        let handle = self.with_ek(EkAlgorithm::Rsa2048, |tpm, ek| {
            ak::load_ak(&mut tpm.ctx, ek, None, private, public)
                .map_err(tpm_err("Load(key under EK)"))
        })?;
        self.loaded.push((key.public.clone(), handle));
        Ok(handle)
    }

    /// TPM2_ActivateCredential: recovers the secret a verifier sealed to the
    /// RSA-2048 EK and bound to `ak`'s Name. Only this TPM can do it.
    pub fn activate_credential(
        &mut self,
        ak: &KeyBlob,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, AttestError> {
        let blob = IdObject::try_from(credential_blob.to_vec())
            .map_err(input_err("ActivateCredential: credential blob"))?;
        let secret = EncryptedSecret::try_from(encrypted_secret.to_vec())
            .map_err(input_err("ActivateCredential: encrypted secret"))?;
        let ak_handle = self.load(ak)?;
        self.with_ek(EkAlgorithm::Rsa2048, |tpm, ek| {
            // The EK's policy is PolicySecret(TPM_RH_ENDORSEMENT) (TCG EK profile).
            let policy = tpm.start_session(SessionType::Policy)?;
            let hmac = match tpm.start_session(SessionType::Hmac) {
                Ok(h) => h,
                Err(e) => {
                    tpm.flush_session(policy);
                    return Err(e);
                }
            };
            let result = (|| {
                let policy_session =
                    PolicySession::try_from(policy).map_err(input_err("PolicySecret"))?;
                tpm.ctx
                    .execute_with_nullauth_session(|c| {
                        c.policy_secret(
                            policy_session,
                            AuthHandle::Endorsement,
                            Nonce::default(),
                            Digest::default(),
                            Nonce::default(),
                            None,
                        )
                    })
                    .map_err(tpm_err("PolicySecret(endorsement)"))?;
                tpm.ctx
                    .execute_with_sessions((Some(hmac), Some(policy), None), |c| {
                        c.activate_credential(ak_handle, ek, blob, secret)
                    })
                    .map_err(tpm_err("ActivateCredential"))
            })();
            tpm.flush_session(policy);
            tpm.flush_session(hmac);
            Ok(Zeroizing::new(result?.value().to_vec()))
        })
    }

    /// Starts a session; an HMAC session also encrypts parameters (only one
    /// session per command may).
    fn start_session(&mut self, kind: SessionType) -> Result<AuthSession, AttestError> {
        let session = self
            .ctx
            .start_auth_session(
                None,
                None,
                None,
                kind,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .map_err(tpm_err("StartAuthSession"))?
            .ok_or(AttestError::Tpm {
                operation: "StartAuthSession",
                reason: "no session returned".into(),
            })?;
        let (attrs, mask) = match kind {
            SessionType::Hmac => SessionAttributesBuilder::new()
                .with_decrypt(true)
                .with_encrypt(true)
                .build(),
            _ => SessionAttributesBuilder::new().build(),
        };
        if let Err(e) = self.ctx.tr_sess_set_attributes(session, attrs, mask) {
            self.flush_session(session);
            return Err(tpm_err("TRSess_SetAttributes")(e));
        }
        Ok(session)
    }

    fn flush_session(&mut self, session: AuthSession) {
        let handle: SessionHandle = session.into();
        if let Err(e) = self.ctx.flush_context(ObjectHandle::from(handle)) {
            tracing::warn!(error = %e, "could not flush a TPM session");
        }
    }

    /// The SHA-256 bank's current values of `pcrs` (what a policy over
    /// raw PCR values would expect of this machine now).
    pub fn pcr_values(&mut self, pcrs: &[u8]) -> Result<PcrValues, AttestError> {
        let slots = pcrs
            .iter()
            .map(|p| {
                PcrSlot::try_from(1u32 << u32::from(*p).min(31))
                    .map_err(input_err("PCR_Read: PCR index"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let selection = PcrSelectionListBuilder::new()
            .with_selection(HashingAlgorithm::Sha256, &slots)
            .build()
            .map_err(input_err("PCR_Read: PCR selection"))?;
        let pcr_data = pcr::read_all(&mut self.ctx, selection).map_err(tpm_err("PCR_Read"))?;
        let mut values = PcrValues::default();
        if let Some(bank) = pcr_data.pcr_bank(HashingAlgorithm::Sha256) {
            for (p, slot) in pcrs.iter().zip(&slots) {
                if let Some(d) = bank.get_digest(*slot) {
                    values.insert(HashAlg::Sha256, *p, d.value().to_vec());
                }
            }
        }
        Ok(values)
    }

    /// TPM2_Quote by `ak` over SHA-256 PCRs `pcrs`, with `nonce` as
    /// qualifying data, and the PCR values it covers. PCRs read after the
    /// quote may have moved on (a measurement landed in between): the quote
    /// is retaken until the values read hash to the quoted digest.
    pub fn quote(&mut self, ak: &KeyBlob, pcrs: &[u8], nonce: &[u8]) -> Result<Quote, AttestError> {
        let slots = pcrs
            .iter()
            .map(|p| {
                PcrSlot::try_from(1u32 << u32::from(*p).min(31))
                    .map_err(input_err("Quote: PCR index"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let selection = PcrSelectionListBuilder::new()
            .with_selection(HashingAlgorithm::Sha256, &slots)
            .build()
            .map_err(input_err("Quote: PCR selection"))?;
        let data = Data::try_from(nonce.to_vec()).map_err(input_err("Quote: nonce"))?;
        let ak_handle = self.load(ak)?;
        let ours = PcrSelection::new(HashAlg::Sha256, pcrs);
        for _ in 0..QUOTE_ATTEMPTS {
            let (attest, signature) = self
                .ctx
                .execute_with_nullauth_session(|c| {
                    c.quote(
                        ak_handle,
                        data.clone(),
                        SignatureScheme::Null,
                        selection.clone(),
                    )
                })
                .map_err(tpm_err("Quote"))?;
            let pcr_data =
                pcr::read_all(&mut self.ctx, selection.clone()).map_err(tpm_err("PCR_Read"))?;
            let mut values = PcrValues::default();
            if let Some(bank) = pcr_data.pcr_bank(HashingAlgorithm::Sha256) {
                for (p, slot) in pcrs.iter().zip(&slots) {
                    if let Some(d) = bank.get_digest(*slot) {
                        values.insert(HashAlg::Sha256, *p, d.value().to_vec());
                    }
                }
            }
            let attest = attest.marshall().map_err(tpm_err("marshal TPMS_ATTEST"))?;
            let signature = signature
                .marshall()
                .map_err(tpm_err("marshal TPMT_SIGNATURE"))?;
            if quoted_digest_matches(&attest, &values, &ours) {
                return Ok(Quote {
                    attest,
                    signature,
                    pcrs: values,
                });
            }
        }
        Err(AttestError::Tpm {
            operation: "Quote",
            reason: format!(
                "PCRs kept changing between quote and read ({QUOTE_ATTEMPTS} attempts)"
            ),
        })
    }

    /// TPM2_Certify: `ak` attests that `key` lives in this TPM.
    /// Returns (TPMS_ATTEST, TPMT_SIGNATURE).
    pub fn certify(
        &mut self,
        key: &KeyBlob,
        ak: &KeyBlob,
        nonce: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), AttestError> {
        let data = Data::try_from(nonce.to_vec()).map_err(input_err("Certify: nonce"))?;
        let key_handle = self.load(key)?;
        let ak_handle = self.load(ak)?;
        let (attest, signature) = self
            .ctx
            .execute_with_sessions(
                (
                    Some(AuthSession::Password),
                    Some(AuthSession::Password),
                    None,
                ),
                |c| c.certify(key_handle.into(), ak_handle, data, SignatureScheme::Null),
            )
            .map_err(tpm_err("Certify"))?;
        Ok((
            attest.marshall().map_err(tpm_err("marshal TPMS_ATTEST"))?,
            signature
                .marshall()
                .map_err(tpm_err("marshal TPMT_SIGNATURE"))?,
        ))
    }

    /// Signs a SHA-256 digest with an unrestricted signing key; returns the
    /// TPMT_SIGNATURE.
    pub fn sign_digest(&mut self, key: &KeyBlob, digest: &[u8]) -> Result<Vec<u8>, AttestError> {
        let d = Digest::try_from(digest.to_vec()).map_err(input_err("Sign: digest"))?;
        let handle = self.load(key)?;
        let scheme = SignatureScheme::EcDsa {
            hash_scheme: HashScheme::new(HashingAlgorithm::Sha256),
        };
        let ticket = HashcheckTicket::try_from(tss_esapi::tss2_esys::TPMT_TK_HASHCHECK {
            tag: tss_esapi::constants::tss::TPM2_ST_HASHCHECK,
            hierarchy: tss_esapi::constants::tss::TPM2_RH_NULL,
            digest: Default::default(),
        })
        .map_err(input_err("Sign: null ticket"))?;
        let sig = self
            .ctx
            .execute_with_nullauth_session(|c| c.sign(handle, d, scheme, ticket))
            .map_err(tpm_err("Sign"))?;
        sig.marshall().map_err(tpm_err("marshal TPMT_SIGNATURE"))
    }

    /// How many keys this `Tpm` keeps loaded (for tests of handle hygiene).
    pub fn loaded_keys(&self) -> usize {
        self.loaded.len()
    }
}

fn quoted_digest_matches(attest: &[u8], values: &PcrValues, selection: &PcrSelection) -> bool {
    use crate::verify::attestation::{Attestation, Attested};
    let Ok(a) = Attestation::parse(attest) else {
        return false;
    };
    let Attested::Quote {
        pcr_digest,
        selection: quoted,
    } = a.attested
    else {
        return false;
    };
    quoted == *selection
        && values
            .quote_digest(&quoted, HashAlg::Sha256)
            .is_ok_and(|d| d == pcr_digest)
}

fn tpm2b_public(public: &Public) -> Result<Vec<u8>, AttestError> {
    let tpmt = public.marshall().map_err(tpm_err("marshal TPMT_PUBLIC"))?;
    let mut out = Vec::with_capacity(tpmt.len() + 2);
    crate::verify::wire_put_tpm2b(&mut out, &tpmt);
    Ok(out)
}

fn public_from_tpm2b(bytes: &[u8]) -> Result<Public, AttestError> {
    use tss_esapi::traits::UnMarshall;
    let bad = |reason: &str| AttestError::Input {
        operation: "Load: public area",
        reason: reason.to_owned(),
    };
    let (len, rest) = bytes
        .split_first_chunk::<2>()
        .ok_or_else(|| bad("truncated"))?;
    if usize::from(u16::from_be_bytes(*len)) != rest.len() {
        return Err(bad("size field does not match"));
    }
    Public::unmarshall(rest).map_err(|e| bad(&e.to_string()))
}
