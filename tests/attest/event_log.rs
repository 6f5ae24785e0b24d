use sha2::{Digest, Sha256};
use zeroth::lab::event_log::LogBuilder;
use zeroth::lab::Swtpm;
use zeroth_attest::verify::event_log::replay;
use zeroth_attest::verify::public::Public;
use zeroth_attest::verify::quote::{verify_quote, Ak};
use zeroth_attest::verify::VerifyError;
use zeroth_attest::{AkAlgorithm, Attester, EkAlgorithm};

use crate::tools::{hex, Tpm2Tools};

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

    let replayed = replay(log.bytes()).unwrap();
    assert_eq!(replayed.events.len(), 3);
    replayed.check_against(&verified.pcrs).unwrap();

    // A log that hides an event, or alters one, does not match the quote.
    let mut forged = LogBuilder::new();
    for (pcr, d, data) in events.iter().take(2) {
        forged = forged.event(*pcr, d, data.as_bytes());
    }
    let err = replay(forged.bytes())
        .unwrap()
        .check_against(&verified.pcrs)
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::EventLogMismatch { index: 9, .. }),
        "{err}"
    );
    let mut altered = log.bytes().to_vec();
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
        replay(&log.bytes()[..log.bytes().len() - 3]),
        Err(VerifyError::Malformed { .. })
    ));
}
