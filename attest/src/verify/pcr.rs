//! PCR selections (TPML_PCR_SELECTION, Part 2 §10.9.7), reported values,
//! the quote's PCR digest, and PCR policies.

use std::collections::BTreeMap;

use super::alg::HashAlg;
use super::wire::Reader;
use super::VerifyError;

/// PCR indices per bank, in the order the TPM lists them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PcrSelection {
    pub banks: Vec<(u16, Vec<u8>)>,
}

impl PcrSelection {
    /// A selection of `pcrs` in one bank.
    pub fn new(bank: HashAlg, pcrs: &[u8]) -> Self {
        let mut p = pcrs.to_vec();
        p.sort_unstable();
        p.dedup();
        Self {
            banks: vec![(bank.tpm_id(), p)],
        }
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, VerifyError> {
        let count = r.u32("pcrSelect.count")?;
        // TPM2_NUM_PCR_BANKS is 16 in the reference implementation.
        if count > 16 {
            return Err(VerifyError::Malformed {
                structure: "TPML_PCR_SELECTION",
                reason: format!("{count} banks"),
            });
        }
        let mut banks = Vec::new();
        for _ in 0..count {
            let hash = r.u16("pcrSelect.hash")?;
            let size = r.u8("pcrSelect.sizeofSelect")?;
            let bitmap = r.bytes(usize::from(size), "pcrSelect.pcrSelect")?;
            let mut pcrs = Vec::new();
            for (byte_i, byte) in bitmap.iter().enumerate() {
                for bit in 0..8 {
                    if byte & (1 << bit) != 0 {
                        // sizeofSelect is a u8, so indices stay below 2048; PCRs are < 256 in practice.
                        let idx = byte_i * 8 + bit;
                        let idx = u8::try_from(idx).map_err(|_| VerifyError::Malformed {
                            structure: "TPML_PCR_SELECTION",
                            reason: format!("PCR index {idx}"),
                        })?;
                        pcrs.push(idx);
                    }
                }
            }
            banks.push((hash, pcrs));
        }
        Ok(Self { banks })
    }

    /// TPML_PCR_SELECTION encoding (3-byte bitmaps, as TPMs use for 24 PCRs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = (self.banks.len() as u32).to_be_bytes().to_vec();
        for (hash, pcrs) in &self.banks {
            out.extend_from_slice(&hash.to_be_bytes());
            let size = pcrs
                .iter()
                .map(|p| usize::from(*p) / 8 + 1)
                .max()
                .unwrap_or(0)
                .max(3);
            out.push(size as u8);
            let mut bitmap = vec![0u8; size];
            for p in pcrs {
                bitmap[usize::from(*p) / 8] |= 1 << (p % 8);
            }
            out.extend(bitmap);
        }
        out
    }
}

/// PCR values a machine reports: bank -> index -> digest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PcrValues(pub BTreeMap<(u16, u8), Vec<u8>>);

impl PcrValues {
    pub fn insert(&mut self, bank: HashAlg, index: u8, value: Vec<u8>) {
        self.0.insert((bank.tpm_id(), index), value);
    }

    pub fn get(&self, bank: HashAlg, index: u8) -> Option<&[u8]> {
        self.0.get(&(bank.tpm_id(), index)).map(Vec::as_slice)
    }

    /// The digest TPM2_Quote puts in pcrDigest: H(concatenation of the
    /// selected PCR values in selection order), with the signing hash.
    pub fn quote_digest(
        &self,
        selection: &PcrSelection,
        hash: HashAlg,
    ) -> Result<Vec<u8>, VerifyError> {
        let mut parts: Vec<&[u8]> = Vec::new();
        for (bank, pcrs) in &selection.banks {
            let bank_alg = HashAlg::from_tpm(*bank)?;
            for p in pcrs {
                let v = self.0.get(&(*bank, *p)).ok_or_else(|| {
                    VerifyError::PcrMismatch(format!(
                        "no value reported for PCR {bank_alg}:{p}, which the quote covers"
                    ))
                })?;
                if v.len() != bank_alg.size() {
                    return Err(VerifyError::PcrMismatch(format!(
                        "PCR {bank_alg}:{p} is {} bytes, not {}",
                        v.len(),
                        bank_alg.size()
                    )));
                }
                parts.push(v);
            }
        }
        Ok(hash.digest(&parts))
    }
}

/// Expected PCR values, per bank and index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PcrPolicy(pub BTreeMap<(u16, u8), Vec<u8>>);

impl PcrPolicy {
    pub fn expect(&mut self, bank: HashAlg, index: u8, value: Vec<u8>) {
        self.0.insert((bank.tpm_id(), index), value);
    }

    /// Checks reported (and quote-verified) values against the policy.
    pub fn check(&self, values: &PcrValues) -> Result<(), VerifyError> {
        for ((bank, index), expected) in &self.0 {
            let bank_name = HashAlg::from_tpm(*bank)
                .map(|h| h.to_string())
                .unwrap_or_default();
            let found = values.0.get(&(*bank, *index));
            if found != Some(expected) {
                return Err(VerifyError::PcrPolicy {
                    bank: bank_name,
                    index: *index,
                    expected: hex(expected),
                    found: found
                        .map(|f| hex(f))
                        .unwrap_or_else(|| "not reported".into()),
                });
            }
        }
        Ok(())
    }
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_round_trips_through_its_encoding() {
        let s = PcrSelection::new(HashAlg::Sha256, &[7, 0, 16, 23, 7]);
        let bytes = s.to_bytes();
        let mut r = Reader::new("t", &bytes);
        assert_eq!(PcrSelection::read(&mut r).unwrap(), s);
        assert_eq!(s.banks[0].1, vec![0, 7, 16, 23]);
    }

    #[test]
    fn policy_names_the_pcr_that_differs() {
        let mut values = PcrValues::default();
        values.insert(HashAlg::Sha256, 7, vec![1; 32]);
        let mut policy = PcrPolicy::default();
        policy.expect(HashAlg::Sha256, 7, vec![1; 32]);
        assert!(policy.check(&values).is_ok());
        policy.expect(HashAlg::Sha256, 8, vec![0; 32]);
        let err = policy.check(&values).unwrap_err().to_string();
        assert!(
            err.contains("sha256:8") && err.contains("not reported"),
            "{err}"
        );
    }
}
