//! Messages after the start-up packet: a type byte, a length that counts
//! itself, then the body.

use tokio::io::{AsyncRead, AsyncReadExt};

/// One message, whole (type byte and length included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    pub bytes: Vec<u8>,
}

/// Reads one message of at most `max` bytes.
pub async fn read_frame(r: &mut (impl AsyncRead + Unpin), max: usize) -> std::io::Result<Frame> {
    let mut head = [0u8; 5];
    r.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len < 4 || len + 1 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a message length of {len} (at most {max})"),
        ));
    }
    let mut bytes = Vec::with_capacity(len + 1);
    bytes.extend_from_slice(&head);
    bytes.resize(len + 1, 0);
    r.read_exact(&mut bytes[5..]).await?;
    Ok(Frame {
        tag: head[0],
        bytes,
    })
}

/// An ErrorResponse with severity FATAL, SQLSTATE `code` and `message`.
pub fn fatal(code: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', code),
        (b'M', message),
    ] {
        body.push(field);
        // NUL would end the field early: not in our own messages.
        body.extend(value.bytes().filter(|&b| b != 0));
        body.push(0);
    }
    body.push(0);
    let mut out = vec![b'E'];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// AuthenticationOk.
pub const AUTHENTICATION_OK: [u8; 9] = [b'R', 0, 0, 0, 8, 0, 0, 0, 0];
