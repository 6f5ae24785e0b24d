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

/// A parsed log: its events (the Spec ID header excluded) and the PCR values
/// replaying them gives.
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
            // Not extended; one kind sets PCR 0's starting value.
            if pcr == 0 && data.len() == 17 && data.starts_with(STARTUP_LOCALITY) {
                for (id, alg) in &banks {
                    let mut start = vec![0u8; alg.size()];
                    if let Some(last) = start.last_mut() {
                        *last = data[16];
                    }
                    pcrs.insert((*id, 0), start);
                }
            }
        } else {
            for (id, alg) in &banks {
                let d = digests.get(id).ok_or_else(|| {
                    malformed(format!("event {} has no {alg} digest", events.len() + 1))
                })?;
                let cur = pcrs
                    .entry((*id, pcr))
                    .or_insert_with(|| vec![0u8; alg.size()]);
                *cur = alg.digest(&[cur, d]);
            }
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
