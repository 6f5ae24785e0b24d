//! Random and mutated bytes never panic the verifier's parsers or checks:
//! they return an error (or, for valid encodings, a value).

use proptest::prelude::*;
use zeroth_attest::verify::alg::HashAlg;
use zeroth_attest::verify::attestation::{Attestation, Signature};
use zeroth_attest::verify::credential::make_credential;
use zeroth_attest::verify::ek::cert_key_matches;
use zeroth_attest::verify::pcr::PcrValues;
use zeroth_attest::verify::public::Public;
use zeroth_attest::verify::quote::{verify_quote, Ak};
use zeroth_attest::{verify_ek_chain, TrustAnchors};

// Real structures from swtpm via tpm2-tools: an RSA-2048 EK, an ECC P-256
// AK under it, and a quote by that AK over sha256:0,7 (PCRs all zero) with
// the nonce 32 x 0x01.
const EK: &[u8] = include_bytes!("fixtures/ek.pub");
const AK: &[u8] = include_bytes!("fixtures/ak.pub");
const QUOTE: &[u8] = include_bytes!("fixtures/q.msg");
const QUOTE_SIG: &[u8] = include_bytes!("fixtures/q.sig");

fn ak() -> Ak {
    Ak::under_ek(
        Public::from_tpm2b(AK).unwrap(),
        &Public::from_tpm2b(EK).unwrap(),
    )
}

fn zero_pcrs() -> PcrValues {
    let mut v = PcrValues::default();
    for p in [0, 7] {
        v.insert(HashAlg::Sha256, p, vec![0; 32]);
    }
    v
}

#[test]
fn the_fixtures_verify_so_mutations_start_from_valid_input() {
    verify_quote(&ak(), QUOTE, QUOTE_SIG, &[1; 32], &zero_pcrs(), None).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn public_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Public::from_tpm2b(&bytes);
        let _ = Public::from_tpmt(&bytes);
    }

    #[test]
    fn attest_and_signature_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Attestation::parse(&bytes);
        let _ = Signature::parse(&bytes);
    }

    #[test]
    fn certificate_checks_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..900)) {
        let _ = verify_ek_chain(&bytes, &TrustAnchors::default(), std::time::SystemTime::now());
        let _ = cert_key_matches(&bytes, &ak().public);
    }

    #[test]
    fn mutated_public_areas_never_panic_name_or_credential(
        flips in proptest::collection::vec((0usize..90, any::<u8>()), 1..8),
        cut in 0usize..90,
    ) {
        let mut b = AK.to_vec();
        for (i, v) in flips {
            let n = b.len();
            b[i % n] ^= v;
        }
        b.truncate(cut.max(2));
        if let Ok(p) = Public::from_tpm2b(&b) {
            let _ = p.name();
            let _ = make_credential(&p, &p.name(), &[1; 16]);
        }
    }

    #[test]
    fn quote_verification_of_garbage_never_panics(
        attest in proptest::collection::vec(any::<u8>(), 0..300),
        sig in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        prop_assert!(verify_quote(&ak(), &attest, &sig, &[1; 32], &zero_pcrs(), None).is_err());
    }

    #[test]
    fn any_mutation_of_a_valid_quote_is_refused_without_panic(
        flips in proptest::collection::vec((0usize..145, 1u8..=255), 1..4),
        sig_flip in proptest::option::of((0usize..72, 1u8..=255)),
    ) {
        let mut attest = QUOTE.to_vec();
        for (i, v) in flips {
            let n = attest.len();
            attest[i % n] ^= v;
        }
        let mut sig = QUOTE_SIG.to_vec();
        if let Some((i, v)) = sig_flip {
            sig[i % 72] ^= v;
        }
        // Flips that cancel each other out leave the genuine quote.
        prop_assume!(attest != QUOTE || sig != QUOTE_SIG);
        prop_assert!(verify_quote(&ak(), &attest, &sig, &[1; 32], &zero_pcrs(), None).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn event_log_replay_never_panics(
        flips in proptest::collection::vec((0usize..400, any::<u8>()), 0..6),
        cut in 0usize..400,
        tail in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut log = SEED_LOG.to_vec();
        for (i, v) in flips {
            let n = log.len();
            log[i % n] ^= v;
        }
        log.truncate(cut);
        log.extend(tail);
        if let Ok(l) = zeroth_attest::verify::event_log::replay(&log) {
            let _ = l.check_against(&zero_pcrs());
        }
    }
}

const SEED_LOG: &[u8] = include_bytes!("../../fuzz/seeds/event_log/two_banks");

#[test]
fn the_seed_log_replays_with_startup_locality() {
    let log = zeroth_attest::verify::event_log::replay(SEED_LOG).unwrap();
    // Four events, one of them the StartupLocality EV_NO_ACTION: three measured.
    assert_eq!(log.events.len(), 3);
    // PCR 0 starts at locality 3, then measures "crtm".
    let mut start = vec![0u8; 32];
    start[31] = 3;
    let crtm = HashAlg::Sha256.digest(&[b"crtm"]);
    assert_eq!(
        log.pcrs.get(HashAlg::Sha256, 0).unwrap(),
        HashAlg::Sha256.digest(&[&start, &crtm])
    );
}
