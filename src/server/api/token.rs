//! Rotating identity tokens (DESIGN.md, "Universal identity token"): a host
//! without a TPM exchanges its token for an X.509-SVID and the next token.
//! Each token works once; presenting a used one is evidence of theft, and
//! the whole chain is revoked.

use axum::extract::State;
use axum::Json;
use sha2::{Digest, Sha256};

use super::error::{b64, ApiError, JsonBody};
use super::openapi::ExchangeRefusals;
use crate::audit::{self, Event};
use crate::identity::x509_ca::pem_encode;
use crate::identity::{P256Subject, SpiffeId};
use crate::server::state::{AppState, Shared};
use crate::store::{now, tokens, StoreError};
use crate::wire::token::{proof_message, ExchangeRequest, ExchangeResponse};
use secrecy::{ExposeSecret, SecretString};

/// Tokens start with this, so scanners can recognise a leaked one.
pub const TOKEN_PREFIX: &str = "zt1.";

/// A new random token (shown once) and its hash (stored).
pub fn new_token() -> (SecretString, Vec<u8>) {
    use base64::Engine;
    use rand::RngCore;
    let mut raw = zeroize::Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(&mut raw[..]);
    let token = SecretString::from(format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw[..])
    ));
    let hash = token_hash(token.expose_secret());
    (token, hash)
}

pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[utoipa::path(post, path = "/v1/token/exchange", summary = "Exchange a rotating token for an X.509-SVID and the next token", tag = "token",
    request_body = ExchangeRequest,
    responses((status = 200, description = "An X.509-SVID for the proven key, and the next token", body = ExchangeResponse), ExchangeRefusals))]
pub async fn exchange(
    State(s): State<Shared>,
    JsonBody(req): JsonBody<ExchangeRequest>,
) -> Result<Json<ExchangeResponse>, ApiError> {
    s.blocking(move |s| exchange_blocking(s, req))
        .await?
        .map(Json)
}

/// How long after an exchange the same token, with the same public key,
/// is answered again with the same next token: the reply may have been
/// lost on the way. Any other reuse is theft.
pub const RETRY_GRACE: i64 = 30;

fn next_binding(hash_hex: &str) -> zeroth_hsm::Binding<'_> {
    zeroth_hsm::Binding {
        table: "tokens",
        record: hash_hex,
        column: "next_sealed",
    }
}

/// The next token this one was exchanged for, if `key_hash` asks again
/// within [`RETRY_GRACE`] and that next token is still unused.
fn retried_exchange(
    s: &AppState,
    tx: &crate::store::sql::Tx<'_>,
    row: &tokens::TokenRow,
    hash: &[u8],
    key_hash: &[u8],
) -> Result<Option<(SecretString, i64)>, ApiError> {
    use subtle::ConstantTimeEq;
    let Some(r) = &row.rotation else {
        return Ok(None);
    };
    let same_key: bool = r.key_hash.ct_eq(key_hash).into();
    if !same_key || now() > r.at.saturating_add(RETRY_GRACE) {
        return Ok(None);
    }
    let Some(expires) = tokens::unused(tx, &row.chain_id, row.generation + 1)? else {
        return Ok(None);
    };
    let next = s
        .sealer
        .open(next_binding(&hex::encode(hash)), &r.next_sealed)
        .map_err(|e| ApiError::unavailable("the HSM", e))?;
    let next = String::from_utf8(next.to_vec())
        .map(SecretString::from)
        .map_err(|e| ApiError::unavailable("a sealed token", e))?;
    Ok(Some((next, expires)))
}

/// The request is signed by the key it presents: an SVID is only ever made
/// for a key its holder proved, and a retried exchange (see
/// [`RETRY_GRACE`]) needs the private key, not just the public one a copied
/// SVID shows.
fn check_proof(point: &[u8; 65], req: &ExchangeRequest) -> Result<(), ApiError> {
    use p256::ecdsa::signature::Verifier;
    let proof = b64("proof", &req.proof)?;
    let signature = p256::ecdsa::Signature::from_slice(&proof)
        .map_err(|_| ApiError::bad_request("`proof` is not a 64-byte ECDSA P-256 signature"))?;
    p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
        .and_then(|k| {
            k.verify(
                &proof_message(req.token.expose_secret(), req.attempt),
                &signature,
            )
        })
        .map_err(|_| ApiError::rejected("`proof` is not a signature of this token by `public_key`"))
}

