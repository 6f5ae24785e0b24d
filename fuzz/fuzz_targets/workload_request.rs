#![no_main]
//! What a local program writes to the agent's workload socket: any bytes
//! must become a request or a reason, never a panic, and a request the
//! agent forwards must name a server path it serves, with no way to reach
//! another one.

use libfuzzer_sys::fuzz_target;
use zeroth::agent::workload_api::{route, WorkloadRequest};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<WorkloadRequest>(data) else {
        return;
    };
    let Ok((path, body)) = route(&req) else {
        return;
    };
    let allowed = ["/v1/db/creds/", "/v1/ssh/sign/", "/v1/leases/"];
    assert!(allowed.iter().any(|p| path.starts_with(p)), "{path}");
    let rest = path.splitn(4, '/').nth(3).unwrap_or_default();
    assert!(!rest.contains(['?', '#', '%']), "{path}");
    assert!(
        rest.split('/')
            .all(|seg| !seg.is_empty() && !seg.starts_with('.')),
        "{path}"
    );
    assert!(body.is_object());
});
