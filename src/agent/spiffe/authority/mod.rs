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

mod stream;

pub use stream::AuthorityFix;

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

#[cfg(test)]
mod tests;
