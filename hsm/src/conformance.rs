//! Checks every [`KeyStore`] must pass, run against each implementation
//! (the software store in unit tests, a real PKCS#11 token in integration
//! tests). Signatures are verified with independent libraries
//! (ed25519-dalek, p256), never by the store itself.

use crate::{HsmError, KeyKind, KeyName, KeyStore, PublicKey};

/// Runs the whole suite; key names start with `prefix` so runs never collide
/// on a persistent token. Panics with the failed check's description.
pub fn check_key_store(store: &dyn KeyStore, prefix: &str) {
    let name = |n: &str| KeyName::new(&format!("{prefix}-{n}")).expect("valid test key name");
    let (ed, ec, kek, none) = (name("ed"), name("ec"), name("kek"), name("none"));

    // Generation is idempotent and kinds are enforced.
    let ed_info = store
        .get_or_generate(&ed, KeyKind::Ed25519)
        .expect("generate Ed25519");
    let again = store
        .get_or_generate(&ed, KeyKind::Ed25519)
        .expect("get Ed25519");
    assert_eq!(
        ed_info.public, again.public,
        "second get_or_generate returns the same key"
    );
    assert!(
        matches!(
            store.get_or_generate(&ed, KeyKind::Aes256),
            Err(HsmError::WrongKind { .. })
        ),
        "an existing key is not silently reused as another kind"
    );
    let ec_info = store
        .get_or_generate(&ec, KeyKind::EcdsaP256)
        .expect("generate P-256");
    let kek_info = store
        .get_or_generate(&kek, KeyKind::Aes256)
        .expect("generate AES-256");
    assert_eq!(kek_info.public, None);

    // Ed25519: verified by ed25519-dalek, strictly, through the SPKI.
    let msg = b"zeroth conformance message";
    let Some(PublicKey::Ed25519(raw)) = ed_info.public else {
        panic!("an Ed25519 key has an Ed25519 public key");
    };
    use ed25519_dalek::pkcs8::DecodePublicKey as _;
    let vk = ed25519_dalek::VerifyingKey::from_public_key_der(&PublicKey::Ed25519(raw).spki_der())
        .expect("Ed25519 SPKI parses");
    assert_eq!(vk.to_bytes(), raw);
    let sig = store.sign(&ed, msg).expect("Ed25519 sign");
    let sig = ed25519_dalek::Signature::from_slice(&sig).expect("64-byte Ed25519 signature");
    vk.verify_strict(msg, &sig)
        .expect("Ed25519 signature verifies");
    assert!(vk.verify_strict(b"another message", &sig).is_err());

    // ECDSA P-256 over SHA-256: verified by p256 through the SPKI.
    use p256::ecdsa::signature::Verifier as _;
    let ec_public = ec_info.public.expect("a P-256 key has a public key");
    let vk = p256::ecdsa::VerifyingKey::from_public_key_der(&ec_public.spki_der())
        .expect("P-256 SPKI parses");
    let sig = store.sign(&ec, msg).expect("ECDSA sign");
    let sig = p256::ecdsa::Signature::from_slice(&sig).expect("64-byte r||s signature");
    vk.verify(msg, &sig).expect("ECDSA signature verifies");
    assert!(vk.verify(b"another message", &sig).is_err());
    assert_eq!(store.public_key(&ec).expect("public key"), ec_public);

    // AES-GCM: round trip; any change to ciphertext or AAD fails.
    let ct = store.encrypt(&kek, b"plaintext", b"aad").expect("encrypt");
    assert!(!ct.windows(9).any(|w| w == b"plaintext"));
    assert_eq!(
        &store.decrypt(&kek, &ct, b"aad").expect("decrypt")[..],
        b"plaintext"
    );
    assert_ne!(
        ct,
        store.encrypt(&kek, b"plaintext", b"aad").expect("encrypt"),
        "fresh nonce"
    );
    assert!(matches!(
        store.decrypt(&kek, &ct, b"other"),
        Err(HsmError::Decrypt)
    ));
    let mut tampered = ct.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(matches!(
        store.decrypt(&kek, &tampered, b"aad"),
        Err(HsmError::Decrypt)
    ));
    assert!(matches!(
        store.decrypt(&kek, &ct[..10], b"aad"),
        Err(HsmError::Decrypt)
    ));

    // Using a key for the wrong job, or one that does not exist, is refused by name.
    assert!(matches!(
        store.encrypt(&ed, b"x", b""),
        Err(HsmError::WrongKind { .. })
    ));
    assert!(matches!(
        store.sign(&kek, b"x"),
        Err(HsmError::WrongKind { .. })
    ));
    match store.sign(&none, b"x") {
        Err(HsmError::KeyMissing(n)) => assert!(n.contains(none.as_str())),
        other => panic!("signing with a missing key: {other:?}"),
    }

    // Listing shows ours; destroying removes them.
    let listed: Vec<KeyName> = store
        .list()
        .expect("list")
        .into_iter()
        .map(|k| k.name)
        .collect();
    for n in [&ed, &ec, &kek] {
        assert!(listed.contains(n), "{n} is listed");
    }
    for n in [&ed, &ec, &kek] {
        assert!(store.destroy(n).expect("destroy"), "{n} existed");
        assert!(!store.destroy(n).expect("destroy again"), "{n} is gone");
    }
    assert!(matches!(store.sign(&ed, msg), Err(HsmError::KeyMissing(_))));
}

#[cfg(test)]
mod tests {
    #[test]
    fn software_store_conforms() {
        super::check_key_store(&crate::SoftwareKeyStore::new_insecure(), "soft");
    }
}
