//! The TCG PC Client crypto-agile event log (TCG PC Client Platform Firmware
//! Profile, §10): parsing and replay. Replaying the log recomputes the PCRs;
//! when they equal the values a verified quote covers, every event in the
//! log is as authentic as the quote, and policy may look at the events.
//!
//! Unlike TPM structures, the log is little-endian.

use std::collections::BTreeMap;

use super::alg::{self, HashAlg};
use super::pcr::{hex, PcrValues};
use super::VerifyError;

const EV_NO_ACTION: u32 = 0x0000_0003;
const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
const STARTUP_LOCALITY: &[u8; 16] = b"StartupLocality\0";
/// PCRs a log may extend (0–23 on PC Client platforms).
const MAX_PCR: u32 = 23;

/// One measured event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub pcr: u8,
    pub event_type: u32,
    /// Digest per bank (TPM_ALG_ID).
    pub digests: BTreeMap<u16, Vec<u8>>,
    pub data: Vec<u8>,
}

/// A parsed log: its measured events (EV_NO_ACTION ones, which extend
/// nothing, excluded) and the PCR values replaying them gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog {
    pub events: Vec<Event>,
    pub pcrs: PcrValues,
}

struct Le<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Le<'a> {
    fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], VerifyError> {
        match self.pos.checked_add(n).filter(|e| *e <= self.buf.len()) {
            Some(end) => {
                let out = &self.buf[self.pos..end];
                self.pos = end;
                Ok(out)
            }
            None => Err(malformed(format!(
                "truncated at {field} (offset {})",
                self.pos
            ))),
        }
    }
    fn u16(&mut self, f: &'static str) -> Result<u16, VerifyError> {
        let b = self.bytes(2, f)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, f: &'static str) -> Result<u32, VerifyError> {
        let b = self.bytes(4, f)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

fn malformed(reason: String) -> VerifyError {
    VerifyError::Malformed {
        structure: "TCG event log",
        reason,
    }
}

/// Parses a crypto-agile event log and replays it into PCR values for every
/// bank the log's header declares that this verifier implements.
pub fn replay(log: &[u8]) -> Result<EventLog, VerifyError> {
    let mut r = Le { buf: log, pos: 0 };
    // The first event is in the SHA-1 format and carries the Spec ID header.
    let pcr = r.u32("header.pcrIndex")?;
    let event_type = r.u32("header.eventType")?;
    r.bytes(20, "header.digest")?;
    let size = r.u32("header.eventSize")? as usize;
    let header = r.bytes(size, "header.event")?;
    if pcr != 0 || event_type != EV_NO_ACTION || !header.starts_with(SPEC_ID_SIGNATURE) {
        return Err(malformed(
            "not a crypto-agile log (no Spec ID Event03 header)".into(),
        ));
    }
    let mut h = Le {
        buf: header,
        pos: 16,
    };
    h.bytes(8, "specId.platformClass/version")?;
    let count = h.u32("specId.numberOfAlgorithms")?;
    if count == 0 || count > 16 {
        return Err(malformed(format!("{count} digest algorithms declared")));
    }
    let mut sizes: BTreeMap<u16, usize> = BTreeMap::new();
    for _ in 0..count {
        let id = h.u16("specId.algorithmId")?;
        let size = h.u16("specId.digestSize")?;
        sizes.insert(id, usize::from(size));
    }

    let mut banks: BTreeMap<u16, HashAlg> = BTreeMap::new();
    for id in sizes.keys() {
        if let Ok(alg) = HashAlg::from_tpm(*id) {
            if sizes[id] != alg.size() {
                return Err(malformed(format!(
                    "{alg} declared with {} byte digests",
                    sizes[id]
                )));
            }
            banks.insert(*id, alg);
        }
    }
    let mut pcrs: BTreeMap<(u16, u8), Vec<u8>> = BTreeMap::new();
    let mut events = Vec::new();
    while !r.done() {
        let pcr = r.u32("event.pcrIndex")?;
        if pcr > MAX_PCR {
            return Err(malformed(format!("event for PCR {pcr}")));
        }
        let pcr = pcr as u8;
        let event_type = r.u32("event.eventType")?;
        let n = r.u32("event.digests.count")?;
        if n > count {
            return Err(malformed(format!(
                "an event with {n} digests, {count} algorithms declared"
            )));
        }
        let mut digests = BTreeMap::new();
        for _ in 0..n {
            let id = r.u16("event.digest.hashAlg")?;
            let size = *sizes.get(&id).ok_or_else(|| {
                malformed(format!("digest of undeclared algorithm {}", alg::name(id)))
            })?;
            digests.insert(id, r.bytes(size, "event.digest")?.to_vec());
        }
        let size = r.u32("event.eventSize")? as usize;
        let data = r.bytes(size, "event.event")?.to_vec();
        if event_type == EV_NO_ACTION {
            // Not extended, so never returned as measured. One kind sets
            // PCR 0's starting value, and only before anything extended it
            // (PC Client PFP, 10.4.5.3): later it would rewrite history.
            if data.len() == 17 && data.starts_with(STARTUP_LOCALITY) {
                if pcr != 0 || pcrs.keys().any(|(_, p)| *p == 0) {
                    return Err(malformed(format!(
                        "a StartupLocality event at event {} after PCR 0 was set",
                        events.len() + 1
                    )));
                }
                for (id, alg) in &banks {
                    let mut start = vec![0u8; alg.size()];
                    if let Some(last) = start.last_mut() {
                        *last = data[16];
                    }
                    pcrs.insert((*id, 0), start);
                }
            }
            continue;
        }
        for (id, alg) in &banks {
            let d = digests.get(id).ok_or_else(|| {
                malformed(format!("event {} has no {alg} digest", events.len() + 1))
            })?;
            let cur = pcrs
                .entry((*id, pcr))
                .or_insert_with(|| vec![0u8; alg.size()]);
            *cur = alg.digest(&[cur, d]);
        }
        events.push(Event {
            pcr,
            event_type,
            digests,
            data,
        });
    }
    Ok(EventLog {
        events,
        pcrs: PcrValues(pcrs),
    })
}

impl EventLog {
    /// Checks the replayed PCRs against values a verified quote covers.
    /// Every PCR both contain must agree; a PCR the quote covers and the log
    /// never touched must still be zero.
    pub fn check_against(&self, quoted: &PcrValues) -> Result<(), VerifyError> {
        for ((bank, index), value) in &quoted.0 {
            let Ok(alg) = HashAlg::from_tpm(*bank) else {
                continue;
            };
            let replayed = self
                .pcrs
                .0
                .get(&(*bank, *index))
                .cloned()
                .unwrap_or_else(|| vec![0u8; alg.size()]);
            if replayed != *value {
                return Err(VerifyError::EventLogMismatch {
                    bank: alg.to_string(),
                    index: *index,
                    replayed: hex(&replayed),
                    quoted: hex(value),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crypto-agile log with one SHA-256 bank.
    fn header() -> Vec<u8> {
        let mut spec = SPEC_ID_SIGNATURE.to_vec();
        spec.extend([0u8; 8]);
        spec.extend(1u32.to_le_bytes());
        spec.extend(alg::SHA256.to_le_bytes());
        spec.extend(32u16.to_le_bytes());
        spec.push(0);
        let mut out = 0u32.to_le_bytes().to_vec();
        out.extend(EV_NO_ACTION.to_le_bytes());
        out.extend([0u8; 20]);
        out.extend((spec.len() as u32).to_le_bytes());
        out.extend(spec);
        out
    }

    fn event(log: &mut Vec<u8>, pcr: u32, kind: u32, digest: [u8; 32], data: &[u8]) {
        log.extend(pcr.to_le_bytes());
        log.extend(kind.to_le_bytes());
        log.extend(1u32.to_le_bytes());
        log.extend(alg::SHA256.to_le_bytes());
        log.extend(digest);
        log.extend((data.len() as u32).to_le_bytes());
        log.extend(data);
    }

    fn locality(n: u8) -> Vec<u8> {
        let mut d = STARTUP_LOCALITY.to_vec();
        d.push(n);
        d
    }

    const EV_POST_CODE: u32 = 1;

    #[test]
    fn startup_locality_sets_pcr0_only_before_it_is_extended() {
        let mut log = header();
        event(&mut log, 0, EV_NO_ACTION, [0; 32], &locality(3));
        event(&mut log, 0, EV_POST_CODE, [7; 32], b"firmware");
        let replayed = replay(&log).unwrap();
        let mut start = [0u8; 32];
        start[31] = 3;
        let want = HashAlg::Sha256.digest(&[&start, &[7; 32]]);
        assert_eq!(replayed.pcrs.0[&(alg::SHA256, 0)], want);

        // The same event after PCR 0 was extended would rewrite history.
        let mut late = header();
        event(&mut late, 0, EV_POST_CODE, [7; 32], b"firmware");
        event(&mut late, 0, EV_NO_ACTION, [0; 32], &locality(3));
        let err = replay(&late).unwrap_err().to_string();
        assert!(err.contains("StartupLocality"), "{err}");
    }

    #[test]
    fn events_that_extend_nothing_are_not_returned_as_measured() {
        let mut log = header();
        event(&mut log, 4, EV_NO_ACTION, [9; 32], b"vendor note");
        event(&mut log, 4, EV_POST_CODE, [7; 32], b"loader");
        let replayed = replay(&log).unwrap();
        assert_eq!(replayed.events.len(), 1);
        assert_eq!(replayed.events[0].data, b"loader");
        assert_eq!(
            replayed.pcrs.0[&(alg::SHA256, 4)],
            HashAlg::Sha256.digest(&[&[0u8; 32], &[7u8; 32]])
        );
    }
}
