#![no_main]
//! TPMT_SIGNATURE bytes as a machine sends them.

use libfuzzer_sys::fuzz_target;
use zeroth_attest::verify::attestation::Signature;

fuzz_target!(|data: &[u8]| {
    let _ = Signature::parse(data);
});
