//! JWT-SVIDs (SPIFFE JWT-SVID specification): compact JWS, ES256, signed by
//! the HSM key `jwt-signing`, verifiable by anyone through the OIDC
//! discovery document and the JWKS the server publishes.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use zeroth_hsm::{HsmError, KeyKind, KeyName, KeyStore, PublicKey};

/// The HSM key that signs JWT-SVIDs.
pub const JWT_KEY: &str = "jwt-signing";

pub use crate::wire::jwt::{MAX_AUDIENCES, MAX_AUDIENCE_CHARS};

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("the JWT key: {0}")]
    Hsm(#[from] HsmError),
    #[error("the JWT key is not an ECDSA P-256 key")]
    WrongKey,
    #[error("{0}")]
    BadRequest(String),
}

/// Issues JWT-SVIDs under one issuer URL.
pub struct JwtIssuer {
    keys: Arc<dyn KeyStore>,
    name: KeyName,
    issuer: String,
    kid: String,
    jwk: Value,
}

impl std::fmt::Debug for JwtIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtIssuer")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
            .finish()
    }
}

/// A JWT-SVID and its expiry (seconds since the epoch).
#[derive(Clone)]
pub struct JwtSvid {
    pub token: String,
    pub expires: i64,
    pub jti: String,
}

impl std::fmt::Debug for JwtSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSvid")
            .field("token", &"[REDACTED]")
            .field("expires", &self.expires)
            .field("jti", &self.jti)
            .finish()
    }
}

fn b64u(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

impl JwtIssuer {
    /// Opens the signing key (created in the HSM if missing).
    pub fn open(keys: Arc<dyn KeyStore>, issuer: &str) -> Result<Self, JwtError> {
        let name = KeyName::new(JWT_KEY)?;
        let info = keys.get_or_generate(&name, KeyKind::EcdsaP256)?;
        let Some(PublicKey::EcdsaP256(point)) = info.public else {
            return Err(JwtError::WrongKey);
        };
        let (x, y) = (b64u(&point[1..33]), b64u(&point[33..65]));
        // RFC 7638 thumbprint: the required members, sorted, no spaces.
        let thumbprint = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = b64u(&Sha256::digest(thumbprint.as_bytes()));
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "use": "sig", "alg": "ES256", "kid": kid});
        Ok(Self {
            keys,
            name,
            issuer: issuer.to_owned(),
            kid,
            jwk,
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `GET /v1/jwks`.
    pub fn jwks(&self) -> Value {
        json!({"keys": [self.jwk]})
    }

    /// `GET /.well-known/openid-configuration`.
    pub fn discovery(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/v1/jwks", self.issuer),
            "id_token_signing_alg_values_supported": ["ES256"],
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "claims_supported": ["sub", "aud", "exp", "iat", "nbf", "iss", "jti"],
        })
    }

    /// A JWT-SVID for `subject` (a SPIFFE ID) to present to `audience`.
    pub fn issue(
        &self,
        subject: &str,
        audience: &[String],
        ttl: Duration,
    ) -> Result<JwtSvid, JwtError> {
        if audience.is_empty() || audience.len() > MAX_AUDIENCES {
            return Err(JwtError::BadRequest(format!(
                "`audience` must list 1 to {MAX_AUDIENCES} audiences"
            )));
        }
        if let Some(i) = audience.iter().position(|a| {
            a.is_empty()
                || a.chars().count() > MAX_AUDIENCE_CHARS
                || a.chars().any(char::is_control)
        }) {
            return Err(JwtError::BadRequest(format!(
                "`audience` entry {i} must be 1 to {MAX_AUDIENCE_CHARS} characters, none of them a control character"
            )));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        let exp = now + ttl.as_secs() as i64;
        let mut jti = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut jti);
        let jti = hex::encode(jti);
        let header = json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"});
        let aud = if audience.len() == 1 {
            json!(audience[0])
        } else {
            json!(audience)
        };
        let claims = json!({
            "iss": self.issuer, "sub": subject, "aud": aud,
            "iat": now, "nbf": now - 30, "exp": exp, "jti": jti,
        });
        let input = format!(
            "{}.{}",
            b64u(header.to_string().as_bytes()),
            b64u(claims.to_string().as_bytes())
        );
        // The HSM returns r || s, which is exactly the JWS ES256 encoding.
        let rs = self.keys.sign(&self.name, input.as_bytes())?;
        Ok(JwtSvid {
            token: format!("{input}.{}", b64u(&rs)),
            expires: exp,
            jti,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Verifier;

    #[test]
    fn a_jwt_svid_verifies_against_the_published_key() {
        let keys: Arc<dyn KeyStore> = Arc::new(zeroth_hsm::SoftwareKeyStore::new_insecure());
        let jwt = JwtIssuer::open(keys, "https://zeroth.test").unwrap();
        let svid = jwt
            .issue("spiffe://t/node/1", &["db".into()], Duration::from_secs(60))
            .unwrap();
        let parts: Vec<&str> = svid.token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let jwk = &jwt.jwks()["keys"][0];
        let coord = |k: &str| URL_SAFE_NO_PAD.decode(jwk[k].as_str().unwrap()).unwrap();
        let point = [vec![4u8], coord("x"), coord("y")].concat();
        let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();
        let sig =
            p256::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
        let input = format!("{}.{}", parts[0], parts[1]);
        vk.verify(input.as_bytes(), &sig).unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["aud"], "db");
        assert_eq!(claims["sub"], "spiffe://t/node/1");
        assert!(jwt
            .issue("spiffe://t/node/1", &[], Duration::from_secs(60))
            .is_err());
        assert!(jwt
            .issue(
                "spiffe://t/node/1",
                &["a\nb".into()],
                Duration::from_secs(60)
            )
            .is_err());
    }
}
