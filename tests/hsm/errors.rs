use std::path::PathBuf;

use zeroth::lab::SoftHsm;
use zeroth_hsm::{HsmError, PinSource, Pkcs11KeyStore, TokenSelector};

#[test]
fn a_wrong_pin_is_reported_as_such() {
    let lab = SoftHsm::start().unwrap();
    lab.export_conf();
    let wrong = lab.dir().join("wrong.pin");
    std::fs::write(&wrong, "not-the-pin").unwrap();
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut config = lab.pkcs11_config();
    config.pin = PinSource::File(wrong);
    let err = Pkcs11KeyStore::open(&config).unwrap_err();
    assert!(matches!(err, HsmError::WrongPin { .. }), "{err}");
    assert!(err.to_string().contains("wrong PIN"), "{err}");
    assert!(!err.to_string().contains("not-the-pin"), "{err}");
}

#[test]
fn a_missing_token_is_reported_with_the_tokens_present() {
    let lab = SoftHsm::start().unwrap();
    lab.export_conf();
    let mut config = lab.pkcs11_config();
    config.token = TokenSelector::Label("no-such-token".into());
    let err = Pkcs11KeyStore::open(&config).unwrap_err();
    assert!(matches!(err, HsmError::TokenAbsent { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("no-such-token") && msg.contains("zeroth-lab"),
        "{msg}"
    );
}

#[test]
fn a_missing_module_is_reported_with_its_path() {
    let lab = SoftHsm::start().unwrap();
    let mut config = lab.pkcs11_config();
    config.module = PathBuf::from("/nonexistent/libpkcs11.so");
    let err = Pkcs11KeyStore::open(&config).unwrap_err();
    assert!(matches!(err, HsmError::ModuleLoad { .. }), "{err}");
    assert!(
        err.to_string().contains("/nonexistent/libpkcs11.so"),
        "{err}"
    );
}

#[test]
fn a_missing_pin_file_is_reported_with_its_path() {
    let lab = SoftHsm::start().unwrap();
    lab.export_conf();
    let mut config = lab.pkcs11_config();
    config.pin = PinSource::File(lab.dir().join("absent.pin"));
    let err = Pkcs11KeyStore::open(&config).unwrap_err();
    assert!(matches!(err, HsmError::PinSource { .. }), "{err}");
    assert!(err.to_string().contains("absent.pin"), "{err}");
}

#[test]
fn a_module_the_service_account_cannot_read_names_the_files_and_the_account() {
    // The lab's token is root's, as Debian's is; a service account that was
    // not given access runs `zeroth hsm status`.
    let lab = SoftHsm::start().unwrap();
    let zeroth =
        zeroth::lab::RunnableCopy::of(std::path::Path::new(env!("CARGO_BIN_EXE_zeroth"))).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(zeroth.path())
        .args(["hsm", "status"])
        .args(lab.zeroth_args())
        .env("SOFTHSM2_CONF", lab.conf())
        .env("USER", "nobody")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("cannot read {}", lab.conf().display()))
            && err.contains("uid 65534 (nobody)"),
        "{err}"
    );
    assert!(
        !err.contains("horrible"),
        "the PKCS#11 code alone explains nothing: {err}"
    );
}
