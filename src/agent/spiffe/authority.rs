//! HTTP/2 clients that reach a Unix socket name it in `:authority`: grpcio
//! (under py-spiffe) sends the socket's path, percent-encoded, and grpc-java
//! the bare path. RFC 9113 wants `host[:port]` there, and the `h2` crate
//! under tonic refuses anything else with a stream reset (PROTOCOL_ERROR),
//! so those clients cannot talk to a tonic server on a Unix socket at all.
//!
//! A Unix socket has no authority, so the value means nothing here. This
//! module sits between the socket and `h2` and rewrites, in the client's
//! header blocks only, an `:authority` that `h2` would refuse into
//! `localhost` (what grpc-go and most clients send on a Unix socket). It
//! decodes each header block with the client's HPACK state (`loona-hpack`)
//! and re-encodes it statelessly (literals without indexing, so the encoder
//! keeps no table), so `h2` sees the
//! same headers, minus the bad authority. Every other frame and the server's
//! direction pass through untouched. It is a thin, tested adapter on stock
//! crates, not a fork of `h2`; once `h2` accepts such authorities on its
//! own, it can go.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The frame size `h2` accepts by default (SETTINGS_MAX_FRAME_SIZE).
const MAX_FRAME: usize = 16_384;
/// The largest header block accepted, across its CONTINUATION frames.
const MAX_BLOCK: usize = 64 * 1024;
/// The dynamic table size `h2` advertises (SETTINGS_HEADER_TABLE_SIZE).
const TABLE_SIZE: usize = 4096;
/// The largest decoded header list, counted as RFC 9113 §6.5.2 counts it
/// (name + value + 32 per field): the SETTINGS_MAX_HEADER_LIST_SIZE the
/// server behind (hyper) enforces. A one-byte index can name a 4 KiB table
/// entry, so without this bound a 64 KiB block decodes to 256 MiB.
pub const MAX_HEADER_LIST: usize = 16 * 1024;
/// Frames are taken from the client only while less than this much is
/// waiting for `h2`: what one read can make the agent hold is bounded
/// however small the frames that each expand to a whole header list.
pub const MAX_READY: usize = 64 * 1024;

/// Why a client's byte stream was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("HTTP/2 frame of {0} bytes exceeds the frame size")]
    FrameTooLarge(usize),
    #[error("HTTP/2 header block exceeds {MAX_BLOCK} bytes")]
    BlockTooLarge,
    #[error("HTTP/2 header list decodes to more than {MAX_HEADER_LIST} bytes")]
    ListTooLarge,
    #[error("HTTP/2 {0} frame inside another stream's header block")]
    Interleaved(&'static str),
    #[error("HTTP/2 HEADERS frame with padding or priority longer than itself")]
    BadPadding,
    #[error("HTTP/2 header block does not decode: {0}")]
    Hpack(String),
}

/// A header block being gathered across CONTINUATION frames.
struct Block {
    stream: [u8; 4],
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

/// The client-to-server half: bytes in, bytes for `h2` out.
pub struct Rewriter {
    pending: Vec<u8>,
    preface_seen: usize,
    /// Not HTTP/2 after all: everything passes untouched.
    passthrough: bool,
    decoder: loona_hpack::Decoder<'static>,
    block: Option<Block>,
    /// How many authorities were replaced.
    pub rewritten: u64,
}

impl Default for Rewriter {
    fn default() -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        Self {
            pending: Vec::new(),
            preface_seen: 0,
            passthrough: false,
            decoder,
            block: None,
            rewritten: 0,
        }
    }
}

/// Whether `h2` accepts `value` as an authority.
fn acceptable(value: &[u8]) -> bool {
    !value.is_empty() && http::uri::Authority::try_from(value).is_ok()
}

/// HPACK integer with an `n`-bit prefix whose other bits are `first`.
fn put_int(out: &mut Vec<u8>, first: u8, n: u8, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header as a literal never added to the table, with a new name and no
/// Huffman coding: it leaves no state behind in `h2`'s decoder.
fn put_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    put_int(out, 0x00, 7, name.len());
    out.extend_from_slice(name);
    put_int(out, 0x00, 7, value.len());
    out.extend_from_slice(value);
}

fn frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: [u8; 4]) {
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream);
}

