//! Renewal of a node's X.509-SVID over mTLS (DESIGN.md, "Identity"): the
//! node asks for a challenge with its current SVID, quotes its PCRs over
//! the challenge's nonce, and gets a new SVID for the same TPM-resident
//! key only if it is still approved and its quote still meets its group's
//! policy. Every renewal and every refusal is audited.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use zeroth_attest::verify::attestation::ClockInfo;
use zeroth_attest::verify::public::Public;
use zeroth_attest::verify::quote::Ak;

use super::caller::NodeCaller;
use super::enroll::{check_structures, parse_pcrs, CHALLENGE_TTL};
use super::error::{b64, ApiError, JsonBody};
use super::openapi::NodeRefusals;
use crate::audit::{self, Event};
use crate::identity::x509_ca::pem_encode;
use crate::identity::{P256Subject, SpiffeId};
use crate::policy::GroupPolicy;
use crate::server::state::{AppState, Shared};
use crate::store::nodes::{self, ChallengeRefusal, Node, NodeState, RenewalChallenge};
use crate::store::now;
use crate::wire::enrol::{RenewChallenge, RenewRequest, RenewResponse};

fn refuse(s: &AppState, caller: &NodeCaller, err: ApiError) -> ApiError {
    super::refusal::refuse(
        s,
        "renew.denied",
        "renewal",
        &format!("node/{}", caller.node_id),
        err,
    )
}

/// The caller's node, if it may still hold an identity.
fn approved_node<'a>(
    s: &'a AppState,
    caller: &NodeCaller,
) -> Result<(Node, &'a GroupPolicy), ApiError> {
    let node = nodes::node(&s.store.lock(), &caller.node_id)?;
    let Some(node) = node else {
        return Err(refuse(
            s,
            caller,
            ApiError::rejected(format!("node {} is unknown", caller.node_id)),
        ));
    };
    if node.state != NodeState::Approved {
        return Err(refuse(
            s,
            caller,
            ApiError::rejected(format!(
                "node {} is {}: no renewal",
                node.id,
                node.state.as_str()
            )),
        ));
    }
    let group = s.groups.get(&node.group).ok_or_else(|| {
        refuse(
            s,
            caller,
            ApiError::rejected(format!("node group {:?} no longer exists", node.group)),
        )
    })?;
    Ok((node, group))
}

/// `POST /v1/identity/challenge`.
#[utoipa::path(post, path = "/v1/identity/challenge", summary = "Ask for a nonce to renew the node's X.509-SVID", tag = "enrolment",
    security(("svid" = [])),
    responses((status = 200, description = "A nonce to quote the group's PCRs over", body = RenewChallenge), NodeRefusals))]
pub async fn challenge(
    State(s): State<Shared>,
    caller: NodeCaller,
) -> Result<Json<RenewChallenge>, ApiError> {
    s.blocking(move |s| {
        let (node, group) = approved_node(s, &caller)?;
        let nonce: [u8; 32] = super::enroll::random();
        let id = hex::encode(super::enroll::random::<16>());
        nodes::insert_renewal_challenge(
            &s.store.lock(),
            &RenewalChallenge {
                id: id.clone(),
                node_id: node.id,
                nonce: nonce.to_vec(),
                expires: now() + CHALLENGE_TTL,
            },
        )?;
        Ok(RenewChallenge {
            challenge_id: id,
            nonce: super::enroll::b64e(&nonce),
            pcrs: group.pcrs.clone(),
        })
    })
    .await?
    .map(Json)
}

/// `POST /v1/identity/renew`.
#[utoipa::path(post, path = "/v1/identity/renew", summary = "Renew the node's X.509-SVID with a fresh quote", tag = "enrolment",
    security(("svid" = [])), request_body = RenewRequest,
    responses((status = 200, description = "A new X.509-SVID for the same TPM-resident key", body = RenewResponse), NodeRefusals))]
pub async fn renew(
    State(s): State<Shared>,
    caller: NodeCaller,
    JsonBody(req): JsonBody<RenewRequest>,
) -> Result<Json<RenewResponse>, ApiError> {
    s.blocking(move |s| renew_blocking(s, caller, req))
        .await?
        .map(Json)
}

