use std::time::SystemTime;

use zeroth::lab::Swtpm;
use zeroth_attest::verify::alg::HashAlg;
use zeroth_attest::verify::credential::make_credential;
use zeroth_attest::verify::ek::{cert_key_matches, check_ek, EkTrust};
use zeroth_attest::verify::pcr::PcrPolicy;
use zeroth_attest::verify::public::Public;
use zeroth_attest::verify::quote::{check_ak, verify_quote, Ak};
use zeroth_attest::verify::VerifyError;

use crate::tools::Tpm2Tools;

const PCRS: &str = "0,1,2,3,7,10";

#[test]
fn a_tpm2_quote_is_accepted_and_every_tampering_is_named() {
    let tpm = Swtpm::start().unwrap();
    let t = Tpm2Tools::new(&tpm);
    t.create_ek_and_ak();
    let ak = Public::from_tpm2b(&t.read("ak.pub")).unwrap();
    assert_eq!(ak.name(), t.read("ak.name"), "our Name equals the TPM's");
    check_ak(&ak).unwrap();
    let ek = Public::from_tpm2b(&t.read("ek.pub")).unwrap();
    let ak = Ak::under_ek(ak, &ek);

    let nonce = [0x5a; 32];
    let (msg, sig) = t.quote(PCRS, &nonce);
    let values = t.pcrs(PCRS);
    let first = verify_quote(&ak, &msg, &sig, &nonce, &values, None).unwrap();
    assert_eq!(first.pcrs.0.len(), 6);

    // A flipped byte anywhere in TPMS_ATTEST breaks the signature.
    for at in [0, 10, msg.len() / 2, msg.len() - 1] {
        let mut bad = msg.clone();
        bad[at] ^= 0x01;
        assert_eq!(
            verify_quote(&ak, &bad, &sig, &nonce, &values, None),
            Err(VerifyError::BadSignature),
            "flip at {at}"
        );
    }
    // The nonce this verifier issued, and only it.
    assert_eq!(
        verify_quote(&ak, &msg, &sig, &[0x5b; 32], &values, None),
        Err(VerifyError::NonceMismatch)
    );
    // Reported PCR values that are not what was quoted.
    let mut lied = values.clone();
    lied.insert(HashAlg::Sha256, 7, vec![0xee; 32]);
    assert!(matches!(
        verify_quote(&ak, &msg, &sig, &nonce, &lied, None),
        Err(VerifyError::PcrMismatch(_))
    ));

    // A later quote is accepted after the first; the first replayed after it is not.
    let nonce2 = [0x77; 32];
    let (msg2, sig2) = t.quote(PCRS, &nonce2);
    let second = verify_quote(&ak, &msg2, &sig2, &nonce2, &values, Some(&first.clock)).unwrap();
    let replay = verify_quote(&ak, &msg, &sig, &nonce, &values, Some(&second.clock));
    assert!(
        matches!(
            replay,
            Err(VerifyError::ClockWentBackwards { field: "clock", .. })
        ),
        "{replay:?}"
    );

    // A signature by another AK of the same TPM is refused.
    t.run(&[
        "tpm2_createak",
        "-C",
        "ek.ctx",
        "-c",
        "ak2.ctx",
        "-G",
        "ecc",
        "-g",
        "sha256",
        "-s",
        "ecdsa",
        "-u",
        "ak2.pub",
        "-n",
        "ak2.name",
    ]);
    let other = Ak::under_ek(Public::from_tpm2b(&t.read("ak2.pub")).unwrap(), &ek);
    assert_eq!(
        verify_quote(&other, &msg, &sig, &nonce, &values, None),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn pcr_policy_catches_an_extend_made_after_it_was_set() {
    let tpm = Swtpm::start().unwrap();
    let t = Tpm2Tools::new(&tpm);
    t.create_ek_and_ak();
    let ek = Public::from_tpm2b(&t.read("ek.pub")).unwrap();
    let ak = Ak::under_ek(Public::from_tpm2b(&t.read("ak.pub")).unwrap(), &ek);
    let mut policy = PcrPolicy::default();
    for (k, v) in &t.pcrs(PCRS).0 {
        policy.0.insert(*k, v.clone());
    }
    let nonce = [1; 32];
    let (msg, sig) = t.quote(PCRS, &nonce);
    let q = verify_quote(&ak, &msg, &sig, &nonce, &t.pcrs(PCRS), None).unwrap();
    policy.check(&q.pcrs).unwrap();

    t.run(&["tpm2_pcrextend", &format!("10:sha256={}", "cd".repeat(32))]);
    let nonce = [2; 32];
    let (msg, sig) = t.quote(PCRS, &nonce);
    let q = verify_quote(&ak, &msg, &sig, &nonce, &t.pcrs(PCRS), Some(&q.clock)).unwrap();
    let err = policy.check(&q.pcrs).unwrap_err();
    assert!(
        matches!(err, VerifyError::PcrPolicy { index: 10, .. }),
        "{err}"
    );
}

#[test]
fn our_make_credential_is_activated_by_tpm2_activatecredential() {
    let tpm = Swtpm::start().unwrap();
    let t = Tpm2Tools::new(&tpm);
    t.create_ek_and_ak();
    let ek = Public::from_tpm2b(&t.read("ek.pub")).unwrap();
    let secret = *b"zeroth: the AK shares a TPM w/EK";
    let cred = make_credential(&ek, &t.read("ak.name"), &secret).unwrap();
    let recovered = t.activate_credential(&cred.to_tpm2_tools_file()).unwrap();
    assert_eq!(recovered, secret);

    // Bound to the AK's Name: a credential made for another Name does not activate.
    let mut wrong_name = t.read("ak.name");
    let last = wrong_name.len() - 1;
    wrong_name[last] ^= 1;
    let cred = make_credential(&ek, &wrong_name, &secret).unwrap();
    assert!(
        t.activate_credential(&cred.to_tpm2_tools_file()).is_err(),
        "a credential for another Name was activated"
    );
}

#[test]
fn unfit_aks_are_refused_before_any_credential_is_made() {
    let tpm = Swtpm::start().unwrap();
    let t = Tpm2Tools::new(&tpm);
    t.run(&[
        "tpm2_createprimary",
        "-C",
        "o",
        "-G",
        "ecc",
        "-c",
        "prim.ctx",
    ]);
    // A signing key that is not restricted could sign a forged TPMS_ATTEST.
    t.run(&[
        "tpm2_create",
        "-C",
        "prim.ctx",
        "-G",
        "ecc:ecdsa-sha256",
        "-a",
        "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign",
        "-u",
        "free.pub",
        "-r",
        "free.priv",
    ]);
    let free = Public::from_tpm2b(&t.read("free.pub")).unwrap();
    assert_eq!(
        check_ak(&free),
        Err(VerifyError::AkAttributeMissing("restricted"))
    );
    // A key that can also decrypt.
    t.run(&[
        "tpm2_create",
        "-C",
        "prim.ctx",
        "-G",
        "ecc",
        "-a",
        "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign|decrypt",
        "-u",
        "both.pub",
        "-r",
        "both.priv",
    ]);
    let both = Public::from_tpm2b(&t.read("both.pub")).unwrap();
    assert_eq!(check_ak(&both), Err(VerifyError::AkCanDecrypt));
    // A key that could leave its TPM: the TPM refuses to create a restricted
    // one under this parent, so clear fixedTPM in a real AK's public area.
    t.create_ek_and_ak();
    let mut bytes = t.read("ak.pub");
    // TPM2B size (2) + type (2) + nameAlg (2), then objectAttributes (u32 BE).
    bytes[9] &= !0x02;
    let dup = Public::from_tpm2b(&bytes).unwrap();
    assert_eq!(
        check_ak(&dup),
        Err(VerifyError::AkAttributeMissing("fixedTPM"))
    );
}

#[test]
fn the_ek_certificate_must_certify_the_ek_presented() {
    let tpm = Swtpm::start().unwrap();
    let t = Tpm2Tools::new(&tpm);
    t.run(&["tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"]);
    t.run(&[
        "tpm2_createek",
        "-c",
        "ekecc.ctx",
        "-G",
        "ecc384",
        "-u",
        "ekecc.pub",
    ]);
    let ek = Public::from_tpm2b(&t.read("ek.pub")).unwrap();
    let ek_ecc = Public::from_tpm2b(&t.read("ekecc.pub")).unwrap();
    let cert = tpm.ek_cert_rsa_der().unwrap();
    cert_key_matches(&cert, &ek).unwrap();
    assert_eq!(
        cert_key_matches(&cert, &ek_ecc),
        Err(VerifyError::EkCertKeyMismatch)
    );

    let anchors = tpm.trust_anchors().unwrap();
    let now = SystemTime::now();
    assert!(matches!(
        check_ek(&ek, Some(&cert), &anchors, &[], now),
        Ok(EkTrust::Certificate(_))
    ));
    // The right certificate presented with another EK is refused.
    assert_eq!(
        check_ek(&ek_ecc, Some(&cert), &anchors, &[], now).unwrap_err(),
        VerifyError::EkCertKeyMismatch
    );
    // Without a certificate only the allow-list admits an EK.
    assert!(matches!(
        check_ek(&ek, None, &anchors, &[], now),
        Err(VerifyError::EkNotAllowed(_))
    ));
    let listed = [zeroth_attest::verify::ek::ek_hash(&ek)];
    assert!(matches!(
        check_ek(&ek, None, &anchors, &listed, now),
        Ok(EkTrust::AllowListed)
    ));

    // ECC P-384 EK: its own certificate, and MakeCredential works for it too.
    t.run(&["tpm2_nvread", "0x01c00016", "-C", "o", "-o", "ekecc.der"]);
    cert_key_matches(&t.read("ekecc.der"), &ek_ecc).unwrap();
    assert!(matches!(
        check_ek(&ek_ecc, Some(&t.read("ekecc.der")), &anchors, &[], now),
        Ok(EkTrust::Certificate(_))
    ));
}

#[test]
fn our_make_credential_for_an_ecc_ek_is_activated_by_the_tpm() {
    let tpm = Swtpm::start().unwrap();
    let t = Tpm2Tools::new(&tpm);
    // The TCG default ECC P-256 EK (policy: PolicySecret(endorsement)).
    t.run(&["tpm2_createek", "-c", "ek.ctx", "-G", "ecc", "-u", "ek.pub"]);
    t.run(&[
        "tpm2_createak",
        "-C",
        "ek.ctx",
        "-c",
        "ak.ctx",
        "-G",
        "ecc",
        "-g",
        "sha256",
        "-s",
        "ecdsa",
        "-u",
        "ak.pub",
        "-n",
        "ak.name",
    ]);
    let ek = Public::from_tpm2b(&t.read("ek.pub")).unwrap();
    assert!(matches!(
        ek.key,
        zeroth_attest::verify::public::KeyMaterial::Ecc { .. }
    ));
    let secret = [0xa5u8; 20];
    let cred = make_credential(&ek, &t.read("ak.name"), &secret).unwrap();
    let recovered = t.activate_credential(&cred.to_tpm2_tools_file()).unwrap();
    assert_eq!(recovered, secret);
}
