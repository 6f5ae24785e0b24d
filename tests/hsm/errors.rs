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
