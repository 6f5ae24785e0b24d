//! The API's OpenAPI 3.1 document, made from the same handler annotations
//! and body types the router is built from (`GET /v1/openapi.json`,
//! `zeroth openapi`), so it cannot drift from what the server does.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::SecurityScheme;
use utoipa::openapi::{self, RefOr, Response};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

/// The body of every refusal and failure.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code: `bad_request`, `unauthenticated`, `rejected`,
    /// `forbidden`, `not_found`, `conflict`, `payload_too_large`,
    /// `too_many_requests`, `database_refused`, `busy` (the state store is
    /// busy: try again after `Retry-After`), `unavailable` or `internal`
    /// (a fault the server's log names).
    #[schema(example = "not_found")]
    pub error: &'static str,
    /// What went wrong, safe to show the caller (never a secret).
    pub reason: String,
}

/// An OpenSSH key revocation list (`PROTOCOL.krl`), sent as raw bytes.
pub struct Krl;

impl utoipa::PartialSchema for Krl {
    fn schema() -> RefOr<openapi::schema::Schema> {
        openapi::ObjectBuilder::new()
            .schema_type(openapi::schema::Type::String)
            .content_media_type("application/octet-stream")
            .description(Some("OpenSSH KRL bytes"))
            .into()
    }
}

impl ToSchema for Krl {}

/// The name of the mTLS security scheme: a client certificate that is an
/// X.509-SVID of the server's trust domain (a node's or a token host's).
pub const MTLS: &str = "svid";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "zeroth",
        description = "Hardware-attested machine identity (TPM 2.0 enrolment, X.509- and \
                       JWT-SVIDs), short-lived database users and OpenSSH certificates. \
                       Every endpoint is served over HTTPS; those marked with the `svid` \
                       scheme need a client certificate that is an X.509-SVID of the \
                       server's trust domain. Times are seconds since the Unix epoch.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(ErrorBody)),
    modifiers(&Security),
    tags(
        (name = "health", description = "Liveness, readiness, metrics and the trust bundle"),
        (name = "enrolment", description = "TPM enrolment and renewal of a node's identity"),
        (name = "token", description = "Rotating tokens for hosts without a TPM"),
        (name = "jwt", description = "JWT-SVIDs and the documents that verify them"),
        (name = "database", description = "Dynamic database users and their leases"),
        (name = "ssh", description = "OpenSSH certificates, CA keys and revocation lists"),
        (name = "workload", description = "Identities for the programs on a node"),
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            MTLS,
            SecurityScheme::MutualTls {
                description: Some(
                    "A client certificate that is an X.509-SVID of the server's trust domain: \
                     an enrolled node's (`spiffe://<domain>/node/<id>`, key in its TPM) or a \
                     token host's (`spiffe://<domain>/token/<chain>`)."
                        .into(),
                ),
                extensions: None,
            },
        );
    }
}

/// The document the router's routes make, before its own route is added.
pub(super) fn base() -> openapi::OpenApi {
    ApiDoc::openapi()
}

/// The whole document, as served.
pub fn document() -> openapi::OpenApi {
    let (_, mut doc) = super::routes().split_for_parts();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc
}

/// `GET /v1/openapi.json`.
#[utoipa::path(
    get,
    path = "/v1/openapi.json", summary = "This API's OpenAPI 3.1 document",
    tag = "health",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object))
)]
pub async fn serve() -> impl IntoResponse {
    static JSON: OnceLock<Vec<u8>> = OnceLock::new();
    let body = JSON.get_or_init(|| serde_json::to_vec(&document()).unwrap_or_default());
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.as_slice(),
    )
}

fn describe(status: u16) -> &'static str {
    match status {
        400 => "The body or a parameter is malformed, or asks for more than is allowed",
        401 => "No client certificate, or one that is not an X.509-SVID of this trust domain",
        403 => "Refused: the caller is not approved, was revoked, or its group, role or policy does not allow this",
        404 => "No such role, lease, challenge or entry for this caller",
        409 => "The challenge was already used or has expired",
        413 => "The body is larger than 64 KiB (the connection is closed after the answer)",
        429 => "Too many requests from this source; `Retry-After` says when to try again",
        502 => "The database refused the statement that makes or changes the user",
        _ => "A part the server needs (its store, the HSM, a database, the audit log) is unavailable; try again later",
    }
}

fn refusals(codes: &[u16]) -> BTreeMap<String, RefOr<Response>> {
    codes
        .iter()
        .map(|&code| {
            let mut response = openapi::ResponseBuilder::new()
                .description(describe(code))
                .content(
                    "application/json",
                    openapi::ContentBuilder::new()
                        .schema(Some(openapi::Ref::from_schema_name("ErrorBody")))
                        .build(),
                );
            if code == 429 {
                response = response.header(
                    "Retry-After",
                    openapi::HeaderBuilder::new()
                        .schema(
                            openapi::ObjectBuilder::new()
                                .schema_type(openapi::schema::Type::Integer)
                                .minimum(Some(1)),
                        )
                        .description(Some("Seconds to wait"))
                        .build(),
                );
            }
            (code.to_string(), response.build().into())
        })
        .collect()
}

/// Declares a set of refusals an endpoint may answer with.
macro_rules! refusal_set {
    ($(#[$doc:meta])* $name:ident = [$($code:literal),*]) => {
        $(#[$doc])*
        pub struct $name;
        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                refusals(&[$($code),*])
            }
        }
    };
}

refusal_set!(
    /// A read that needs the store or the HSM.
    Unavailable = [503]
);
refusal_set!(
    /// Enrolment, which any TPM may try.
    EnrolmentRefusals = [400, 403, 404, 409, 413, 429, 503]
);
refusal_set!(
    /// The token exchange.
    ExchangeRefusals = [400, 401, 403, 413, 503]
);
refusal_set!(
    /// What an enrolled node may be told (mTLS, TPM nodes only).
    NodeRefusals = [400, 401, 403, 404, 409, 413, 503]
);
refusal_set!(
    /// What a holder of an SVID (node or token host) may be told.
    HolderRefusals = [400, 401, 403, 404, 413, 502, 503]
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_with_its_responses() {
        let doc = serde_json::to_value(document()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                assert!(
                    responses.keys().any(|k| k.starts_with('2')),
                    "{method} {path} documents no success"
                );
                for (code, r) in responses {
                    assert!(
                        r["description"].as_str().is_some_and(|d| !d.is_empty()),
                        "{method} {path} {code} has no description"
                    );
                }
            }
        }
        // Bodies with secrets are strings on the wire, not opaque objects.
        let creds = &doc["components"]["schemas"]["CredsResponse"]["properties"];
        assert_eq!(creds["password"]["type"], "string");
        assert_eq!(
            doc["components"]["securitySchemes"][MTLS]["type"],
            "mutualTLS"
        );
    }
}
