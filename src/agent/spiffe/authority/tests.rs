//! The rewriter against hand-made HTTP/2 streams: what it keeps, what it
//! rewrites, and what it refuses.

use super::*;

/// A HEADERS frame carrying `headers`, HPACK-encoded by `enc`.
fn headers_frame(
    enc: &mut loona_hpack::Encoder<'_>,
    stream: u8,
    headers: &[(&[u8], &[u8])],
    flags: u8,
) -> Vec<u8> {
    let block = enc.encode(headers.iter().map(|(n, v)| (*n, *v)));
    let mut f = Vec::new();
    frame_header(&mut f, block.len(), HEADERS, flags, [0, 0, 0, stream]);
    f.extend_from_slice(&block);
    f
}

/// The header lists of the HEADERS/CONTINUATION frames in `bytes`,
/// decoded as `h2` would.
fn decoded(bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut dec = loona_hpack::Decoder::new();
    let mut at = PREFACE.len();
    let mut blocks = Vec::new();
    let mut current = Vec::new();
    while at < bytes.len() {
        let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
        let (kind, flags) = (bytes[at + 3], bytes[at + 4]);
        let payload = &bytes[at + 9..at + 9 + len];
        if kind == HEADERS || kind == CONTINUATION {
            let payload = if kind == HEADERS && flags & PRIORITY != 0 {
                &payload[5..]
            } else {
                payload
            };
            current.extend_from_slice(payload);
            if flags & END_HEADERS != 0 {
                blocks.push(dec.decode(&current).unwrap());
                current.clear();
            }
        }
        at += 9 + len;
    }
    blocks
}

#[test]
fn a_socket_path_authority_becomes_localhost_and_the_rest_is_kept() {
    let mut enc = loona_hpack::Encoder::new();
    let mut input = PREFACE.to_vec();
    let settings = [0, 0, 0, 4, 0, 0, 0, 0, 0];
    input.extend_from_slice(&settings);
    let request: [(&[u8], &[u8]); 5] = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", b"/SpiffeWorkloadAPI/FetchX509SVID"),
        (b":authority", b"%2Frun%2Fzeroth-agent%2Fapi.sock"),
        (b"workload.spiffe.io", b"true"),
    ];
    input.extend(headers_frame(&mut enc, 1, &request, END_HEADERS));
    // The second request leans on the dynamic table the first filled.
    input.extend(headers_frame(&mut enc, 3, &request, END_HEADERS));
    let good: [(&[u8], &[u8]); 2] = [(b":authority", b"localhost:1"), (b"x", b"y")];
    input.extend(headers_frame(&mut enc, 5, &good, END_HEADERS | END_STREAM));

    // Delivered a byte at a time, as a slow socket might.
    let mut r = Rewriter::default();
    let mut out = Vec::new();
    for b in &input {
        r.feed(std::slice::from_ref(b), &mut out).unwrap();
    }
    assert!(out.starts_with(PREFACE));
    assert_eq!(&out[PREFACE.len()..PREFACE.len() + 9], &settings);
    let blocks = decoded(&out);
    assert_eq!(blocks.len(), 3);
    for b in &blocks[..2] {
        assert_eq!(b[3], (b":authority".to_vec(), b"localhost".to_vec()));
        assert_eq!(b[2].1, b"/SpiffeWorkloadAPI/FetchX509SVID");
        assert_eq!(b[4].0, b"workload.spiffe.io");
    }
    assert_eq!(blocks[2][0].1, b"localhost:1", "a valid authority is kept");
    assert_eq!(r.rewritten, 2);
    // END_STREAM survives the re-encoding.
    assert!(out
        .windows(2)
        .any(|w| w == [HEADERS, END_HEADERS | END_STREAM]));
}

#[test]
fn continuations_padding_and_priority_are_handled() {
    let mut enc = loona_hpack::Encoder::new();
    // Under the header list bound, and cut into several frames below.
    let big = vec![b'v'; 12_000];
    let block = enc.encode([(&b":authority"[..], &b"/x.sock"[..]), (b"big", &big[..])]);
    let (a, b) = block.split_at(100);
    let mut input = PREFACE.to_vec();
    // HEADERS with padding and priority, then a CONTINUATION.
    let mut payload = vec![3u8];
    payload.extend_from_slice(&[0, 0, 0, 0, 16]);
    payload.extend_from_slice(a);
    payload.extend_from_slice(&[0, 0, 0]);
    frame_header(
        &mut input,
        payload.len(),
        HEADERS,
        PADDED | PRIORITY,
        [0, 0, 0, 1],
    );
    input.extend_from_slice(&payload);
    assert!(b.len() > 8_000, "{}", b.len());
    for chunk in b.chunks(4_000) {
        let last = chunk.as_ptr_range().end == b.as_ptr_range().end;
        let flags = if last { END_HEADERS } else { 0 };
        frame_header(&mut input, chunk.len(), CONTINUATION, flags, [0, 0, 0, 1]);
        input.extend_from_slice(chunk);
    }
    let mut out = Vec::new();
    Rewriter::default().feed(&input, &mut out).unwrap();
    let blocks = decoded(&out);
    assert_eq!(blocks[0][0].1, b"localhost");
    assert_eq!(blocks[0][1].1, big);
}

