use sha2::{Digest, Sha256};
use zeroth::lab::Swtpm;
use zeroth_attest::verify::event_log::replay;
use zeroth_attest::verify::public::Public;
use zeroth_attest::verify::quote::{verify_quote, Ak};
use zeroth_attest::verify::VerifyError;
use zeroth_attest::{AkAlgorithm, Attester, EkAlgorithm};

use crate::tools::{hex, Tpm2Tools};

/// A crypto-agile TCG event log with one SHA-256 bank, as firmware writes it.
struct LogBuilder(Vec<u8>);

impl LogBuilder {
    fn new() -> Self {
        let mut spec = b"Spec ID Event03\0".to_vec();
        spec.extend(0u32.to_le_bytes()); // platformClass
        spec.extend([0, 2, 0, 2]); // minor, major, errata, uintnSize
        spec.extend(1u32.to_le_bytes());
        spec.extend(0x000bu16.to_le_bytes());
        spec.extend(32u16.to_le_bytes());
        spec.push(0); // vendorInfoSize
        let mut out = Vec::new();
        out.extend(0u32.to_le_bytes());
        out.extend(3u32.to_le_bytes()); // EV_NO_ACTION
        out.extend([0u8; 20]);
        out.extend((spec.len() as u32).to_le_bytes());
        out.extend(spec);
        Self(out)
    }

    fn event(mut self, pcr: u32, digest: &[u8], data: &[u8]) -> Self {
        self.0.extend(pcr.to_le_bytes());
        self.0.extend(0x0000_000du32.to_le_bytes()); // EV_IPL
        self.0.extend(1u32.to_le_bytes());
        self.0.extend(0x000bu16.to_le_bytes());
        self.0.extend(digest);
        self.0.extend((data.len() as u32).to_le_bytes());
        self.0.extend(data);
        self
    }
}

#[test]
fn a_replayed_event_log_must_match_the_quoted_pcrs() {
    let lab = Swtpm::start().unwrap();
    let events: Vec<(u32, Vec<u8>, &str)> = vec![
        (8, Sha256::digest(b"kernel").to_vec(), "kernel"),
        (8, Sha256::digest(b"initrd").to_vec(), "initrd"),
        (9, Sha256::digest(b"cmdline").to_vec(), "cmdline"),
    ];
    {
        // Measure as the boot chain would (the lab TPM has no firmware).
        let tools = Tpm2Tools::new(&lab);
        for (pcr, d, _) in &events {
            tools.run(&["tpm2_pcrextend", &format!("{pcr}:sha256={}", hex(d))]);
        }
    }
    let mut log = LogBuilder::new();
    for (pcr, d, data) in &events {
        log = log.event(*pcr, d, data.as_bytes());
    }

    let tpm = Attester::open(&lab.tcti()).unwrap();
    let ek = Public::from_tpm2b(&tpm.run(|t| t.ek_public(EkAlgorithm::Rsa2048)).unwrap()).unwrap();
    let blob = tpm.run(|t| t.create_ak(AkAlgorithm::EccP256)).unwrap();
    let ak = Ak::under_ek(Public::from_tpm2b(&blob.public).unwrap(), &ek);
    let q = tpm
        .run(move |t| t.quote(&blob, &[8, 9, 10], &[3; 32]))
        .unwrap();
    let verified = verify_quote(&ak, &q.attest, &q.signature, &[3; 32], &q.pcrs, None).unwrap();

    let replayed = replay(&log.0).unwrap();
    assert_eq!(replayed.events.len(), 3);
    replayed.check_against(&verified.pcrs).unwrap();

    // A log that hides an event, or alters one, does not match the quote.
    let mut forged = LogBuilder::new();
    for (pcr, d, data) in events.iter().take(2) {
        forged = forged.event(*pcr, d, data.as_bytes());
    }
    let err = replay(&forged.0)
        .unwrap()
        .check_against(&verified.pcrs)
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::EventLogMismatch { index: 9, .. }),
        "{err}"
    );
    let mut altered = log.0.clone();
    // The last event ends with its digest (32), event size (4) and "cmdline" (7).
    let digest_at = altered.len() - 7 - 4 - 32;
    altered[digest_at + 5] ^= 1;
    let err = replay(&altered)
        .unwrap()
        .check_against(&verified.pcrs)
        .unwrap_err();
    assert!(matches!(err, VerifyError::EventLogMismatch { .. }), "{err}");
    // And truncation is a named parse error, not a panic.
    assert!(matches!(
        replay(&log.0[..log.0.len() - 3]),
        Err(VerifyError::Malformed { .. })
    ));
}
