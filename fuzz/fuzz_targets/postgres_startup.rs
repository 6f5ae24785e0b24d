#![no_main]
//! What a local program sends first to the agent's PostgreSQL proxy: any
//! bytes become a start-up request or a reason, never a panic; a session's
//! parameters are unique and NUL-free.

use libfuzzer_sys::fuzz_target;
use zeroth::agent::proxy::postgres::startup::{length, parse, Startup};

fuzz_target!(|data: &[u8]| {
    if let Some(prefix) = data.get(..4) {
        let _ = length([prefix[0], prefix[1], prefix[2], prefix[3]]);
    }
    if let Ok(Startup::Session { params }) = parse(data) {
        for (i, (k, v)) in params.iter().enumerate() {
            assert!(!k.is_empty() && !k.contains('\0') && !v.contains('\0'));
            assert!(params[..i].iter().all(|(other, _)| other != k));
        }
    }
});
