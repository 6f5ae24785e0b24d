//! MySQL/MariaDB packets during the handshake: a 3-byte little-endian
//! payload length, a sequence number, the payload. Handshake packets are
//! small; anything longer than the cap is refused before it is read.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Handshake packets are a few hundred bytes; connection attributes make
/// them longer, never this long.
pub const MAX_HANDSHAKE_PACKET: usize = 64 * 1024;

/// Reads one packet: (sequence number, payload).
pub async fn read(r: &mut (impl AsyncRead + Unpin)) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 4];
    r.read_exact(&mut head).await?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
    if len > MAX_HANDSHAKE_PACKET {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a handshake packet of {len} bytes (at most {MAX_HANDSHAKE_PACKET})"),
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok((head[3], payload))
}

/// Writes `payload` as packet number `seq`.
pub async fn write(
    w: &mut (impl AsyncWrite + Unpin),
    seq: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l < 0xff_ffff)
        .ok_or_else(|| std::io::Error::other("a handshake packet too long to send"))?;
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(&len.to_le_bytes()[..3]);
    out.push(seq);
    out.extend_from_slice(payload);
    w.write_all(&out).await?;
    w.flush().await
}

/// An ERR packet's payload (protocol 4.1): code, SQL state, message.
pub fn err(code: u16, state: &str, message: &str) -> Vec<u8> {
    let mut p = vec![0xff];
    p.extend_from_slice(&code.to_le_bytes());
    p.push(b'#');
    let mut st = [b'0'; 5];
    for (d, s) in st.iter_mut().zip(state.bytes()) {
        *d = s;
    }
    p.extend_from_slice(&st);
    p.extend_from_slice(message.as_bytes());
    p
}

/// The payload's kind: OK (0x00), ERR (0xff), auth switch / EOF (0xfe).
pub const OK: u8 = 0x00;
pub const ERR: u8 = 0xff;
pub const AUTH_SWITCH: u8 = 0xfe;

/// An ERR payload's text, for logs.
pub fn err_text(payload: &[u8]) -> String {
    let code = match payload {
        [_, lo, hi, ..] => u16::from_le_bytes([*lo, *hi]),
        _ => 0,
    };
    let text = payload.get(3..).unwrap_or_default();
    let text = text
        .strip_prefix(b"#")
        .map_or(text, |t| t.get(5..).unwrap_or_default());
    format!("ERROR {code}: {}", String::from_utf8_lossy(text))
}
