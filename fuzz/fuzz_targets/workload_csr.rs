#![no_main]
//! A node's agent sends the server a CSR for each workload key: any bytes
//! must give a P-256 key whose signature over the request verified, or a
//! named refusal, never a panic.

use libfuzzer_sys::fuzz_target;
use zeroth::identity::csr::p256_key;

fuzz_target!(|data: &[u8]| {
    if let Ok(point) = p256_key(data) {
        assert_eq!(point[0], 0x04);
    }
});