fn renew_blocking(
    s: &AppState,
    caller: NodeCaller,
    req: RenewRequest,
) -> Result<RenewResponse, ApiError> {
    let attest = b64("quote_attest", &req.quote_attest)?;
    let signature = b64("quote_signature", &req.quote_signature)?;
    let pcrs = parse_pcrs(&req.pcrs)?;
    let event_log = req
        .event_log
        .as_deref()
        .map(|l| b64("event_log", l))
        .transpose()?;
    check_structures(("quote_attest", &attest), ("quote_signature", &signature))?;
    let taken = {
        let mut conn = s.store.lock();
        let tx = conn
            .transaction()
            .map_err(crate::store::StoreError::sql("starting a transaction"))?;
        let taken = nodes::take_renewal_challenge(&tx, &req.challenge_id)?;
        tx.commit()
            .map_err(crate::store::StoreError::sql("committing a challenge"))?;
        taken
    };
    let challenge = match taken {
        Ok(c) if c.node_id == caller.node_id => c,
        Ok(_) | Err(ChallengeRefusal::Unknown) => {
            return Err(ApiError::not_found("unknown challenge_id"))
        }
        Err(ChallengeRefusal::AlreadyUsed) => {
            return Err(refuse(
                s,
                &caller,
                ApiError::conflict("this challenge was already used: a renewal cannot be replayed"),
            ))
        }
        Err(ChallengeRefusal::Expired) => {
            return Err(refuse(
                s,
                &caller,
                ApiError::rejected(format!(
                    "the challenge expired ({CHALLENGE_TTL} s); ask for another"
                )),
            ))
        }
    };
    // State and policy are read again now: a revocation between challenge
    // and renewal wins.
    let (node, group) = approved_node(s, &caller)?;
    let ek =
        Public::from_tpm2b(&node.ek_public).map_err(|e| ApiError::unavailable("a stored EK", e))?;
    let ak = Ak::under_ek(
        Public::from_tpm2b(&node.ak_public).map_err(|e| ApiError::unavailable("a stored AK", e))?,
        &ek,
    );
    let previous = ClockInfo {
        clock: node.clock,
        reset_count: node.reset_count,
        restart_count: node.restart_count,
        safe: true,
    };
    let quote = group
        .check_quote(
            &ak,
            &attest,
            &signature,
            &challenge.nonce,
            &pcrs,
            Some(&previous),
            event_log.as_deref(),
        )
        .map_err(|e| refuse(s, &caller, ApiError::rejected(e.to_string())))?;

    let spiffe_id = SpiffeId::new(&s.trust_domain, &["node", &node.id])
        .map_err(|e| ApiError::unavailable("SPIFFE ID", e))?;
    let svid =
        s.ca.issue_svid(&P256Subject(caller.point), &spiffe_id, group.svid_ttl)
            .map_err(|e| ApiError::unavailable("the CA", e))?;
    let not_after = svid
        .not_after
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64;
    let mut conn = s.store.lock();
    let tx = conn
        .transaction()
        .map_err(crate::store::StoreError::sql("starting a transaction"))?;
    nodes::update_clock(
        &tx,
        &node.id,
        quote.clock.clock,
        quote.clock.reset_count,
        quote.clock.restart_count,
    )?;
    nodes::record_svid(&tx, &svid.serial, &node.id, spiffe_id.as_str(), not_after)?;
    audit::append(
        &tx,
        &Event {
            kind: "svid.renewed",
            subject: &format!("node/{}", node.id),
            detail: serde_json::json!({
                "serial": svid.serial, "previous_serial": caller.serial,
                "spiffe_id": spiffe_id.as_str(), "not_after": not_after,
                "reset_count": quote.clock.reset_count, "restart_count": quote.clock.restart_count,
            }),
        },
    )?;
    tx.commit()
        .map_err(crate::store::StoreError::sql("committing a renewal"))?;
    crate::server::metrics::svid_issued("renewal");
    Ok(RenewResponse {
        spiffe_id: spiffe_id.to_string(),
        svid: pem_encode("CERTIFICATE", &svid.der),
        bundle: s.ca.cert_pem(),
    })
}
