#![no_main]
//! What a local program answers the agent's MariaDB proxy greeting with:
//! any bytes become the client's hello or a reason, never a panic; a hello
//! always leads to an upstream response that parses back to the same
//! database and attributes.

use libfuzzer_sys::fuzz_target;
use zeroth::agent::proxy::mariadb::handshake::{
    client_greeting, parse_client_response, parse_greeting, session_capabilities,
    upstream_response,
};

fuzz_target!(|data: &[u8]| {
    let Ok(hello) = parse_client_response(data) else {
        return;
    };
    let Ok(up) = parse_greeting(&client_greeting(None, &[1; 20])) else {
        panic!("our own greeting does not parse");
    };
    let caps = session_capabilities(&hello, &up, false);
    let out = upstream_response(caps, &hello, &up, "zt_user", b"password");
    let back = parse_client_response(&out).expect("our own response parses");
    assert_eq!(back.database, hello.database);
    assert_eq!(back.attributes, hello.attributes);
});
