//! TCG event logs for lab TPMs, which have no firmware to write one: what a
//! boot chain would have logged for the extends a test makes.

/// A crypto-agile TCG event log with one SHA-256 bank, as firmware writes it.
#[derive(Debug, Clone)]
pub struct LogBuilder(Vec<u8>);

/// EV_IPL: code loaded by the boot loader (a kernel, an initrd).
pub const EV_IPL: u32 = 0x0000_000d;
/// EV_SEPARATOR: the end of a firmware phase.
pub const EV_SEPARATOR: u32 = 0x0000_0004;

impl Default for LogBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LogBuilder {
    /// The Spec ID Event03 header declaring one SHA-256 bank.
    pub fn new() -> Self {
        let mut spec = b"Spec ID Event03\0".to_vec();
        spec.extend(0u32.to_le_bytes()); // platformClass
        spec.extend([0, 2, 0, 2]); // minor, major, errata, uintnSize
        spec.extend(1u32.to_le_bytes());
        spec.extend(0x000bu16.to_le_bytes());
        spec.extend(32u16.to_le_bytes());
        spec.push(0); // vendorInfoSize
        let mut out = Vec::new();
        out.extend(0u32.to_le_bytes());
        out.extend(3u32.to_le_bytes()); // EV_NO_ACTION
        out.extend([0u8; 20]);
        out.extend((spec.len() as u32).to_le_bytes());
        out.extend(spec);
        Self(out)
    }

    /// An EV_IPL event extending `pcr` by `digest`.
    pub fn event(self, pcr: u32, digest: &[u8], data: &[u8]) -> Self {
        self.typed(pcr, EV_IPL, digest, data)
    }

    /// An event of `kind` extending `pcr` by `digest`.
    pub fn typed(mut self, pcr: u32, kind: u32, digest: &[u8], data: &[u8]) -> Self {
        self.0.extend(pcr.to_le_bytes());
        self.0.extend(kind.to_le_bytes());
        self.0.extend(1u32.to_le_bytes());
        self.0.extend(0x000bu16.to_le_bytes());
        self.0.extend(digest);
        self.0.extend((data.len() as u32).to_le_bytes());
        self.0.extend(data);
        self
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}
