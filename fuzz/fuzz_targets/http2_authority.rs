#![no_main]
//! What a local program sends the workload socket's gRPC side: any bytes,
//! in any chunks, must come out as HTTP/2 for `h2` or as a named refusal,
//! never a panic or an unbounded buffer; an `:authority` that `h2` would
//! refuse never reaches it.

use libfuzzer_sys::fuzz_target;
use zeroth::agent::spiffe::authority::Rewriter;

fuzz_target!(|data: &[u8]| {
    // The first byte chooses how the rest is cut into reads.
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    input.extend_from_slice(rest);
    let mut r = Rewriter::default();
    let mut out = Vec::new();
    for chunk in input.chunks(step) {
        if r.feed(chunk, &mut out).is_err() {
            return;
        }
    }
    assert!(out.len() <= input.len() * 8 + 64 * 1024, "output grew without bound");
});
