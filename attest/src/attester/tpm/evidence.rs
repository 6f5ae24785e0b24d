//! Evidence from the TPM: PCR values, quotes over them by an attestation
//! key, and certifications of other keys by it.

use tss_esapi::abstraction::pcr;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{Data, PcrSelectionListBuilder, PcrSlot, SignatureScheme};
use tss_esapi::traits::Marshall;

use crate::verify::alg::HashAlg;
use crate::verify::pcr::{PcrSelection, PcrValues};

use super::*;

impl Tpm {
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
