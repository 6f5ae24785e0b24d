//! Generated usernames and passwords, and the hashed forms the databases
//! store, computed here so the plaintext password never reaches a database
//! server (nor its logs).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use p256::elliptic_curve::rand_core::{OsRng, RngCore};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// Every dynamic user's name starts with this: the reconciler finds
/// strays by it, and no human account should ever use it.
pub const USER_PREFIX: &str = "zt_";

/// Longest username both engines take (PostgreSQL: 63 bytes; MariaDB: 80).
pub const MAX_USERNAME: usize = 63;

const RANDOM_CHARS: usize = 20;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn random_string(n: usize, alphabet: &[u8]) -> String {
    // Rejection sampling keeps every character uniform.
    let limit = 256 - 256 % alphabet.len();
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        OsRng.fill_bytes(&mut buf);
        for b in buf {
            if (b as usize) < limit && out.len() < n {
                out.push(alphabet[b as usize % alphabet.len()] as char);
            }
        }
    }
    out
}

/// `zt_<role>_<20 random chars>`: the role part is shortened to fit, the
/// random part never is.
pub fn username(role: &str) -> String {
    let room = MAX_USERNAME - USER_PREFIX.len() - 1 - RANDOM_CHARS;
    let role: String = role
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(room)
        .collect();
    format!(
        "{USER_PREFIX}{role}_{}",
        random_string(RANDOM_CHARS, ALPHABET)
    )
}

/// 40 characters from the OS CSPRNG (about 230 bits).
pub fn password() -> SecretString {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    SecretString::from(random_string(40, ALNUM))
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // Cannot fail: HMAC accepts keys of any length.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// A PostgreSQL SCRAM-SHA-256 verifier (RFC 5802/7677) with one PBKDF2
/// iteration. The iteration count only slows guessing of weak passwords;
/// ours are 230 random bits, and a single iteration makes CREATE ROLE an
/// order of magnitude cheaper for the database.
pub fn scram_verifier(password: &SecretString) -> String {
    let mut salt = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    // PBKDF2 with one iteration is HMAC(password, salt || INT(1)).
    let salted = hmac(
        password.expose_secret().as_bytes(),
        &[&salt[..], &1u32.to_be_bytes()].concat(),
    );
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = Sha256::digest(&client_key);
    let server_key = hmac(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256$1:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key),
        STANDARD.encode(server_key)
    )
}

/// MariaDB's mysql_native_password hash: `*` and hex SHA1(SHA1(password)).
pub fn mysql_native_hash(password: &SecretString) -> String {
    use sha1::Sha1;
    let once = Sha1::digest(password.expose_secret().as_bytes());
    format!("*{}", hex::encode_upper(Sha1::digest(once)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_fit_and_keep_their_random_part() {
        let long = "r".repeat(200);
        let u = username(&long);
        assert_eq!(u.len(), MAX_USERNAME);
        assert!(u.starts_with("zt_rrr"));
        let random = u.rsplit('_').next().unwrap();
        assert_eq!(random.len(), RANDOM_CHARS);
        assert_ne!(username("app"), username("app"));
        assert!(username("App-RO").starts_with("zt_app_ro_"));
    }

    #[test]
    fn passwords_are_long_random_and_never_printed() {
        let p = password();
        assert_eq!(p.expose_secret().len(), 40);
        assert!(!format!("{p:?}").contains(p.expose_secret()));
        assert_ne!(password().expose_secret(), p.expose_secret());
    }

    #[test]
    fn the_mysql_hash_matches_the_documented_form() {
        // MariaDB: SELECT PASSWORD('password')
        let h = mysql_native_hash(&SecretString::from("password".to_owned()));
        assert_eq!(h, "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19");
    }

    #[test]
    fn scram_verifiers_are_salted() {
        let p = SecretString::from("x".to_owned());
        let a = scram_verifier(&p);
        assert!(a.starts_with("SCRAM-SHA-256$1:"));
        assert_ne!(a, scram_verifier(&p));
    }
}
