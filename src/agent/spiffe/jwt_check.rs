//! ValidateJWTSVID: checks a JWT-SVID as a relying party would, against
//! the trust domain's JWKS the agent holds: ES256 signature by a key of the
//! set (by `kid`), the audience asked for among its `aud`, not expired (nor
//! not yet valid), and a `sub` that is a SPIFFE ID of the trust domain.

use base64::Engine;
use p256::ecdsa::signature::Verifier;
use serde_json::{Map, Value};

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtCheckError {
    #[error("the token is not a compact JWS (header.payload.signature)")]
    Shape,
    #[error("the token's {0} is not base64url JSON")]
    Encoding(&'static str),
    #[error("the token is signed with {0:?}; JWT-SVIDs here are ES256")]
    Algorithm(String),
    #[error("no key {0:?} in the trust domain's JWT bundle")]
    UnknownKey(String),
    #[error("the signature does not verify")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the audience {0:?} is not among the token's")]
    Audience(String),
    #[error("the subject {0:?} is not a SPIFFE ID of {1}")]
    Subject(String, String),
    #[error("the token lacks the {0:?} claim")]
    Missing(&'static str),
}

/// Clock skew allowed on `exp` and `nbf`, in seconds.
const LEEWAY: i64 = 30;

fn part(p: &str, what: &'static str) -> Result<Vec<u8>, JwtCheckError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(p)
        .map_err(|_| JwtCheckError::Encoding(what))
}

/// The P-256 key `kid` in `jwks`.
fn key(jwks: &Value, kid: &str) -> Result<p256::ecdsa::VerifyingKey, JwtCheckError> {
    let jwk = jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["kid"] == kid && k["kty"] == "EC" && k["crv"] == "P-256")
        .ok_or_else(|| JwtCheckError::UnknownKey(kid.to_owned()))?;
    let coord = |c: &str| {
        jwk[c]
            .as_str()
            .and_then(|s| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(s)
                    .ok()
            })
            .filter(|b| b.len() == 32)
            .ok_or_else(|| JwtCheckError::UnknownKey(kid.to_owned()))
    };
    let point = [vec![4u8], coord("x")?, coord("y")?].concat();
    p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
        .map_err(|_| JwtCheckError::UnknownKey(kid.to_owned()))
}

