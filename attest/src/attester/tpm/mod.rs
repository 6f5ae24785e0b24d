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
use tss_esapi::abstraction::{ak, AsymmetricAlgorithmSelection, DefaultKey, KeyCustomization};
use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{AuthHandle, KeyHandle, ObjectHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Digest, EncryptedSecret, HashScheme, HashcheckTicket, IdObject, Nonce, Private, Public,
    SignatureScheme, SymmetricDefinition,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::Marshall;
use tss_esapi::Context;
use zeroize::Zeroizing;

mod evidence;
mod types;

use types::{input_err, tpm_err, AkTemplate, UnrestrictedSigning};
pub use types::{AkAlgorithm, AttestError, EkAlgorithm, KeyBlob, Quote, TpmInfo};

/// TPM2_GetRandom returns at most one SHA-256 digest's worth per call.
const MAX_RANDOM_CHUNK: usize = 32;
/// Keys kept loaded between calls; TPMs guarantee only three object slots.
const MAX_LOADED: usize = 2;
/// How often a quote is retaken when PCRs change between quote and read.
const QUOTE_ATTEMPTS: usize = 5;

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
