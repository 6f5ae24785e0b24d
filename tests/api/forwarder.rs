//! A plain-HTTP listener on loopback that sends every request on to the
//! server over mTLS as an enrolled node, whose key never leaves its TPM: a
//! client that can only present a key from a file (the fuzzer) can then
//! speak as the node.

use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::http::{header, HeaderName, StatusCode};
use axum::response::Response;

/// Headers that belong to one hop, not to the request or answer.
const HOP_BY_HOP: [HeaderName; 4] = [
    header::HOST,
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
];

/// Largest body passed on (the server's own limit is smaller, so the
/// server, not this forwarder, answers a body that is too large).
const MAX_BODY: usize = 1 << 20;

pub struct Forwarder {
    runtime: Option<tokio::runtime::Runtime>,
    url: String,
}

impl Forwarder {
    /// Listens on 127.0.0.1 and forwards to `upstream` with `http`.
    pub fn start(http: reqwest::blocking::Client, upstream: String) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(move |request: Request| {
            let (http, upstream) = (http.clone(), upstream.clone());
            async move { forward(http, upstream, request).await }
        });
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self {
            runtime: Some(runtime),
            url,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        // Nothing to wait for: the fuzzer has finished with it.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn forward(http: reqwest::blocking::Client, upstream: String, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = to_bytes(body, MAX_BODY).await else {
        return status_only(StatusCode::PAYLOAD_TOO_LARGE);
    };
    let answer = tokio::task::spawn_blocking(move || {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut sent = http
            .request(parts.method.clone(), format!("{upstream}{path}"))
            .body(body.to_vec());
        for (name, value) in &parts.headers {
            if !HOP_BY_HOP.contains(name) {
                sent = sent.header(name, value);
            }
        }
        let got = sent.send()?;
        let (status, headers) = (got.status(), got.headers().clone());
        Ok::<_, reqwest::Error>((status, headers, got.bytes()?))
    })
    .await
    .unwrap();
    match answer {
        Ok((status, headers, body)) => {
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = status;
            for (name, value) in &headers {
                if !HOP_BY_HOP.contains(name) {
                    response.headers_mut().append(name, value.clone());
                }
            }
            response
        }
        // The fuzzer would report this as the server's 5xx: make it loud.
        Err(e) => panic!("the forwarder could not reach the server: {e}"),
    }
}

fn status_only(status: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}
