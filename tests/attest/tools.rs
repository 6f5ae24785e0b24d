//! tpm2-tools against a lab TPM, in a private working directory.

use std::path::PathBuf;
use std::process::Command;

use zeroth::lab::{LabDir, Swtpm};

pub struct Tpm2Tools<'a> {
    pub tpm: &'a Swtpm,
    pub dir: LabDir,
}

impl<'a> Tpm2Tools<'a> {
    pub fn new(tpm: &'a Swtpm) -> Self {
        Self {
            tpm,
            dir: LabDir::new("tpm2-tools").unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    /// Runs a tpm2-tools command in the working directory; panics with its
    /// stderr if it fails. With no resource manager in between, every
    /// command's transient objects stay loaded: flush them after each.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.try_run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let flushed = self.try_run(&["tpm2_flushcontext", "-t"]);
        assert!(
            flushed.status.success(),
            "{}",
            String::from_utf8_lossy(&flushed.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn try_run(&self, args: &[&str]) -> std::process::Output {
        Command::new(args[0])
            .args(&args[1..])
            .current_dir(self.dir.path())
            .env("TPM2TOOLS_TCTI", self.tpm.tcti())
            .env("TSS2_LOG", "all+none")
            .output()
            .unwrap_or_else(|e| panic!("{} (apt-get install tpm2-tools): {e}", args[0]))
    }

    /// An RSA-2048 EK (ek.ctx, ek.pub) and an ECC P-256 AK under it
    /// (ak.ctx, ak.pub, ak.name).
    pub fn create_ek_and_ak(&self) {
        self.run(&["tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"]);
        self.run(&[
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
    }

    /// tpm2_activatecredential of a credential file (tpm2-tools format) by
    /// ak.ctx under ek.ctx, with the EK's PolicySecret(endorsement) session.
    /// Returns the recovered secret, or the tool's error output.
    pub fn activate_credential(&self, credential_file: &[u8]) -> Result<Vec<u8>, String> {
        std::fs::write(self.path("cred.in"), credential_file).unwrap();
        let _ = std::fs::remove_file(self.path("secret.out"));
        self.run(&[
            "tpm2_startauthsession",
            "--policy-session",
            "-S",
            "session.ctx",
        ]);
        self.run(&["tpm2_policysecret", "-S", "session.ctx", "-c", "e"]);
        let out = self.try_run(&[
            "tpm2_activatecredential",
            "-c",
            "ak.ctx",
            "-C",
            "ek.ctx",
            "-i",
            "cred.in",
            "-o",
            "secret.out",
            "-P",
            "session:session.ctx",
        ]);
        let _ = self.try_run(&["tpm2_flushcontext", "session.ctx"]);
        self.run(&["tpm2_flushcontext", "-t"]);
        if out.status.success() {
            Ok(self.read("secret.out"))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// tpm2_quote over sha256 PCRs `pcrs` with `nonce`: (TPMS_ATTEST, TPMT_SIGNATURE).
    pub fn quote(&self, pcrs: &str, nonce: &[u8]) -> (Vec<u8>, Vec<u8>) {
        self.run(&[
            "tpm2_quote",
            "-c",
            "ak.ctx",
            "-l",
            &format!("sha256:{pcrs}"),
            "-q",
            &hex(nonce),
            "-m",
            "quote.msg",
            "-s",
            "quote.sig",
            "-g",
            "sha256",
        ]);
        (self.read("quote.msg"), self.read("quote.sig"))
    }

    /// The sha256 PCR values, as tpm2_pcrread prints them.
    pub fn pcrs(&self, pcrs: &str) -> zeroth_attest::verify::pcr::PcrValues {
        let out = self.run(&["tpm2_pcrread", &format!("sha256:{pcrs}")]);
        let mut values = zeroth_attest::verify::pcr::PcrValues::default();
        for line in out.lines() {
            let Some((idx, val)) = line.trim().split_once(':') else {
                continue;
            };
            let (Ok(idx), Some(val)) = (idx.trim().parse::<u8>(), val.trim().strip_prefix("0x"))
            else {
                continue;
            };
            values.insert(zeroth_attest::verify::alg::HashAlg::Sha256, idx, unhex(val));
        }
        values
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
