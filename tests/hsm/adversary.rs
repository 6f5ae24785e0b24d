//! What someone holding the PIN can get out of the token: signatures, never keys.

use std::process::Command;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use secrecy::ExposeSecret;
use zeroth::lab::SoftHsm;

fn zeroth_hsm(lab: &SoftHsm, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_zeroth"))
        .env("SOFTHSM2_CONF", lab.conf())
        .arg("hsm")
        .args(args)
        .args(lab.zeroth_args())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "zeroth hsm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn raw_session(lab: &SoftHsm) -> (Pkcs11, Session) {
    let ctx = Pkcs11::new(lab.module()).unwrap();
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == lab.token_label())
        .unwrap();
    let session = ctx.open_rw_session(slot).unwrap();
    session
        .login(UserType::User, Some(&lab.pin().unwrap()))
        .unwrap();
    (ctx, session)
}

fn private_key(s: &Session, label: &str) -> ObjectHandle {
    let found = s
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1, "{label}");
    found[0]
}

#[test]
fn keys_persist_across_processes_and_never_leave_the_token() {
    let lab = SoftHsm::start().unwrap();
    // Two separate processes: the second finds what the first created.
    let first = zeroth_hsm(&lab, &["init"]);
    assert_eq!(first.matches("created").count(), 6, "{first}");
    let second = zeroth_hsm(&lab, &["init"]);
    assert_eq!(second.matches("present").count(), 6, "{second}");
    let fingerprints = |s: &str| -> Vec<String> {
        s.lines()
            .filter_map(|l| {
                l.split_whitespace()
                    .find(|w| w.starts_with("SHA256:"))
                    .map(str::to_owned)
            })
            .collect()
    };
    assert_eq!(fingerprints(&first), fingerprints(&second));
    assert_eq!(fingerprints(&first).len(), 5, "five signing keys");
    let status: serde_json::Value =
        serde_json::from_str(&zeroth_hsm(&lab, &["status", "--json"])).unwrap();
    assert_eq!(status["keys"].as_array().unwrap().len(), 6, "{status}");
    assert!(!status
        .to_string()
        .contains(lab.pin().unwrap().expose_secret()));

    // Now an adversary with the PIN, talking PKCS#11 directly.
    lab.export_conf();
    let (_ctx, s) = raw_session(&lab);
    for label in [
        "zeroth:ssh-user-ca",
        "zeroth:x509-ca",
        "zeroth:audit-checkpoint",
    ] {
        let key = private_key(&s, label);
        // A sensitive key's value reads back as nothing (not as an error).
        let value = s.get_attributes(key, &[AttributeType::Value]).unwrap();
        assert!(value.is_empty(), "{label}: CKA_VALUE readable: {value:?}");
        let attrs = s
            .get_attributes(
                key,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                    AttributeType::Local,
                ],
            )
            .unwrap();
        for a in &attrs {
            match a {
                Attribute::Sensitive(v)
                | Attribute::AlwaysSensitive(v)
                | Attribute::NeverExtractable(v)
                | Attribute::Local(v) => assert!(*v, "{label}: {a:?}"),
                Attribute::Extractable(v) => assert!(!*v, "{label}: {a:?}"),
                _ => {}
            }
        }
        assert_eq!(attrs.len(), 5, "{label}: {attrs:?}");
    }
    // Wrapping the key out under a key the adversary controls is refused.
    let wrapper = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(32.into()),
                Attribute::Wrap(true),
            ],
        )
        .unwrap();
    for label in ["zeroth:ssh-user-ca", "zeroth:jwt-signing"] {
        let err = s
            .wrap_key(&Mechanism::AesKeyWrapPad, wrapper, private_key(&s, label))
            .unwrap_err();
        assert!(
            matches!(err, CkError::Pkcs11(RvError::KeyUnextractable, _)),
            "{label}: {err}"
        );
    }
    let kek = s
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(b"zeroth:store-kek".to_vec()),
        ])
        .unwrap();
    assert_eq!(kek.len(), 1);
    assert!(s
        .get_attributes(kek[0], &[AttributeType::Value])
        .unwrap()
        .is_empty());
    assert!(s
        .wrap_key(&Mechanism::AesKeyWrapPad, wrapper, kek[0])
        .is_err());

    // An independent client agrees.
    let out = lab
        .pkcs11_tool()
        .unwrap()
        .arg("--list-objects")
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    // Objects start at unindented lines; find the private half of ssh-user-ca.
    let mut objects: Vec<String> = Vec::new();
    for line in listing.lines() {
        match objects.last_mut() {
            Some(o) if line.starts_with(char::is_whitespace) => {
                o.push_str(line);
                o.push('\n');
            }
            _ => objects.push(format!("{line}\n")),
        }
    }
    let block = objects
        .iter()
        .find(|o| o.starts_with("Private Key Object") && o.contains("zeroth:ssh-user-ca"))
        .unwrap_or_else(|| panic!("pkcs11-tool does not list the key:\n{listing}"));
    for word in [
        "sensitive",
        "always sensitive",
        "never extractable",
        "local",
    ] {
        assert!(
            block.contains(word),
            "pkcs11-tool says of ssh-user-ca:\n{block}"
        );
    }
}
