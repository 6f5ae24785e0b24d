use std::sync::Arc;

use zeroth::lab::SoftHsm;
use zeroth_hsm::{
    conformance::check_key_store, Binding, HsmError, KeyKind, KeyName, KeyStore, Pkcs11KeyStore,
    PublicKey, Sealer,
};

fn open() -> (SoftHsm, Pkcs11KeyStore) {
    let lab = SoftHsm::start().unwrap();
    lab.export_conf();
    let store = Pkcs11KeyStore::open(&lab.pkcs11_config()).unwrap();
    (lab, store)
}

#[test]
fn pkcs11_store_passes_the_key_store_conformance_suite() {
    let (_lab, store) = open();
    check_key_store(&store, "conformance");
}

#[test]
fn many_threads_sign_concurrently_and_every_signature_verifies() {
    let (_lab, store) = open();
    let name = KeyName::new("concurrent").unwrap();
    let info = store.get_or_generate(&name, KeyKind::Ed25519).unwrap();
    let Some(PublicKey::Ed25519(pk)) = info.public else {
        panic!("no Ed25519 public key");
    };
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&pk).unwrap();
    let store = Arc::new(store);
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let store = store.clone();
            let name = name.clone();
            std::thread::spawn(move || {
                (0..40)
                    .map(|i| {
                        let msg = format!("thread {t} message {i}").into_bytes();
                        let sig = store.sign(&name, &msg).unwrap();
                        (msg, sig)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut n = 0;
    for t in threads {
        for (msg, sig) in t.join().unwrap() {
            let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
            vk.verify_strict(&msg, &sig).unwrap();
            n += 1;
        }
    }
    assert_eq!(n, 16 * 40);
}

#[test]
fn sealed_secrets_fail_when_tampered_or_moved() {
    let (_lab, store) = open();
    let store: Arc<dyn KeyStore> = Arc::new(store);
    let sealer = Sealer::new(store, KeyName::new("store-kek").unwrap()).unwrap();
    let here = Binding {
        table: "db_connections",
        record: "main",
        column: "admin_password",
    };
    let sealed = sealer.seal(here, b"correct horse battery staple").unwrap();
    assert_eq!(
        &sealer.open(here, &sealed).unwrap()[..],
        b"correct horse battery staple"
    );
    let moved = Binding {
        record: "replica",
        ..here
    };
    assert!(matches!(
        sealer.open(moved, &sealed),
        Err(HsmError::Decrypt)
    ));
    // Flip one bit in the wrapped data key, then one in the value.
    for at in [8, sealed.len() - 1] {
        let mut t = sealed.clone();
        t[at] ^= 0x80;
        assert!(sealer.open(here, &t).is_err(), "flip at {at}");
    }
}

#[test]
fn a_store_logs_in_again_after_its_login_is_lost() {
    let (lab, store) = open();
    let name = KeyName::new("survivor").unwrap();
    store.get_or_generate(&name, KeyKind::EcdsaP256).unwrap();
    store.sign(&name, b"before").unwrap();

    // Another user of the same module logs the application out, as a token
    // reset or an operator's tool would: every session loses its login.
    let module = zeroth_hsm::Module::load(lab.module()).unwrap();
    let token = zeroth_hsm::TokenSelector::Label(lab.token_label().into());
    module.logout(&token).unwrap();

    let sig = store.sign(&name, b"after").unwrap();
    assert_eq!(sig.len(), 64);
}
