//! EK certificate paths built with the reference tool (openssl): each
//! refusal of the path check is reached by a validly signed chain.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime};

use zeroth::lab::{tools, LabDir};
use zeroth_attest::verify::ek_chain::{verify_ek_chain, ChainError, TrustAnchors};

/// A private openssl CA workshop in a lab directory.
struct Pki {
    dir: LabDir,
}

const CA: &str = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n";
const LEAF: &str = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,keyEncipherment\n";

impl Pki {
    fn new() -> Self {
        Self {
            dir: LabDir::new("pki").unwrap(),
        }
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new(tools::OPENSSL.path().unwrap())
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn key(&self, name: &str) {
        self.openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &format!("{name}.key"),
        ]);
    }

    fn der(&self, name: &str) -> Vec<u8> {
        self.openssl(&[
            "x509",
            "-in",
            &format!("{name}.pem"),
            "-outform",
            "DER",
            "-out",
            &format!("{name}.der"),
        ]);
        std::fs::read(self.dir.join(format!("{name}.der"))).unwrap()
    }

    /// A self-signed root with `ext` (v3 extension lines).
    fn root(&self, name: &str, ext: &str) -> Vec<u8> {
        self.key(name);
        std::fs::write(self.dir.join(format!("{name}.ext")), ext).unwrap();
        self.openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            &format!("/CN={name}"),
            "-days",
            "30",
            "-sha256",
            "-extensions",
            "v3",
            "-config",
            &self.config(name),
            "-out",
            &format!("{name}.pem"),
        ]);
        self.der(name)
    }

    /// `name` signed by `issuer` with `ext`, over `digest`.
    fn issue(&self, name: &str, issuer: &str, ext: &str, digest: &str) -> Vec<u8> {
        self.key(name);
        std::fs::write(self.dir.join(format!("{name}.ext")), ext).unwrap();
        self.openssl(&[
            "req",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            &format!("/CN={name}"),
            "-out",
            &format!("{name}.csr"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{issuer}.pem"),
            "-CAkey",
            &format!("{issuer}.key"),
            "-set_serial",
            "7",
            "-days",
            "30",
            &format!("-{digest}"),
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ]);
        self.der(name)
    }

    /// An openssl config whose [v3] section holds `name`'s extensions.
    fn config(&self, name: &str) -> String {
        let ext = std::fs::read_to_string(self.dir.join(format!("{name}.ext"))).unwrap();
        let path: PathBuf = self.dir.join(format!("{name}.cnf"));
        std::fs::write(
            &path,
            format!("[req]\ndistinguished_name = dn\n[dn]\n[v3]\n{ext}"),
        )
        .unwrap();
        path.display().to_string()
    }
}

fn anchors(roots: Vec<Vec<u8>>, intermediates: Vec<Vec<u8>>) -> TrustAnchors {
    TrustAnchors {
        roots,
        intermediates,
    }
}

#[test]
fn a_sound_chain_verifies_and_each_flaw_is_named() {
    let pki = Pki::new();
    let root = pki.root("root", CA);
    let mid = pki.issue("mid", "root", CA, "sha256");
    let ek = pki.issue("ek", "mid", LEAF, "sha256");
    let chain = verify_ek_chain(
        &ek,
        &anchors(vec![root.clone()], vec![mid]),
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(chain.path, ["CN=ek", "CN=mid", "CN=root"]);

    // Signed over SHA-1: refused even though the signature is valid.
    let weak = pki.issue("weak", "mid", LEAF, "sha1");
    let mid = std::fs::read(pki.dir.join("mid.der")).unwrap();
    let err = verify_ek_chain(
        &weak,
        &anchors(vec![root.clone()], vec![mid.clone()]),
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(matches!(err, ChainError::WeakSignature { .. }), "{err}");

    // An intermediate that is not a CA, or may not sign certificates.
    let not_ca = pki.issue(
        "notca",
        "root",
        "basicConstraints=critical,CA:FALSE\n",
        "sha256",
    );
    let ek2 = pki.issue("ek2", "notca", LEAF, "sha256");
    let err = verify_ek_chain(
        &ek2,
        &anchors(vec![root.clone()], vec![not_ca]),
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, ChainError::NotACa { reason, .. } if reason.contains("basicConstraints")),
        "{err}"
    );
    let no_sign = pki.issue(
        "nosign",
        "root",
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,digitalSignature\n",
        "sha256",
    );
    let ek3 = pki.issue("ek3", "nosign", LEAF, "sha256");
    let err = verify_ek_chain(
        &ek3,
        &anchors(vec![root.clone()], vec![no_sign]),
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, ChainError::NotACa { reason, .. } if reason.contains("keyCertSign")),
        "{err}"
    );

    // A path length the CAs above do not allow.
    let tight = pki.issue(
        "tight",
        "root",
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign\n",
        "sha256",
    );
    let below = pki.issue("below", "tight", CA, "sha256");
    let ek4 = pki.issue("ek4", "below", LEAF, "sha256");
    let err = verify_ek_chain(
        &ek4,
        &anchors(vec![root.clone()], vec![tight, below]),
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ChainError::PathTooLong {
                allowed: 0,
                below: 1,
                ..
            }
        ),
        "{err}"
    );

    // Expired: the same sound chain, checked 60 days later.
    let later = SystemTime::now() + Duration::from_secs(60 * 86_400);
    let err = verify_ek_chain(&ek, &anchors(vec![root.clone()], vec![mid]), later).unwrap_err();
    assert!(matches!(err, ChainError::Expired { .. }), "{err}");
}

#[test]
fn a_chain_deeper_than_six_certificates_is_refused() {
    // EK, then `n` intermediates, up to the root.
    let chain = |n: usize| {
        let pki = Pki::new();
        let root = pki.root("root", CA);
        let mut intermediates = Vec::new();
        let mut issuer = "root".to_owned();
        for i in 0..n {
            let name = format!("mid{i}");
            intermediates.push(pki.issue(&name, &issuer, CA, "sha256"));
            issuer = name;
        }
        let ek = pki.issue("ek", &issuer, LEAF, "sha256");
        verify_ek_chain(&ek, &anchors(vec![root], intermediates), SystemTime::now())
    };
    // Six certificates below the root (the EK and five intermediates) are
    // the most taken; one more is refused.
    let at_limit = chain(5).unwrap();
    assert_eq!(at_limit.path.len(), 7, "{:?}", at_limit.path);
    assert_eq!(chain(6).unwrap_err(), ChainError::TooDeep);
}
