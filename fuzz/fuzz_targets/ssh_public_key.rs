#![no_main]
//! The public key a node sends to be certified (`POST /v1/ssh/sign`): any
//! bytes must parse to a key or a reason, never a panic, and every key the
//! checks accept must certify under both CA algorithms into a certificate
//! that verifies and carries that key.

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use ssh_key::certificate::CertType;
use zeroth::creds::ssh::ca::{CaAlgorithm, CertSpec, SshCa};
use zeroth::creds::ssh::request::parse_public_key;

fn cas() -> &'static [SshCa; 2] {
    static CAS: OnceLock<[SshCa; 2]> = OnceLock::new();
    CAS.get_or_init(|| {
        let keys: Arc<dyn zeroth_hsm::KeyStore> =
            Arc::new(zeroth_hsm::SoftwareKeyStore::new_insecure());
        let open = |alg: CaAlgorithm| {
            SshCa::open(keys.clone(), &alg.key_name("fuzz-ca"), alg, CertType::User)
                .expect("a software CA key")
        };
        [open(CaAlgorithm::Ed25519), open(CaAlgorithm::EcdsaP256)]
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(key) = parse_public_key(line) else {
        return;
    };
    let spec = CertSpec {
        serial: 1,
        key_id: "fuzz".into(),
        principals: vec!["fuzz".into()],
        valid_after: 0,
        valid_before: 60,
        critical_options: vec![("source-address".into(), "127.0.0.1/32".into())],
        extensions: vec!["permit-pty".into()],
    };
    for ca in cas() {
        let cert = ca.certify(&key, &spec).expect("an accepted key certifies");
        assert_eq!(cert.public_key(), key.key_data());
        let line = cert.to_openssh().expect("the certificate encodes");
        let back = ssh_key::Certificate::from_openssh(&line).expect("and parses back");
        assert_eq!(back.serial(), 1);
    }
});
