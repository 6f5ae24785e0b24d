#![no_main]
//! A TCG event log from an untrusted machine: parse and replay.

use libfuzzer_sys::fuzz_target;
use zeroth_attest::verify::event_log::replay;
use zeroth_attest::verify::pcr::PcrValues;

fuzz_target!(|data: &[u8]| {
    if let Ok(log) = replay(data) {
        let _ = log.check_against(&PcrValues::default());
    }
});
