//! OpenSSH key revocation lists (PROTOCOL.krl): revoked certificates by
//! serial and by key id, in the binary form sshd's `RevokedKeys` reads.

const MAGIC: &[u8; 8] = b"SSHKRL\n\0";
const FORMAT_VERSION: u32 = 1;
const SECTION_CERTIFICATES: u8 = 1;
const CERT_SERIAL_LIST: u8 = 0x20;
const CERT_KEY_ID: u8 = 0x23;

fn string(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

/// What a KRL revokes: certificate serials and key ids, as the store
/// lists them.
pub use crate::store::ssh_certs::RevokedCerts as Revoked;

/// A KRL revoking `revoked` certificates issued by any of the CAs whose
/// wire-format public keys are `ca_keys` (serials and key ids are unique
/// across CA generations, so each CA gets the same lists). `version` must
/// grow with every change.
pub fn build(ca_keys: &[Vec<u8>], revoked: &Revoked, version: u64, generated: u64) -> Vec<u8> {
    let serials = &revoked.serials;
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
    let mut key_ids = revoked.key_ids.clone();
    key_ids.sort_unstable();
    key_ids.dedup();
    let empty = serials.is_empty() && key_ids.is_empty();
    for ca_key in ca_keys.iter().filter(|_| !empty) {
        let mut section = Vec::new();
        string(&mut section, ca_key);
        string(&mut section, b""); // reserved
        if !serials.is_empty() {
            let list: Vec<u8> = serials.iter().flat_map(|s| s.to_be_bytes()).collect();
            section.push(CERT_SERIAL_LIST);
            string(&mut section, &list);
        }
        if !key_ids.is_empty() {
            let mut ids = Vec::new();
            for id in &key_ids {
                string(&mut ids, id.as_bytes());
            }
            section.push(CERT_KEY_ID);
            string(&mut section, &ids);
        }
        out.push(SECTION_CERTIFICATES);
        string(&mut out, &section);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serials(s: &[u64]) -> Revoked {
        Revoked {
            serials: s.to_vec(),
            key_ids: Vec::new(),
        }
    }

    #[test]
    fn key_ids_follow_the_serials_as_length_prefixed_strings() {
        let krl = build(
            &[b"ca".to_vec()],
            &Revoked {
                serials: vec![1],
                key_ids: vec!["b".into(), "a".into()],
            },
            1,
            1,
        );
        let tail = &krl[krl.len() - 15..];
        assert_eq!(tail[0], CERT_KEY_ID);
        assert_eq!(tail[1..5], 10u32.to_be_bytes());
        assert_eq!(&tail[5..], b"\0\0\0\x01a\0\0\0\x01b");
    }

    #[test]
    fn an_empty_krl_is_just_the_header() {
        let krl = build(&[b"ca".to_vec()], &Revoked::default(), 7, 1000);
        assert_eq!(&krl[..8], MAGIC);
        assert_eq!(krl.len(), 8 + 4 + 8 + 8 + 8 + 4 + 4 + 6);
    }

    #[test]
    fn serials_are_listed_once_in_order() {
        let krl = build(&[b"ca".to_vec()], &serials(&[5, 3, 5]), 1, 1);
        let tail = &krl[krl.len() - 16..];
        assert_eq!(tail[..8], 3u64.to_be_bytes());
        assert_eq!(tail[8..], 5u64.to_be_bytes());
    }

    #[test]
    fn every_published_ca_gets_a_section() {
        let one = build(&[b"ca1".to_vec()], &serials(&[9]), 1, 1);
        let two = build(&[b"ca1".to_vec(), b"ca2".to_vec()], &serials(&[9]), 1, 1);
        let section = one.len() - (8 + 4 + 8 + 8 + 8 + 4 + 4 + 6);
        assert_eq!(two.len(), one.len() + section);
    }
}
