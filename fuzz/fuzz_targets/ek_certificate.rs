#![no_main]
//! An EK certificate (DER) from an untrusted machine: path validation and
//! the match against an EK public area.

use libfuzzer_sys::fuzz_target;
use zeroth_attest::verify::ek::cert_key_matches;
use zeroth_attest::verify::public::Public;
use zeroth_attest::{verify_ek_chain, TrustAnchors};

const EK: &[u8] = include_bytes!("../../attest/tests/fixtures/ek.pub");

fuzz_target!(|data: &[u8]| {
    let anchors = TrustAnchors {
        roots: vec![data.to_vec()],
        intermediates: vec![],
    };
    let _ = verify_ek_chain(data, &anchors, std::time::SystemTime::UNIX_EPOCH);
    if let Ok(ek) = Public::from_tpm2b(EK) {
        let _ = cert_key_matches(data, &ek);
    }
});