/// Checks `token` for `audience`: its SPIFFE ID and claims.
pub fn validate(
    token: &str,
    audience: &str,
    jwks: &Value,
    trust_domain: &str,
    now: i64,
) -> Result<(String, Map<String, Value>), JwtCheckError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtCheckError::Shape);
    };
    let header: Value = serde_json::from_slice(&part(h, "header")?)
        .map_err(|_| JwtCheckError::Encoding("header"))?;
    let claims: Map<String, Value> = serde_json::from_slice(&part(p, "payload")?)
        .map_err(|_| JwtCheckError::Encoding("payload"))?;
    let alg = header["alg"].as_str().unwrap_or_default();
    if alg != "ES256" {
        return Err(JwtCheckError::Algorithm(alg.to_owned()));
    }
    let kid = header["kid"].as_str().unwrap_or_default();
    let key = key(jwks, kid)?;
    let signature = p256::ecdsa::Signature::from_slice(&part(s, "signature")?)
        .map_err(|_| JwtCheckError::Signature)?;
    key.verify(format!("{h}.{p}").as_bytes(), &signature)
        .map_err(|_| JwtCheckError::Signature)?;
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or(JwtCheckError::Missing("exp"))?;
    if now > exp + LEEWAY {
        return Err(JwtCheckError::Expired);
    }
    if claims
        .get("nbf")
        .and_then(Value::as_i64)
        .is_some_and(|nbf| now + LEEWAY < nbf)
    {
        return Err(JwtCheckError::NotYetValid);
    }
    let auds: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => return Err(JwtCheckError::Missing("aud")),
    };
    if !auds.contains(&audience) {
        return Err(JwtCheckError::Audience(audience.to_owned()));
    }
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or(JwtCheckError::Missing("sub"))?
        .to_owned();
    let prefix = format!("spiffe://{trust_domain}/");
    if !sub.starts_with(&prefix) || sub.len() == prefix.len() {
        return Err(JwtCheckError::Subject(sub, trust_domain.to_owned()));
    }
    Ok((sub, claims))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn issuer() -> crate::identity::JwtIssuer {
        let keys: Arc<dyn zeroth_hsm::KeyStore> =
            Arc::new(zeroth_hsm::SoftwareKeyStore::new_insecure());
        crate::identity::JwtIssuer::open(keys, "https://z.example").unwrap()
    }

    #[test]
    fn tokens_of_the_issuer_validate_and_every_flaw_is_named() {
        let iss = issuer();
        let jwks = iss.jwks();
        let now = crate::wire::now();
        let token = iss
            .issue(
                "spiffe://td/app/shop",
                &["db".into(), "api".into()],
                Duration::from_secs(60),
            )
            .unwrap()
            .token;
        let (sub, claims) = validate(&token, "api", &jwks, "td", now).unwrap();
        assert_eq!(sub, "spiffe://td/app/shop");
        assert_eq!(claims["iss"], "https://z.example");

        assert_eq!(
            validate(&token, "other", &jwks, "td", now),
            Err(JwtCheckError::Audience("other".into()))
        );
        assert_eq!(
            validate(&token, "api", &jwks, "td", now + 3600),
            Err(JwtCheckError::Expired)
        );
        assert!(matches!(
            validate(&token, "api", &jwks, "elsewhere", now),
            Err(JwtCheckError::Subject(..))
        ));
        // Another issuer's key is not in this bundle.
        let other = issuer()
            .issue(
                "spiffe://td/app/shop",
                &["api".into()],
                Duration::from_secs(60),
            )
            .unwrap()
            .token;
        assert!(matches!(
            validate(&other, "api", &jwks, "td", now),
            Err(JwtCheckError::UnknownKey(_))
        ));
        // A changed payload breaks the signature.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let forged = serde_json::json!({"sub": "spiffe://td/admin", "aud": "api", "exp": now + 60});
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged.to_string());
        assert_eq!(
            validate(&parts.join("."), "api", &jwks, "td", now),
            Err(JwtCheckError::Signature)
        );
        assert_eq!(
            validate("a.b", "api", &jwks, "td", now),
            Err(JwtCheckError::Shape)
        );
        assert_eq!(
            validate("!.b.c", "api", &jwks, "td", now),
            Err(JwtCheckError::Encoding("header"))
        );
    }

    /// A token with `header` and `claims` as given, signed by the issuer's
    /// key (the one its JWKS names first).
    fn signed(
        keys: &Arc<dyn zeroth_hsm::KeyStore>,
        jwks: &Value,
        header: Value,
        claims: Value,
    ) -> String {
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let mut header = header;
        header["kid"] = jwks["keys"][0]["kid"].clone();
        let input = format!("{}.{}", b64(&header), b64(&claims));
        let name = zeroth_hsm::KeyName::new(crate::identity::jwt::JWT_KEY).unwrap();
        let sig = keys.sign(&name, input.as_bytes()).unwrap();
        format!(
            "{input}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig)
        )
    }

    #[test]
    fn algorithm_not_before_and_missing_claims_are_each_refused() {
        let keys: Arc<dyn zeroth_hsm::KeyStore> =
            Arc::new(zeroth_hsm::SoftwareKeyStore::new_insecure());
        let iss = crate::identity::JwtIssuer::open(keys.clone(), "https://z.example").unwrap();
        let jwks = iss.jwks();
        let now = crate::wire::now();
        let es256 = serde_json::json!({"alg": "ES256", "typ": "JWT"});
        let good = serde_json::json!({"sub": "spiffe://td/app", "aud": "api", "exp": now + 60});
        // The helper makes tokens the check takes as they are.
        let token = signed(&keys, &jwks, es256.clone(), good.clone());
        assert!(validate(&token, "api", &jwks, "td", now).is_ok());
        // Any other algorithm, whatever the signature.
        for alg in ["none", "HS256", "RS256", "ES384"] {
            let token = signed(&keys, &jwks, serde_json::json!({"alg": alg}), good.clone());
            assert_eq!(
                validate(&token, "api", &jwks, "td", now),
                Err(JwtCheckError::Algorithm(alg.into()))
            );
        }
        let token = signed(
            &keys,
            &jwks,
            serde_json::json!({"typ": "JWT"}),
            good.clone(),
        );
        assert_eq!(
            validate(&token, "api", &jwks, "td", now),
            Err(JwtCheckError::Algorithm(String::new()))
        );
        // Not before: refused past the leeway, taken within it.
        let mut later = good.clone();
        later["nbf"] = (now + LEEWAY + 5).into();
        let token = signed(&keys, &jwks, es256.clone(), later);
        assert_eq!(
            validate(&token, "api", &jwks, "td", now),
            Err(JwtCheckError::NotYetValid)
        );
        let mut soon = good.clone();
        soon["nbf"] = (now + LEEWAY - 5).into();
        let token = signed(&keys, &jwks, es256.clone(), soon);
        assert!(validate(&token, "api", &jwks, "td", now).is_ok());
        // Expiry at the edge of the leeway.
        let mut edge = good.clone();
        edge["exp"] = (now - LEEWAY).into();
        let token = signed(&keys, &jwks, es256.clone(), edge);
        assert!(validate(&token, "api", &jwks, "td", now).is_ok());
        // Each required claim, missing.
        for claim in ["exp", "aud", "sub"] {
            let mut claims = good.clone();
            claims.as_object_mut().unwrap().remove(claim);
            let token = signed(&keys, &jwks, es256.clone(), claims);
            assert_eq!(
                validate(&token, "api", &jwks, "td", now),
                Err(JwtCheckError::Missing(claim)),
                "{claim}"
            );
        }
        // The trust domain alone is no workload's SPIFFE ID.
        let mut bare = good.clone();
        bare["sub"] = "spiffe://td/".into();
        let token = signed(&keys, &jwks, es256, bare);
        assert!(matches!(
            validate(&token, "api", &jwks, "td", now),
            Err(JwtCheckError::Subject(..))
        ));
    }
}
