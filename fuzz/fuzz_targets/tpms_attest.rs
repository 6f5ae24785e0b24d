#![no_main]
//! TPMS_ATTEST bytes as a machine sends them.

use libfuzzer_sys::fuzz_target;
use zeroth_attest::verify::attestation::Attestation;

fuzz_target!(|data: &[u8]| {
    let _ = Attestation::parse(data);
});
