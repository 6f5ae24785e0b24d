//! TPM enrolment (DESIGN.md, "Enrolment protocol"): `begin` checks the EK and
//! AK and returns a credential only that TPM can activate; `finish` checks
//! the activation, a fresh quote and the certified identity key, then
//! records the node and issues its X.509-SVID.

use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::Json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroth_attest::verify::alg::HashAlg;
use zeroth_attest::verify::attestation::ClockInfo;
use zeroth_attest::verify::credential::make_credential;
use zeroth_attest::verify::ek::{check_ek, ek_hash, EkTrust};
use zeroth_attest::verify::pcr::PcrValues;
use zeroth_attest::verify::public::{KeyMaterial, Public};
use zeroth_attest::verify::quote::{check_ak, verify_certify, Ak};

use super::error::{b64, ApiError, JsonBody};
use super::openapi::EnrolmentRefusals;
use crate::audit::{self, Event};
use crate::identity::x509_ca::pem_encode;
use crate::identity::{P256Subject, SpiffeId};
use crate::policy::enrolment::admission;
use crate::server::state::{AppState, Shared};
use crate::store::nodes::{self, Challenge, ChallengeRefusal, Node, NodeState};
use crate::store::now;

/// How long a challenge may be redeemed.
pub const CHALLENGE_TTL: i64 = 60;

pub(super) fn b64e(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

pub(super) fn random<const N: usize>() -> [u8; N] {
    use rand::RngCore;
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

use crate::wire::enrol::{BeginRequest, BeginResponse, FinishRequest, FinishResponse};
use hex::encode as hex;

fn refuse(s: &AppState, subject: &str, err: ApiError) -> ApiError {
    super::refusal::refuse(s, "enrol.rejected", "enrolment", subject, err)
}

#[utoipa::path(post, path = "/v1/enroll/begin", summary = "Start enrolment: send the EK and AK, get a credential to activate", tag = "enrolment",
    request_body = BeginRequest,
    responses((status = 200, description = "A credential only the TPM that holds the EK can activate, and the nonce to quote over", body = BeginResponse), EnrolmentRefusals))]
pub async fn begin(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    body: Result<JsonBody<BeginRequest>, ApiError>,
) -> Result<Json<BeginResponse>, ApiError> {
    // Metered before anything else, malformed requests included.
    let ip = peer.ip().to_canonical();
    if let Err(wait) = s.enrolment_limits.by_address.take(&ip, Instant::now()) {
        return Err(too_many(
            format!("too many enrolment requests from {ip}"),
            wait,
        ));
    }
    let JsonBody(req) = body?;
    s.blocking(move |s| begin_blocking(s, req)).await?.map(Json)
}

/// A 429 telling when to come back (not audited: a flood of refusals must
/// not become a flood of synced writes).
fn too_many(what: String, wait: Duration) -> ApiError {
    crate::server::metrics::rejection("enrolment_rate");
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ApiError::too_many(format!("{what}; try again in {secs} s"), secs)
}

/// A node names itself: it gets a DNS host name's length and alphabet,
/// nothing an operator's terminal would act on.
fn check_hostname(name: &str) -> Result<(), ApiError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if name.is_empty() || name.len() > 253 || !name.chars().all(allowed) {
        return Err(ApiError::bad_request(
            "`hostname` must be 1 to 253 letters, digits, '.', '-' or '_'",
        ));
    }
    Ok(())
}

