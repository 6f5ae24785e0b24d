//! A bounds-checked reader and writer for TPM 2.0 wire structures
//! (TPM 2.0 Part 2: big-endian integers, TPM2B = u16 size + bytes).
//! Every read checks its length first; nothing here can panic.

use super::VerifyError;

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(what: &'static str, buf: &'a [u8]) -> Self {
        Self { buf, pos: 0, what }
    }

    fn truncated(&self, field: &'static str) -> VerifyError {
        VerifyError::Malformed {
            structure: self.what,
            reason: format!(
                "truncated at {field} (offset {} of {} bytes)",
                self.pos,
                self.buf.len()
            ),
        }
    }

    pub(crate) fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], VerifyError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let out = &self.buf[self.pos..end];
                self.pos = end;
                Ok(out)
            }
            None => Err(self.truncated(field)),
        }
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, VerifyError> {
        Ok(self.bytes(1, field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, VerifyError> {
        let b = self.bytes(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, VerifyError> {
        let b = self.bytes(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, VerifyError> {
        let b = self.bytes(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A TPM2B: u16 size, then that many bytes.
    pub(crate) fn tpm2b(&mut self, field: &'static str) -> Result<&'a [u8], VerifyError> {
        let n = self.u16(field)?;
        self.bytes(usize::from(n), field)
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// Fails unless every byte was consumed: trailing bytes are an attack surface.
    pub(crate) fn finish(&self) -> Result<(), VerifyError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(VerifyError::Malformed {
                structure: self.what,
                reason: format!("{} trailing bytes", self.buf.len() - self.pos),
            })
        }
    }
}

/// Appends a TPM2B (u16 size + bytes). Callers pass at most 64 KiB.
pub(crate) fn put_tpm2b(out: &mut Vec<u8>, data: &[u8]) {
    let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&data[..usize::from(len)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounds_checked() {
        let mut r = Reader::new("test", &[0x00, 0x05, 1, 2]);
        assert!(r.tpm2b("field").is_err());
        let mut r = Reader::new("test", &[0x00, 0x02, 1, 2, 9]);
        assert_eq!(r.tpm2b("field").unwrap(), &[1, 2]);
        assert!(r.finish().is_err());
        assert_eq!(r.u8("x").unwrap(), 9);
        assert!(r.finish().is_ok());
        assert!(r.u64("y").is_err());
    }
}