fn exchange_blocking(s: &AppState, req: ExchangeRequest) -> Result<ExchangeResponse, ApiError> {
    let key = b64("public_key", &req.public_key)?;
    let point: [u8; 65] = key
        .as_slice()
        .try_into()
        .ok()
        .filter(|p: &[u8; 65]| p[0] == 4 && p256::PublicKey::from_sec1_bytes(p).is_ok())
        .ok_or_else(|| {
            ApiError::bad_request("`public_key` is not an uncompressed ECDSA P-256 point")
        })?;
    check_proof(&point, &req)?;
    let key_hash = Sha256::digest(point).to_vec();
    let hash = token_hash(req.token.expose_secret());

    let mut conn = s.store.lock();
    let tx = conn
        .transaction()
        .map_err(StoreError::sql("starting a transaction"))?;
    let Some(row) = tokens::find(&tx, &hash)? else {
        return Err(ApiError {
            status: axum::http::StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            reason: "unknown token".into(),
            retry_after: None,
        });
    };
    let subject = format!("token-chain/{}", row.chain_id);
    if row.chain_revoked {
        return Err(ApiError::rejected("this token's chain was revoked"));
    }
    let retried = match row.rotated {
        true => retried_exchange(s, &tx, &row, &hash, &key_hash)?,
        false => None,
    };
    if retried.is_some() {
        // The host's own retry carries an attempt not taken yet; a copy of
        // a request already answered does not, and cannot make one.
        let last = row.rotation.as_ref().and_then(|r| r.last_attempt);
        let fresh = match (req.attempt, last) {
            (Some(a), Some(_)) => tokens::take_attempt(&tx, &hash, i64::from(a))?,
            (None, None) => true,
            _ => false,
        };
        if !fresh {
            tx.commit()
                .map_err(StoreError::sql("committing an exchange"))?;
            tracing::warn!(chain = %row.chain_id, generation = row.generation, "an exchange request was sent again unchanged (a copy?); refused");
            return Err(ApiError::rejected(
                "this exchange request was answered already: a retry carries the next attempt number, signed anew",
            ));
        }
    }
    if row.rotated && retried.is_none() {
        // Someone else already exchanged this token: one of the two copies
        // is stolen. Revoke the chain; every holder must be re-provisioned.
        tokens::revoke_chain(&tx, &row.chain_id)?;
        audit::append(
            &tx,
            &Event {
                kind: "token.theft",
                subject: &subject,
                detail: serde_json::json!({"generation": row.generation, "action": "chain revoked"}),
            },
        )?;
        tx.commit()
            .map_err(StoreError::sql("committing a revocation"))?;
        crate::server::metrics::token_theft();
        tracing::warn!(chain = %row.chain_id, generation = row.generation, "ALERT: a rotated token was presented again; chain revoked");
        return Err(ApiError::rejected(
            "this token was already exchanged: treated as stolen, its whole chain is now revoked",
        ));
    }
    if !row.rotated && row.expires < now() {
        return Err(ApiError::rejected(
            "this token expired; ask an operator for a new one",
        ));
    }
    let group = s.groups.get(&row.group).ok_or_else(|| {
        ApiError::rejected(format!("node group {:?} no longer exists", row.group))
    })?;
    let id = SpiffeId::new(&s.trust_domain, &["token", &row.chain_id])
        .map_err(|e| ApiError::unavailable("SPIFFE ID", e))?;
    let ttl = group
        .svid_ttl
        .min(std::time::Duration::from_secs(row.ttl.max(60) as u64));
    let svid =
        s.ca.issue_svid(&P256Subject(point), &id, ttl)
            .map_err(|e| ApiError::unavailable("the CA", e))?;
    let (next, expires, kind) = match retried {
        Some((next, expires)) => (next, expires, "token.exchange.retried"),
        None => {
            let (next, next_hash) = new_token();
            let expires = now() + row.ttl;
            let sealed = s
                .sealer
                .seal(
                    next_binding(&hex::encode(&hash)),
                    next.expose_secret().as_bytes(),
                )
                .map_err(|e| ApiError::unavailable("the HSM", e))?;
            tokens::mark_rotated(&tx, &hash, &key_hash, &sealed, req.attempt.map(i64::from))?;
            tokens::insert_token(&tx, &row.chain_id, row.generation + 1, &next_hash, expires)?;
            (next, expires, "token.rotated")
        }
    };
    audit::append(
        &tx,
        &Event {
            kind,
            subject: &subject,
            detail: serde_json::json!({"generation": row.generation + 1, "serial": svid.serial, "spiffe_id": id.as_str()}),
        },
    )?;
    tx.commit()
        .map_err(StoreError::sql("committing a rotation"))?;
    if kind == "token.rotated" {
        crate::server::metrics::token_rotation();
    }
    crate::server::metrics::svid_issued("token");
    Ok(ExchangeResponse {
        token: next,
        token_expires: expires,
        spiffe_id: id.to_string(),
        svid: pem_encode("CERTIFICATE", &svid.der),
        bundle: s.ca.cert_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_appear_in_debug_output() {
        let (token, hash) = new_token();
        assert_eq!(hash, token_hash(token.expose_secret()));
        let key = p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let req = ExchangeRequest::new(token.clone(), &key);
        assert!(!format!("{req:?}").contains(token.expose_secret()));
    }
}
