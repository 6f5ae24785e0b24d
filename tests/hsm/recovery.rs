//! The token goes away and comes back: the key store finds its keys again
//! by itself, without a restart, and fails fast while the token is away.

use std::time::{Duration, Instant};

use zeroth::lab::SoftHsm;
use zeroth_hsm::{KeyKind, KeyName, KeyStore, Pkcs11KeyStore};

#[test]
fn keys_are_found_again_once_the_token_is_back() {
    let lab = SoftHsm::start().unwrap();
    lab.export_conf();
    let store = Pkcs11KeyStore::open(&lab.pkcs11_config()).unwrap();
    let name = KeyName::new("recovery-test").unwrap();
    let public = store
        .get_or_generate(&name, KeyKind::EcdsaP256)
        .unwrap()
        .public;
    store.sign(&name, b"before").unwrap();

    let tokens = lab.dir().join("tokens");
    let away = lab.dir().join("tokens.away");
    std::fs::rename(&tokens, &away).unwrap();
    assert!(store.sign(&name, b"while away").is_err());
    // While it stays away, callers are not held up by retries.
    let t = Instant::now();
    for _ in 0..20 {
        assert!(store.sign(&name, b"while away").is_err());
    }
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    std::fs::rename(&away, &tokens).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let sig = loop {
        match store.sign(&name, b"after") {
            Ok(sig) => break sig,
            Err(e) if Instant::now() > deadline => panic!("the HSM did not come back: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    assert_eq!(sig.len(), 64);
    // The same key, not a new one made while the login was lost.
    assert_eq!(store.public_key(&name).unwrap(), public.unwrap());
    assert_eq!(store.list().unwrap().len(), 1);
}

#[test]
fn a_server_whose_token_went_away_is_ready_again_by_itself() {
    use zeroth::lab::ZerothServer;
    let hsm = SoftHsm::start().unwrap();
    let server = ZerothServer::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_zeroth")),
        &hsm,
        &format!(
            "[[group]]\nname = \"edge\"\nek_allow = [\"{}\"]\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    // A new client each time: a new connection, a full TLS handshake.
    let ready = || {
        zeroth::agent::enrol::client(&server.bundle())
            .unwrap()
            .get(format!("{}/readyz", server.url()))
            .send()
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string())
    };
    assert_eq!(ready(), Ok(200));

    let tokens = hsm.dir().join("tokens");
    let away = hsm.dir().join("tokens.away");
    std::fs::rename(&tokens, &away).unwrap();
    // The TLS key is in the token: new connections fail, and say so.
    let deadline = Instant::now() + Duration::from_secs(20);
    while ready() == Ok(200) {
        assert!(Instant::now() < deadline, "still ready without its token");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::rename(&away, &tokens).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready() != Ok(200) {
        assert!(
            Instant::now() < deadline,
            "not ready again: {:?}\n{}",
            ready(),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = server.log();
    assert!(log.contains("TLS handshake refused"), "{log}");
    assert!(log.contains("the HSM is back"), "{log}");
}