fn begin_blocking(s: &AppState, req: BeginRequest) -> Result<BeginResponse, ApiError> {
    check_hostname(&req.hostname)?;
    let group = s
        .groups
        .get(&req.group)
        .ok_or_else(|| ApiError::not_found(format!("no node group {:?}", req.group)))?;
    let ek_bytes = b64("ek_public", &req.ek_public)?;
    let ak_bytes = b64("ak_public", &req.ak_public)?;
    let ek_cert = req
        .ek_certificate
        .as_deref()
        .map(|c| b64("ek_certificate", c))
        .transpose()?;
    let ek = Public::from_tpm2b(&ek_bytes)
        .map_err(|e| ApiError::bad_request(format!("`ek_public`: {e}")))?;
    let ak = Public::from_tpm2b(&ak_bytes)
        .map_err(|e| ApiError::bad_request(format!("`ak_public`: {e}")))?;
    let ek_id = ek_hash(&ek);
    let subject = format!("ek/{}", &ek_id[..16]);
    if let Err(wait) = s.enrolment_limits.by_ek.take(&ek_id, Instant::now()) {
        return Err(too_many(
            "too many enrolment requests for this TPM".into(),
            wait,
        ));
    }
    let (open, first_expiry) = nodes::open_challenges(&*s.store.read()?, &ek_id)?;
    if open >= i64::from(s.enrolment_limits.open_per_ek) {
        let wait = Duration::from_secs((first_expiry - now()).max(1) as u64);
        return Err(too_many(
            format!("this TPM holds {open} open challenges already"),
            wait,
        ));
    }

    let verdict = check_ek(
        &ek,
        ek_cert.as_deref(),
        &group.anchors,
        &group.ek_allow,
        std::time::SystemTime::now(),
    )
    .and_then(|trust| check_ak(&ak).map(|()| trust));
    let trust = match verdict {
        Ok(t) => t,
        Err(e) => return Err(refuse(s, &subject, ApiError::rejected(e.to_string()))),
    };
    // A node's EK, AK and group are pinned to its id once enrolled. (The
    // lookup is its own statement: the store lock must be released before
    // `refuse`.)
    let existing = nodes::node_by_ek(&s.store.lock(), &ek_id)?;
    if let Some(node) = existing {
        if let Err(why) = admission(Some(&node), group) {
            return Err(refuse(s, &subject, ApiError::rejected(why.to_string())));
        }
        if node.ak_public != ak_bytes {
            return Err(refuse(
                s,
                &subject,
                ApiError::rejected(format!(
                    "this TPM is node {} with another AK; an operator must re-enrol it",
                    node.id
                )),
            ));
        }
    }

    let secret: [u8; 32] = random();
    let nonce: [u8; 32] = random();
    let cred =
        make_credential(&ek, &ak.name(), &secret).map_err(|e| ApiError::rejected(e.to_string()))?;
    let id = hex(random::<16>());
    nodes::insert_challenge(
        &s.store.lock(),
        &Challenge {
            id: id.clone(),
            group: group.name.clone(),
            ek_hash: ek_id,
            ek_public: ek_bytes,
            ek_cert,
            ak_public: ak_bytes,
            hostname: req.hostname,
            nonce: nonce.to_vec(),
            secret_hash: Sha256::digest(secret).to_vec(),
            expires: now() + CHALLENGE_TTL,
        },
    )?;
    tracing::info!(challenge = %id, trust = %match trust { EkTrust::Certificate(_) => "certificate", EkTrust::AllowListed => "allow-list" }, "enrolment begun");
    Ok(BeginResponse {
        challenge_id: id,
        credential_blob: b64e(&cred.credential_blob),
        encrypted_secret: b64e(&cred.encrypted_secret),
        nonce: b64e(&nonce),
        pcrs: group.pcrs.clone(),
    })
}

#[utoipa::path(post, path = "/v1/enroll/finish", summary = "Finish enrolment: prove the activation, quote the PCRs, certify the identity key", tag = "enrolment",
    request_body = FinishRequest,
    responses(
        (status = 200, description = "Enrolled and approved: the node's X.509-SVID", body = FinishResponse),
        (status = 202, description = "Enrolled, waiting for an operator's approval", body = FinishResponse),
        EnrolmentRefusals))]
