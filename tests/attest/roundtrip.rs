use std::time::SystemTime;

use zeroth::lab::Swtpm;
use zeroth_attest::verify::attestation::Signature;
use zeroth_attest::verify::credential::{check_activation, make_credential};
use zeroth_attest::verify::ek::{check_ek, EkTrust};
use zeroth_attest::verify::public::{KeyMaterial, Public};
use zeroth_attest::verify::quote::{check_ak, verify_certify, verify_quote, Ak};
use zeroth_attest::verify::VerifyError;
use zeroth_attest::{AkAlgorithm, Attester, EkAlgorithm, TrustAnchors};

use crate::tools::{hex, Tpm2Tools};

fn anchors(tpm: &Swtpm) -> TrustAnchors {
    tpm.trust_anchors().unwrap()
}

#[test]
fn enrolment_round_trip_from_ek_to_certified_identity_key() {
    let lab = Swtpm::start().unwrap();
    let tpm = Attester::open(&lab.tcti()).unwrap();

    // The machine sends its EK, EK certificate and a fresh AK.
    let ek_pub = tpm.run(|t| t.ek_public(EkAlgorithm::Rsa2048)).unwrap();
    let ek_cert = tpm.run(|t| t.ek_certificate(EkAlgorithm::Rsa2048)).unwrap();
    let ak_blob = tpm.run(|t| t.create_ak(AkAlgorithm::EccP256)).unwrap();

    // The verifier: EK trusted through the lab CA, AK fit for attestation.
    let ek = Public::from_tpm2b(&ek_pub).unwrap();
    let trust = check_ek(&ek, Some(&ek_cert), &anchors(&lab), &[], SystemTime::now()).unwrap();
    assert!(matches!(trust, EkTrust::Certificate(_)));
    let ak_public = Public::from_tpm2b(&ak_blob.public).unwrap();
    check_ak(&ak_public).unwrap();

    // Credential activation proves the AK lives beside the EK.
    let secret = [0x42u8; 32];
    let cred = make_credential(&ek, &ak_public.name(), &secret).unwrap();
    let blob = ak_blob.clone();
    let recovered = tpm
        .run(move |t| t.activate_credential(&blob, &cred.credential_blob, &cred.encrypted_secret))
        .unwrap();
    check_activation(&secret, &recovered).unwrap();
    assert_eq!(
        check_activation(&[0x43u8; 32], &recovered),
        Err(VerifyError::CredentialMismatch)
    );

    // A quote over the boot PCRs, verified.
    let ak = Ak::under_ek(ak_public, &ek);
    let nonce = [7u8; 32];
    let blob = ak_blob.clone();
    let quote = tpm
        .run(move |t| t.quote(&blob, &[0, 1, 2, 3, 4, 5, 6, 7], &nonce))
        .unwrap();
    let verified = verify_quote(
        &ak,
        &quote.attest,
        &quote.signature,
        &nonce,
        &quote.pcrs,
        None,
    )
    .unwrap();
    assert_eq!(verified.pcrs.0.len(), 8);

    // tpm2-tools' checker agrees with our attester's quote.
    let tools = Tpm2Tools::new(&lab);
    std::fs::write(tools.path("ak.pub"), &ak_blob.public).unwrap();
    std::fs::write(tools.path("q.msg"), &quote.attest).unwrap();
    std::fs::write(tools.path("q.sig"), &quote.signature).unwrap();
    let out = tools.try_run(&[
        "tpm2_checkquote",
        "-u",
        "ak.pub",
        "-m",
        "q.msg",
        "-s",
        "q.sig",
        "-q",
        &hex(&nonce),
        "-g",
        "sha256",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The identity key: created in the TPM, certified by the AK, signs digests.
    let key = tpm.run(|t| t.create_signing_key()).unwrap();
    let key_public = Public::from_tpm2b(&key.public).unwrap();
    let nonce2 = [9u8; 16];
    let (k, a) = (key.clone(), ak_blob.clone());
    let (attest, sig) = tpm.run(move |t| t.certify(&k, &a, &nonce2)).unwrap();
    verify_certify(&ak, &attest, &sig, &nonce2, &key_public).unwrap();
    // The AK's certification of one key does not vouch for another.
    assert_eq!(
        verify_certify(&ak, &attest, &sig, &nonce2, &ak.public),
        Err(VerifyError::CertifiedNameMismatch)
    );

    let digest = [0x11u8; 32];
    let k = key.clone();
    let sig = tpm.run(move |t| t.sign_digest(&k, &digest)).unwrap();
    let Signature::Ecdsa { r, s, .. } = Signature::parse(&sig).unwrap() else {
        panic!("an ECDSA signature");
    };
    let KeyMaterial::Ecc { x, y, .. } = &key_public.key else {
        panic!("an ECC key");
    };
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&[&[4u8][..], x, y].concat()).unwrap();
    let pad = |v: &[u8]| [vec![0u8; 32 - v.len()], v.to_vec()].concat();
    let sig = p256::ecdsa::Signature::from_slice(&[pad(&r), pad(&s)].concat()).unwrap();
    vk.verify_prehash(&digest, &sig).unwrap();
}

#[test]
fn thousands_of_quotes_leave_no_handles_or_sessions_behind() {
    let lab = Swtpm::start().unwrap();
    let tpm = Attester::open(&lab.tcti()).unwrap();
    let ek = Public::from_tpm2b(&tpm.run(|t| t.ek_public(EkAlgorithm::Rsa2048)).unwrap()).unwrap();
    let blob = tpm.run(|t| t.create_ak(AkAlgorithm::EccP256)).unwrap();
    let ak = Ak::under_ek(Public::from_tpm2b(&blob.public).unwrap(), &ek);
    // Activations open sessions: interleave some with the quotes.
    let mut previous = None;
    for i in 0u32..2000 {
        let nonce = i.to_be_bytes().repeat(8);
        let (b, n) = (blob.clone(), nonce.clone());
        let q = tpm.run(move |t| t.quote(&b, &[0, 7], &n)).unwrap();
        let v = verify_quote(
            &ak,
            &q.attest,
            &q.signature,
            &nonce,
            &q.pcrs,
            previous.as_ref(),
        )
        .unwrap();
        previous = Some(v.clock);
        if i % 250 == 0 {
            let cred = make_credential(&ek, &ak.public.name(), &nonce).unwrap();
            let b = blob.clone();
            let got = tpm
                .run(move |t| {
                    t.activate_credential(&b, &cred.credential_blob, &cred.encrypted_secret)
                })
                .unwrap();
            assert_eq!(&got[..], &nonce[..]);
        }
        assert!(tpm.run(|t| Ok(t.loaded_keys())).unwrap() <= 2);
    }
    drop(tpm);
    // The worker flushed what it kept loaded; nothing else was left.
    let tools = Tpm2Tools::new(&lab);
    for cap in [
        "handles-transient",
        "handles-loaded-session",
        "handles-saved-session",
    ] {
        let out = tools.try_run(&["tpm2_getcap", cap]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(listed.trim().is_empty(), "{cap} still held:\n{listed}");
    }
}

#[test]
fn quotes_across_a_reboot_move_reset_count_forward() {
    let mut lab = Swtpm::start().unwrap();
    let (ek, blob, first) = {
        let tpm = Attester::open(&lab.tcti()).unwrap();
        let ek =
            Public::from_tpm2b(&tpm.run(|t| t.ek_public(EkAlgorithm::Rsa2048)).unwrap()).unwrap();
        let blob = tpm.run(|t| t.create_ak(AkAlgorithm::EccP256)).unwrap();
        let b = blob.clone();
        let q = tpm.run(move |t| t.quote(&b, &[0], &[1; 32])).unwrap();
        (ek, blob, q)
    };
    let ak = Ak::under_ek(Public::from_tpm2b(&blob.public).unwrap(), &ek);
    let before = verify_quote(
        &ak,
        &first.attest,
        &first.signature,
        &[1; 32],
        &first.pcrs,
        None,
    )
    .unwrap();

    lab.reboot().unwrap();
    let tpm = Attester::open(&lab.tcti()).unwrap();
    let b = blob.clone();
    let q = tpm.run(move |t| t.quote(&b, &[0], &[2; 32])).unwrap();
    let after = verify_quote(
        &ak,
        &q.attest,
        &q.signature,
        &[2; 32],
        &q.pcrs,
        Some(&before.clock),
    )
    .unwrap();
    assert_eq!(after.clock.reset_count, before.clock.reset_count + 1);
    // The pre-reboot quote cannot be replayed after the reboot.
    assert!(matches!(
        verify_quote(
            &ak,
            &first.attest,
            &first.signature,
            &[1; 32],
            &first.pcrs,
            Some(&after.clock)
        ),
        Err(VerifyError::ClockWentBackwards {
            field: "resetCount",
            ..
        })
    ));
}

#[test]
fn an_rsa_ak_is_activated_and_its_quotes_verify() {
    let lab = Swtpm::start().unwrap();
    let tpm = Attester::open(&lab.tcti()).unwrap();
    let ek = Public::from_tpm2b(&tpm.run(|t| t.ek_public(EkAlgorithm::Rsa2048)).unwrap()).unwrap();
    let blob = tpm.run(|t| t.create_ak(AkAlgorithm::Rsa2048)).unwrap();
    let public = Public::from_tpm2b(&blob.public).unwrap();
    check_ak(&public).unwrap();
    assert!(matches!(public.key, KeyMaterial::Rsa { bits: 2048, .. }));
    let cred = make_credential(&ek, &public.name(), b"rsa ak").unwrap();
    let b = blob.clone();
    let got = tpm
        .run(move |t| t.activate_credential(&b, &cred.credential_blob, &cred.encrypted_secret))
        .unwrap();
    assert_eq!(&got[..], b"rsa ak");
    let ak = Ak::under_ek(public, &ek);
    let q = tpm.run(move |t| t.quote(&blob, &[0, 7], &[5; 20])).unwrap();
    verify_quote(&ak, &q.attest, &q.signature, &[5; 20], &q.pcrs, None).unwrap();
    let mut bad = q.signature.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(
        verify_quote(&ak, &q.attest, &bad, &[5; 20], &q.pcrs, None),
        Err(VerifyError::BadSignature)
    );
}
