//! Checks on the public keys callers send to be certified.

use ssh_key::public::KeyData;
use ssh_key::PublicKey;

/// Why a public key is not certified.
#[derive(Debug, thiserror::Error)]
pub enum KeyRefusal {
    #[error("`public_key` is not an OpenSSH public key: {0}")]
    Malformed(ssh_key::Error),
    #[error("`public_key`: DSA keys are refused")]
    Dsa,
    #[error("`public_key`: RSA keys need at least 3072 bits, this one has {0}")]
    ShortRsa(usize),
}

/// Parses an OpenSSH public key line and refuses weak keys: DSA, and RSA
/// under 3072 bits.
pub fn parse_public_key(line: &str) -> Result<PublicKey, KeyRefusal> {
    let key = PublicKey::from_openssh(line.trim()).map_err(KeyRefusal::Malformed)?;
    match key.key_data() {
        KeyData::Dsa(_) => Err(KeyRefusal::Dsa),
        KeyData::Rsa(rsa) => {
            let bytes = rsa.n.as_positive_bytes().unwrap_or_default();
            let bits = bytes.len() * 8;
            if bits < 3072 {
                Err(KeyRefusal::ShortRsa(bits))
            } else {
                Ok(key)
            }
        }
        _ => Ok(key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_or_malformed_keys_are_refused_with_the_reason() {
        assert!(parse_public_key("ssh-ed25519 AAAA")
            .unwrap_err()
            .to_string()
            .contains("not an OpenSSH public key"));
        assert!(parse_public_key("hello").is_err());
        let key = ssh_key::PrivateKey::random(
            &mut p256::elliptic_curve::rand_core::OsRng,
            ssh_key::Algorithm::Ed25519,
        )
        .unwrap();
        let line = key.public_key().to_openssh().unwrap();
        assert_eq!(parse_public_key(&line).unwrap().to_openssh().unwrap(), line);
    }
}
