//! OpenSSH key revocation lists (PROTOCOL.krl): revoked certificate
//! serials of one CA, in the binary form sshd's `RevokedKeys` reads.

const MAGIC: &[u8; 8] = b"SSHKRL\n\0";
const FORMAT_VERSION: u32 = 1;
const SECTION_CERTIFICATES: u8 = 1;
const CERT_SERIAL_LIST: u8 = 0x20;

fn string(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

/// A KRL revoking `serials` issued by any of the CAs whose wire-format
/// public keys are `ca_keys` (serials are unique across CA generations, so
/// each CA gets the same list). `version` must grow with every change.
pub fn build(ca_keys: &[Vec<u8>], serials: &[u64], version: u64, generated: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + serials.len() * 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&generated.to_be_bytes());
    out.extend_from_slice(&0u64.to_be_bytes()); // flags
    string(&mut out, b""); // reserved
    string(&mut out, b"zeroth"); // comment
    let mut serials = serials.to_vec();
    serials.sort_unstable();
    serials.dedup();
    for ca_key in ca_keys.iter().filter(|_| !serials.is_empty()) {
        let mut section = Vec::new();
        string(&mut section, ca_key);
        string(&mut section, b""); // reserved
        let list: Vec<u8> = serials.iter().flat_map(|s| s.to_be_bytes()).collect();
        section.push(CERT_SERIAL_LIST);
        string(&mut section, &list);
        out.push(SECTION_CERTIFICATES);
        string(&mut out, &section);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_krl_is_just_the_header() {
        let krl = build(&[b"ca".to_vec()], &[], 7, 1000);
        assert_eq!(&krl[..8], MAGIC);
        assert_eq!(krl.len(), 8 + 4 + 8 + 8 + 8 + 4 + 4 + 6);
    }

    #[test]
    fn serials_are_listed_once_in_order() {
        let krl = build(&[b"ca".to_vec()], &[5, 3, 5], 1, 1);
        let tail = &krl[krl.len() - 16..];
        assert_eq!(tail[..8], 3u64.to_be_bytes());
        assert_eq!(tail[8..], 5u64.to_be_bytes());
    }

    #[test]
    fn every_published_ca_gets_a_section() {
        let one = build(&[b"ca1".to_vec()], &[9], 1, 1);
        let two = build(&[b"ca1".to_vec(), b"ca2".to_vec()], &[9], 1, 1);
        let section = one.len() - (8 + 4 + 8 + 8 + 8 + 4 + 4 + 6);
        assert_eq!(two.len(), one.len() + section);
    }
}
