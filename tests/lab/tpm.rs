use std::process::Command;
use std::time::SystemTime;

use zeroth::lab::Swtpm;
use zeroth_attest::{verify_ek_chain, ChainError, EkAlgorithm, Tpm, TrustAnchors};

fn anchors(tpm: &Swtpm) -> TrustAnchors {
    tpm.trust_anchors().unwrap()
}

/// Runs a tpm2-tools command against the lab TPM and returns its stdout.
fn tpm2(tpm: &Swtpm, args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .env("TPM2TOOLS_TCTI", tpm.tcti())
        .env("TSS2_LOG", "all+none")
        .output()
        .unwrap_or_else(|e| panic!("{} (apt-get install tpm2-tools): {e}", args[0]));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn tpm_answers_get_random() {
    let lab = Swtpm::start().unwrap();
    let mut tpm = Tpm::open(&lab.tcti()).unwrap();
    let a = tpm.random(48).unwrap();
    let b = tpm.random(48).unwrap();
    assert_eq!(a.len(), 48);
    assert_ne!(a, b, "two GetRandom answers must differ");
    assert!(a.iter().any(|&x| x != 0));
}

#[test]
fn ek_certificates_in_nv_chain_to_the_lab_ca() {
    let lab = Swtpm::start().unwrap();
    let mut tpm = Tpm::open(&lab.tcti()).unwrap();
    let anchors = anchors(&lab);

    let rsa = tpm.ek_certificate(EkAlgorithm::Rsa2048).unwrap();
    assert_eq!(
        rsa,
        lab.ek_cert_rsa_der().unwrap(),
        "NV holds what swtpm_setup wrote"
    );
    let chain = verify_ek_chain(&rsa, &anchors, SystemTime::now()).unwrap();
    assert_eq!(
        chain.path.len(),
        3,
        "EK -> intermediate -> root: {:?}",
        chain.path
    );

    let ecc = tpm.ek_certificate(EkAlgorithm::EccP384).unwrap();
    verify_ek_chain(&ecc, &anchors, SystemTime::now()).unwrap();

    // Without the intermediate, or without the root, there is no path.
    let roots_only = TrustAnchors {
        roots: anchors.roots.clone(),
        intermediates: vec![],
    };
    assert!(matches!(
        verify_ek_chain(&rsa, &roots_only, SystemTime::now()),
        Err(ChainError::NoIssuer { .. })
    ));
    let no_root = TrustAnchors {
        roots: vec![],
        intermediates: anchors.intermediates.clone(),
    };
    assert!(matches!(
        verify_ek_chain(&rsa, &no_root, SystemTime::now()),
        Err(ChainError::NoIssuer { .. })
    ));
}

#[test]
fn another_labs_ca_with_the_same_names_is_not_trusted() {
    // Every swtpm local CA is named CN=swtpm-localca(-rootca): only signatures count.
    let ours = Swtpm::start().unwrap();
    let theirs = Swtpm::start().unwrap();
    let mut tpm = Tpm::open(&ours.tcti()).unwrap();
    let ek = tpm.ek_certificate(EkAlgorithm::Rsa2048).unwrap();
    let err = verify_ek_chain(&ek, &anchors(&theirs), SystemTime::now()).unwrap_err();
    assert!(matches!(err, ChainError::NoIssuer { .. }), "{err}");
}

fn reset_count(tpm: &Swtpm) -> u64 {
    let clock = tpm2(tpm, &["tpm2_readclock"]);
    clock
        .lines()
        .find_map(|l| l.trim().strip_prefix("reset_count:"))
        .unwrap_or_else(|| panic!("no reset_count in tpm2_readclock output:\n{clock}"))
        .trim()
        .parse()
        .unwrap()
}

fn pcr10(tpm: &Swtpm) -> String {
    let out = tpm2(tpm, &["tpm2_pcrread", "sha256:10"]);
    out.lines()
        .find_map(|l| l.trim().strip_prefix("10:"))
        .unwrap_or_else(|| panic!("no PCR 10 in tpm2_pcrread output:\n{out}"))
        .trim()
        .to_owned()
}

#[test]
fn reboot_resets_pcrs_and_increments_reset_count() {
    let mut lab = Swtpm::start().unwrap();
    let zero = format!("0x{}", "0".repeat(64));
    assert_eq!(pcr10(&lab), zero);
    tpm2(
        &lab,
        &["tpm2_pcrextend", &format!("10:sha256={}", "ab".repeat(32))],
    );
    assert_ne!(pcr10(&lab), zero, "the extend changed PCR 10");
    let before = reset_count(&lab);

    lab.reboot().unwrap();

    assert_eq!(pcr10(&lab), zero, "PCRs start from zero after a reboot");
    assert_eq!(reset_count(&lab), before + 1);
    // Same TPM, same EK, after the reboot.
    let mut tpm = Tpm::open(&lab.tcti()).unwrap();
    assert_eq!(
        tpm.ek_certificate(EkAlgorithm::Rsa2048).unwrap(),
        lab.ek_cert_rsa_der().unwrap()
    );
}

#[test]
fn platform_certificate_is_provisioned_in_nv() {
    let lab = Swtpm::start().unwrap();
    // TCG PC Client platform certificate index.
    let public = tpm2(&lab, &["tpm2_nvreadpublic", "0x01c08000"]);
    let size: usize = public
        .lines()
        .find_map(|l| l.trim().strip_prefix("size:"))
        .unwrap_or_else(|| panic!("no size in:\n{public}"))
        .trim()
        .parse()
        .unwrap();
    assert!(size > 100, "a platform certificate of {size} bytes");
}