pub async fn finish(
    State(s): State<Shared>,
    JsonBody(req): JsonBody<FinishRequest>,
) -> Result<(StatusCode, Json<FinishResponse>), ApiError> {
    s.blocking(move |s| finish_blocking(s, req))
        .await?
        .map(|r| {
            let status = if r.state == NodeState::Approved {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            (status, Json(r))
        })
}

/// Refuses TPMS_ATTEST / TPMT_SIGNATURE bytes that do not even parse (400,
/// naming the field) before any verification or state change.
pub(super) fn check_structures(
    attest: (&str, &[u8]),
    signature: (&str, &[u8]),
) -> Result<(), ApiError> {
    use zeroth_attest::verify::attestation::{Attestation, Signature};
    Attestation::parse(attest.1)
        .map_err(|e| ApiError::bad_request(format!("`{}`: {e}", attest.0)))?;
    Signature::parse(signature.1)
        .map_err(|e| ApiError::bad_request(format!("`{}`: {e}", signature.0)))?;
    Ok(())
}

pub(super) fn parse_pcrs(
    pcrs: &std::collections::BTreeMap<String, String>,
) -> Result<PcrValues, ApiError> {
    let mut values = PcrValues::default();
    for (k, v) in pcrs {
        let idx = k
            .strip_prefix("sha256:")
            .and_then(|i| i.parse::<u8>().ok())
            .ok_or_else(|| {
                ApiError::bad_request(format!("`pcrs` key {k:?} is not \"sha256:<index>\""))
            })?;
        if v.len() != 64 || !v.is_ascii() {
            return Err(ApiError::bad_request(format!(
                "`pcrs.{k}` is not 64 hex digits"
            )));
        }
        let value = (0..64)
            .step_by(2)
            .map(|i| u8::from_str_radix(&v[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| ApiError::bad_request(format!("`pcrs.{k}` is not 64 hex digits")))?;
        values.insert(HashAlg::Sha256, idx, value);
    }
    Ok(values)
}

fn finish_blocking(s: &AppState, req: FinishRequest) -> Result<FinishResponse, ApiError> {
    let secret = b64("secret", &req.secret)?;
    let attest = b64("quote_attest", &req.quote_attest)?;
    let signature = b64("quote_signature", &req.quote_signature)?;
    let key_bytes = b64("identity_key", &req.identity_key)?;
    let certify_attest = b64("certify_attest", &req.certify_attest)?;
    let certify_signature = b64("certify_signature", &req.certify_signature)?;
    let pcrs = parse_pcrs(&req.pcrs)?;
    let event_log = req
        .event_log
        .as_deref()
        .map(|l| b64("event_log", l))
        .transpose()?;
    check_structures(("quote_attest", &attest), ("quote_signature", &signature))?;
    check_structures(
        ("certify_attest", &certify_attest),
        ("certify_signature", &certify_signature),
    )?;
    let subject = format!("challenge/{}", req.challenge_id);

    // Redeem the challenge in its own transaction: used once, whatever follows.
    let challenge = {
        let mut conn = s.store.lock();
        let tx = conn
            .transaction()
            .map_err(crate::store::StoreError::sql("starting a transaction"))?;
        let taken = nodes::take_challenge(&tx, &req.challenge_id)?;
        tx.commit()
            .map_err(crate::store::StoreError::sql("committing a challenge"))?;
        taken
    };
    let c = match challenge {
        Ok(c) => c,
        Err(ChallengeRefusal::Unknown) => return Err(ApiError::not_found("unknown challenge_id")),
        Err(ChallengeRefusal::AlreadyUsed) => {
            return Err(refuse(
                s,
                &subject,
                ApiError::conflict("this challenge was already used: a finish cannot be replayed"),
            ))
        }
        Err(ChallengeRefusal::Expired) => {
            return Err(refuse(
                s,
                &subject,
                ApiError::rejected(format!(
                    "the challenge expired ({CHALLENGE_TTL} s); begin again"
                )),
            ))
        }
    };
    let subject = format!("ek/{}", &c.ek_hash[..16]);
    let group = s
        .groups
        .get(&c.group)
        .ok_or_else(|| ApiError::not_found(format!("node group {:?} no longer exists", c.group)))?;

    if !bool::from(Sha256::digest(&secret)[..].ct_eq(&c.secret_hash)) {
        return Err(refuse(
            s,
            &subject,
            ApiError::rejected(
                "wrong activation secret: the AK and the EK are not in the same TPM",
            ),
        ));
    }
    let ek =
        Public::from_tpm2b(&c.ek_public).map_err(|e| ApiError::unavailable("a stored EK", e))?;
    let ak = Ak::under_ek(
        Public::from_tpm2b(&c.ak_public).map_err(|e| ApiError::unavailable("a stored AK", e))?,
        &ek,
    );
    let existing = nodes::node_by_ek(&s.store.lock(), &c.ek_hash)?;
    // Decided here to know whether to sign, and decided again inside the
    // transaction that records it: an operator may revoke the node meanwhile.
    let state = admission(existing.as_ref(), group)
        .map_err(|why| refuse(s, &subject, ApiError::rejected(why.to_string())))?;
    let previous = existing.as_ref().map(|n| ClockInfo {
        clock: n.clock,
        reset_count: n.reset_count,
        restart_count: n.restart_count,
        safe: true,
    });
    let quote = group
        .check_quote(
            &ak,
            &attest,
            &signature,
            &c.nonce,
            &pcrs,
            previous.as_ref(),
            event_log.as_deref(),
        )
        .map_err(|e| refuse(s, &subject, ApiError::rejected(e.to_string())))?;
    let key = Public::from_tpm2b(&key_bytes)
        .map_err(|e| ApiError::bad_request(format!("`identity_key`: {e}")))?;
    verify_certify(&ak, &certify_attest, &certify_signature, &c.nonce, &key).map_err(|e| {
        refuse(
            s,
            &subject,
            ApiError::rejected(format!("identity key certification: {e}")),
        )
    })?;
    let point = match &key.key {
        KeyMaterial::Ecc {
            curve: 0x0003,
            x,
            y,
            ..
        } if x.len() == 32 && y.len() == 32 => {
            let mut p = [0u8; 65];
            p[0] = 4;
            p[1..33].copy_from_slice(x);
            p[33..].copy_from_slice(y);
            p
        }
        _ => {
            return Err(ApiError::bad_request(
                "`identity_key` must be an ECC P-256 key",
            ))
        }
    };

    let node_id = existing
        .as_ref()
        .map(|n| n.id.clone())
        .unwrap_or_else(|| hex(random::<8>()));
    let spiffe_id = SpiffeId::new(&s.trust_domain, &["node", &node_id])
        .map_err(|e| ApiError::unavailable("SPIFFE ID", e))?;
    let svid = match state {
        NodeState::Approved => Some(
            s.ca.issue_svid(&P256Subject(point), &spiffe_id, group.svid_ttl)
                .map_err(|e| ApiError::unavailable("the CA", e))?,
        ),
        _ => None,
    };

    let node = Node {
        id: node_id.clone(),
        group: group.name.clone(),
        state,
        ek_hash: c.ek_hash.clone(),
        ek_public: c.ek_public.clone(),
        ak_public: c.ak_public.clone(),
        hostname: c.hostname.clone(),
        clock: quote.clock.clock,
        reset_count: quote.clock.reset_count,
        restart_count: quote.clock.restart_count,
        created: now(),
        updated: now(),
    };
    // The node, its SVID and their audit events commit together or not at all.
    let mut conn = s.store.lock();
    let tx = conn
        .transaction()
        .map_err(crate::store::StoreError::sql("starting a transaction"))?;
    let now_held = nodes::node_by_ek(&tx, &c.ek_hash)?;
    let decided_again = admission(now_held.as_ref(), group).map_err(|why| why.to_string());
    let unchanged = now_held.as_ref().map(|n| &n.id) == existing.as_ref().map(|n| &n.id)
        && decided_again == Ok(state);
    if !unchanged || !nodes::upsert_node(&tx, &node, c.ek_cert.as_deref())? {
        drop(tx);
        drop(conn);
        let err = match decided_again {
            Err(why) => ApiError::rejected(why),
            Ok(_) => ApiError::conflict(
                "the node's record changed while it enrolled (an operator acted on it); begin again",
            ),
        };
        return Err(refuse(s, &subject, err));
    }
    let node_subject = format!("node/{node_id}");
    audit::append(
        &tx,
        &Event {
            kind: if state == NodeState::Approved {
                "node.enrolled"
            } else {
                "node.pending"
            },
            subject: &node_subject,
            detail: serde_json::json!({
                "group": group.name, "hostname": c.hostname, "ek": c.ek_hash,
                "reset_count": quote.clock.reset_count, "restart_count": quote.clock.restart_count,
                "re_attested": existing.is_some(),
            }),
        },
    )?;
    if let Some(svid) = &svid {
        let not_after = svid
            .not_after
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs() as i64;
        nodes::record_svid(&tx, &svid.serial, &node_id, spiffe_id.as_str(), not_after)?;
        audit::append(
            &tx,
            &Event {
                kind: "svid.issued",
                subject: &node_subject,
                detail: serde_json::json!({"serial": svid.serial, "spiffe_id": spiffe_id.as_str(), "not_after": not_after}),
            },
        )?;
    }
    tx.commit()
        .map_err(crate::store::StoreError::sql("committing an enrolment"))?;
    crate::server::metrics::enrolment(state);
    if svid.is_some() {
        crate::server::metrics::svid_issued("node");
    }
    Ok(FinishResponse {
        node_id,
        state,
        spiffe_id: spiffe_id.to_string(),
        svid: svid.map(|c| pem_encode("CERTIFICATE", &c.der)),
        bundle: s.ca.cert_pem(),
    })
}
