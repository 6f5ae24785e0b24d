#![no_main]
//! What a local program sends the workload socket's gRPC side: any bytes,
//! in any chunks, must come out as HTTP/2 for `h2` or as a named refusal,
//! never a panic or an unbounded buffer; an `:authority` that `h2` would
//! refuse never reaches it. Read as the socket reads it (output taken
//! before more input), no step may hand `h2` more than the ready bound
//! plus one header list, however the client's blocks expand.

use libfuzzer_sys::fuzz_target;
use zeroth::agent::spiffe::authority::{Rewriter, MAX_HEADER_LIST, MAX_READY};

fuzz_target!(|data: &[u8]| {
    // The first byte chooses how the rest is cut into reads.
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    input.extend_from_slice(rest);
    let mut r = Rewriter::default();
    let bound = |chunk: usize| MAX_READY + MAX_HEADER_LIST + 16 * 1024 + 64 + chunk;
    for chunk in input.chunks(step) {
        let mut out = Vec::new();
        if r.feed(chunk, &mut out).is_err() {
            return;
        }
        assert!(out.len() <= bound(chunk.len()), "one read made {} bytes", out.len());
        while r.has_frames() {
            let mut more = Vec::new();
            if r.feed(&[], &mut more).is_err() {
                return;
            }
            assert!(more.len() <= bound(0), "one step made {} bytes", more.len());
        }
    }
});
