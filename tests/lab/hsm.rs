use zeroth::lab::SoftHsm;
use zeroth_hsm::{Capability, HsmError, Module, TokenSelector};

#[test]
fn softhsm_token_offers_the_mechanisms_zeroth_needs() {
    let lab = SoftHsm::start().unwrap();
    // SoftHSM reads its configuration once, when this process initialises it.
    std::env::set_var("SOFTHSM2_CONF", lab.conf());
    let module = Module::load(lab.module()).unwrap();
    let token = module
        .token_summary(&TokenSelector::Label(lab.token_label().into()))
        .unwrap();
    assert_eq!(token.label, lab.token_label());
    for cap in Capability::ALL {
        assert!(
            token.supports(cap),
            "{cap}: missing {:?}",
            token.missing(cap)
        );
    }

    // A token that is not there is named, with the ones that are.
    let err = module
        .token_summary(&TokenSelector::Label("no-such-token".into()))
        .unwrap_err();
    assert!(matches!(err, HsmError::TokenAbsent { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("no-such-token") && msg.contains(lab.token_label()),
        "{msg}"
    );

    // An independent PKCS#11 client sees the same token and logs in with the PIN file.
    let out = lab
        .pkcs11_tool()
        .unwrap()
        .arg("--list-objects")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pin_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let lab = SoftHsm::start().unwrap();
    let mode = std::fs::metadata(lab.pin_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_missing_module_is_a_clear_error() {
    let err = Module::load(std::path::Path::new("/nonexistent/libpkcs11.so")).unwrap_err();
    assert!(matches!(err, HsmError::ModuleLoad { .. }));
    assert!(
        err.to_string().contains("/nonexistent/libpkcs11.so"),
        "{err}"
    );
}