#[test]
fn malformed_streams_are_refused_by_name() {
    let mut r = Rewriter::default();
    let mut input = PREFACE.to_vec();
    frame_header(&mut input, MAX_FRAME + 1, 0, 0, [0; 4]);
    assert_eq!(
        r.feed(&input, &mut Vec::new()),
        Err(AuthorityError::FrameTooLarge(MAX_FRAME + 1))
    );
    let mut input = PREFACE.to_vec();
    frame_header(&mut input, 1, CONTINUATION, END_HEADERS, [0, 0, 0, 1]);
    input.push(0);
    assert_eq!(
        Rewriter::default().feed(&input, &mut Vec::new()),
        Err(AuthorityError::Interleaved("CONTINUATION"))
    );
    let mut input = PREFACE.to_vec();
    frame_header(&mut input, 2, HEADERS, END_HEADERS | PADDED, [0, 0, 0, 1]);
    input.extend_from_slice(&[9, 0]);
    assert_eq!(
        Rewriter::default().feed(&input, &mut Vec::new()),
        Err(AuthorityError::BadPadding)
    );
    let mut input = PREFACE.to_vec();
    frame_header(&mut input, 1, HEADERS, END_HEADERS, [0, 0, 0, 1]);
    input.push(0xff);
    assert!(matches!(
        Rewriter::default().feed(&input, &mut Vec::new()),
        Err(AuthorityError::Hpack(_))
    ));
    // Not HTTP/2 at all: passed on for h2 to refuse.
    let mut out = Vec::new();
    Rewriter::default()
        .feed(b"GET / HTTP/1.1\r\n", &mut out)
        .unwrap();
    assert_eq!(out, b"GET / HTTP/1.1\r\n");
}

/// One 4 KiB header put in the dynamic table, then blocks of one-byte
/// references to it: each byte decodes to 4 KiB.
fn bomb(references: usize, blocks: usize) -> Vec<u8> {
    let mut input = PREFACE.to_vec();
    let mut first = vec![0x40, 0x01, b'x'];
    put_int(&mut first, 0x00, 7, 4000);
    first.extend(std::iter::repeat_n(b'v', 4000));
    frame_header(&mut input, first.len(), HEADERS, END_HEADERS, [0, 0, 0, 1]);
    input.extend_from_slice(&first);
    for b in 0..blocks {
        let stream = [0, 0, 0, 3 + 2 * b as u8];
        let mut flags = 0;
        for (i, chunk) in vec![0xbe; references].chunks(MAX_FRAME).enumerate() {
            let kind = if i == 0 { HEADERS } else { CONTINUATION };
            if (i + 1) * MAX_FRAME >= references {
                flags |= END_HEADERS;
            }
            frame_header(&mut input, chunk.len(), kind, flags, stream);
            input.extend_from_slice(chunk);
        }
    }
    input
}

#[test]
fn a_header_list_that_decodes_past_the_bound_is_refused_holding_little() {
    // 64 KiB of references: 256 MiB once decoded.
    let input = bomb(MAX_BLOCK - 1, 1);
    let mut r = Rewriter::default();
    let mut out = Vec::new();
    let mut refused = None;
    for chunk in input.chunks(16 * 1024) {
        if let Err(e) = r.feed(chunk, &mut out) {
            refused = Some(e);
            break;
        }
    }
    assert_eq!(refused, Some(AuthorityError::ListTooLarge));
    assert!(out.len() < 2 * MAX_HEADER_LIST, "{} bytes held", out.len());
    // Just under the bound still passes, as h2 would take it.
    let fits = (MAX_HEADER_LIST - 4033) / (4000 + 1 + 32);
    let mut out = Vec::new();
    Rewriter::default().feed(&bomb(fits, 1), &mut out).unwrap();
    assert_eq!(decoded(&out)[1].len(), fits);
}

#[test]
fn many_small_blocks_are_taken_only_as_h2_reads_them() {
    // 100 blocks of 3 references each: 12 KiB out per 12 bytes in.
    let input = bomb(3, 100);
    let mut r = Rewriter::default();
    let mut out = Vec::new();
    r.feed(&input, &mut out).unwrap();
    assert!(out.len() < MAX_READY + 2 * MAX_HEADER_LIST, "{}", out.len());
    assert!(r.has_frames(), "the rest waits for room");
    let mut blocks = decoded(&out).len();
    while r.has_frames() {
        let mut more = Vec::new();
        r.feed(&[], &mut more).unwrap();
        assert!(more.len() < MAX_READY + 2 * MAX_HEADER_LIST);
        out.extend_from_slice(&more);
        blocks = decoded(&out).len();
    }
    assert_eq!(blocks, 101, "every block arrives in the end");
}
