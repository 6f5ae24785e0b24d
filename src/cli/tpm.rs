//! `zeroth tpm`: what the machine's TPM is and whether its EK is trusted.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Result;
use clap::{Args, Subcommand};
use zeroth_attest::{verify_ek_chain, Attester, EkAlgorithm, TrustAnchors};

#[derive(Debug, Args)]
pub struct TpmArgs {
    #[command(subcommand)]
    command: TpmCommand,
}

#[derive(Debug, Subcommand)]
enum TpmCommand {
    /// Manufacturer, firmware, PCR banks, and the EK certificates with
    /// whether they chain to the trusted manufacturer roots.
    Info {
        /// TCTI of the TPM: device:/dev/tpmrm0, swtpm:host=H,port=P, tabrmd.
        #[arg(long, default_value = "device:/dev/tpmrm0")]
        tcti: String,
        /// Directory of trusted TPM manufacturer root certificates (PEM files).
        #[arg(long, value_name = "DIR")]
        ek_roots: Option<PathBuf>,
        /// Extra intermediate certificates (PEM), besides those in the TPM's NV.
        #[arg(long, value_name = "FILE")]
        ek_intermediates: Option<PathBuf>,
    },
}

pub fn run(args: &TpmArgs) -> Result<()> {
    match &args.command {
        TpmCommand::Info {
            tcti,
            ek_roots,
            ek_intermediates,
        } => {
            let anchors = crate::policy::enrolment::trust_anchors(
                ek_roots.as_deref(),
                ek_intermediates.as_deref(),
            )
            .map_err(anyhow::Error::msg)?;
            let tpm = Attester::open(tcti)?;
            print_info(&tpm, anchors, ek_roots.is_some())
        }
    }
}

/// Prints what `zeroth tpm info` shows, one fact per line.
pub fn print_info(tpm: &Attester, mut anchors: TrustAnchors, have_roots: bool) -> Result<()> {
    let info = tpm.run(|t| t.info())?;
    println!("TPM 2.0    {}", tpm.tcti());
    println!(
        "           manufacturer {} ({}), firmware {}",
        info.manufacturer, info.vendor, info.firmware
    );
    println!("           PCR banks: {}", info.pcr_banks.join(", "));
    let nv = tpm.run(|t| t.nv_intermediates())?;
    if !nv.is_empty() {
        println!("           {} intermediate certificate(s) in NV", nv.len());
        anchors.intermediates.extend(nv);
    }
    for alg in [
        EkAlgorithm::Rsa2048,
        EkAlgorithm::EccP256,
        EkAlgorithm::EccP384,
    ] {
        let Ok(der) = tpm.run(move |t| t.ek_certificate(alg)) else {
            continue;
        };
        let verdict = match verify_ek_chain(&der, &anchors, SystemTime::now()) {
            Ok(chain) => format!("chains to a trusted root ({})", chain.path.join(" -> ")),
            Err(e) if have_roots => format!("NOT trusted: {e}"),
            Err(_) => "trust not checked (no --ek-roots)".to_owned(),
        };
        let (subject, issuer) = names(&der);
        println!("           EK {alg} certificate: subject \"{subject}\", issuer \"{issuer}\", {verdict}");
    }
    print_policy(tpm)
}

/// What a group's policy in server.toml needs of this machine, in the
/// syntax to paste: the hash of the EK it enrols with (RSA-2048), for
/// `ek_allow`, and the PCRs a default group quotes, as they are now, for
/// `pcr_policy`.
fn print_policy(tpm: &Attester) -> Result<()> {
    use std::fmt::Write;
    let ek = tpm.run(|t| t.ek_public(EkAlgorithm::Rsa2048))?;
    let ek = zeroth_attest::verify::public::Public::from_tpm2b(&ek)
        .map_err(|e| anyhow::anyhow!("the EK's public area: {e}"))?;
    println!("policy     for a [[group]] in server.toml:");
    println!(
        "           ek_allow = [\"{}\"]   # this TPM's EK (RSA-2048), admitted without a certificate",
        zeroth_attest::verify::ek::ek_hash(&ek)
    );
    let pcrs: Vec<u8> = (0..8).collect();
    let values = tpm.run(move |t| t.pcr_values(&pcrs))?;
    let mut policy = String::new();
    for i in 0..8u8 {
        if let Some(v) = values.get(zeroth_attest::verify::alg::HashAlg::Sha256, i) {
            let sep = if policy.is_empty() { "" } else { ", " };
            let _ = write!(policy, "{sep}\"sha256:{i}\" = \"{}\"", hex::encode(v));
        }
    }
    println!(
        "           pcr_policy = {{ {policy} }}   # PCRs 0-7 (the default `pcrs`) as they are now"
    );
    Ok(())
}

fn names(der: &[u8]) -> (String, String) {
    use x509_parser::prelude::FromDer;
    match x509_parser::certificate::X509Certificate::from_der(der) {
        Ok((_, c)) => (c.subject().to_string(), c.issuer().to_string()),
        Err(e) => (format!("unparsable ({e})"), String::new()),
    }
}