impl Rewriter {
    /// Takes `input` from the client; appends what `h2` should read.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), AuthorityError> {
        if self.passthrough {
            out.extend_from_slice(input);
            return Ok(());
        }
        self.pending.extend_from_slice(input);
        if self.preface_seen < PREFACE.len() {
            let take = (PREFACE.len() - self.preface_seen).min(self.pending.len());
            let part = &self.pending[..take];
            if part != &PREFACE[self.preface_seen..self.preface_seen + take] {
                // Not an HTTP/2 client: `h2` will say so itself.
                self.passthrough = true;
                out.append(&mut self.pending);
                return Ok(());
            }
            out.extend_from_slice(part);
            self.pending.drain(..take);
            self.preface_seen += take;
        }
        let mut at = 0;
        while self.pending.len() - at >= 9 && out.len() < MAX_READY {
            let h = &self.pending[at..at + 9];
            let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
            if len > MAX_FRAME {
                return Err(AuthorityError::FrameTooLarge(len));
            }
            if self.pending.len() - at < 9 + len {
                break;
            }
            let (kind, flags) = (h[3], h[4]);
            let stream = [h[5], h[6], h[7], h[8]];
            let frame = self.pending[at..at + 9 + len].to_vec();
            at += 9 + len;
            self.frame(kind, flags, stream, &frame, out)?;
        }
        self.pending.drain(..at);
        Ok(())
    }

    fn frame(
        &mut self,
        kind: u8,
        flags: u8,
        stream: [u8; 4],
        frame: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), AuthorityError> {
        let payload = &frame[9..];
        match kind {
            HEADERS => {
                if self.block.is_some() {
                    return Err(AuthorityError::Interleaved("HEADERS"));
                }
                let mut body = payload;
                let mut pad = 0;
                if flags & PADDED != 0 {
                    pad = *body.first().ok_or(AuthorityError::BadPadding)? as usize;
                    body = &body[1..];
                }
                let mut priority = None;
                if flags & PRIORITY != 0 {
                    let p: [u8; 5] = body
                        .get(..5)
                        .and_then(|p| p.try_into().ok())
                        .ok_or(AuthorityError::BadPadding)?;
                    priority = Some(p);
                    body = &body[5..];
                }
                if pad > body.len() {
                    return Err(AuthorityError::BadPadding);
                }
                let fragment = body[..body.len() - pad].to_vec();
                self.block = Some(Block {
                    stream,
                    end_stream: flags & END_STREAM != 0,
                    priority,
                    fragment,
                });
            }
            CONTINUATION => {
                let block = self
                    .block
                    .as_mut()
                    .filter(|b| b.stream == stream)
                    .ok_or(AuthorityError::Interleaved("CONTINUATION"))?;
                block.fragment.extend_from_slice(payload);
            }
            _ if self.block.is_some() => return Err(AuthorityError::Interleaved("other")),
            _ => {
                out.extend_from_slice(frame);
                return Ok(());
            }
        }
        if self
            .block
            .as_ref()
            .is_some_and(|b| b.fragment.len() > MAX_BLOCK)
        {
            return Err(AuthorityError::BlockTooLarge);
        }
        if flags & END_HEADERS != 0 {
            if let Some(block) = self.block.take() {
                self.emit(block, out)?;
            }
        }
        Ok(())
    }

    /// Whether whole frames are waiting for room in the output (a read
    /// from the client would only add to them).
    pub fn has_frames(&self) -> bool {
        !self.passthrough
            && self.preface_seen == PREFACE.len()
            && self.pending.len() >= 9
            && self.pending.len()
                >= 9 + u32::from_be_bytes([0, self.pending[0], self.pending[1], self.pending[2]])
                    as usize
    }

    /// Decodes a whole header block and writes it out re-encoded, with an
    /// authority `h2` would refuse replaced by `localhost`.
    fn emit(&mut self, block: Block, out: &mut Vec<u8>) -> Result<(), AuthorityError> {
        let mut encoded = Vec::with_capacity(block.fragment.len() + 64);
        let mut rewritten = false;
        let mut size = 0usize;
        self.decoder
            .decode_with_cb(&block.fragment, |name, value| {
                // Past the bound, keep decoding (the table must stay in
                // step) but hold nothing more; the block is refused below.
                size = size.saturating_add(name.len() + value.len() + 32);
                if size > MAX_HEADER_LIST {
                    return;
                }
                if name.as_ref() == b":authority" && !acceptable(&value) {
                    rewritten = true;
                    put_literal(&mut encoded, &name, b"localhost");
                } else {
                    put_literal(&mut encoded, &name, &value);
                }
            })
            .map_err(|e| AuthorityError::Hpack(format!("{e:?}")))?;
        if size > MAX_HEADER_LIST {
            return Err(AuthorityError::ListTooLarge);
        }
        if rewritten {
            self.rewritten += 1;
        }
        let mut first = true;
        let mut rest: &[u8] = &encoded;
        loop {
            let mut room = MAX_FRAME;
            let mut prefix = Vec::new();
            let mut flags = 0;
            let kind = if first { HEADERS } else { CONTINUATION };
            if first {
                if block.end_stream {
                    flags |= END_STREAM;
                }
                if let Some(p) = block.priority {
                    flags |= PRIORITY;
                    prefix.extend_from_slice(&p);
                    room -= 5;
                }
            }
            let take = rest.len().min(room);
            if take == rest.len() {
                flags |= END_HEADERS;
            }
            frame_header(out, prefix.len() + take, kind, flags, block.stream);
            out.extend_from_slice(&prefix);
            out.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            first = false;
            if rest.is_empty() {
                return Ok(());
            }
        }
    }
}

/// A connection whose client-to-server bytes go through a [`Rewriter`].
pub struct AuthorityFix<S> {
    inner: S,
    rewriter: Rewriter,
    ready: Vec<u8>,
    taken: usize,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            rewriter: Rewriter::default(),
            ready: Vec::new(),
            taken: 0,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        loop {
            if me.taken < me.ready.len() {
                let n = (me.ready.len() - me.taken).min(buf.remaining());
                buf.put_slice(&me.ready[me.taken..me.taken + n]);
                me.taken += n;
                if me.taken == me.ready.len() {
                    me.ready.clear();
                    me.taken = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if me.rewriter.has_frames() {
                me.rewriter
                    .feed(&[], &mut me.ready)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                continue;
            }
            let mut raw = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut raw);
            match Pin::new(&mut me.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if rb.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    me.rewriter
                        .feed(rb.filled(), &mut me.ready)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
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
}
