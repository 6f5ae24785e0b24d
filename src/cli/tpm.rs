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
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: &TpmArgs) -> Result<()> {
    match &args.command {
        TpmCommand::Info {
            tcti,
            ek_roots,
            ek_intermediates,
            json,
        } => {
            let anchors = crate::policy::enrolment::trust_anchors(
                ek_roots.as_deref(),
                ek_intermediates.as_deref(),
            )?;
            let tpm = Attester::open(tcti)?;
            if *json {
                let facts = facts(&tpm, anchors, ek_roots.is_some())?;
                println!("{}", serde_json::to_string_pretty(&facts)?);
                return Ok(());
            }
            print_info(&tpm, anchors, ek_roots.is_some())
        }
    }
}

/// What `zeroth tpm info` finds: the TPM, its EK certificates and whether
/// they chain to the trusted roots, and what a group's policy in
/// server.toml needs of this machine. `--json` prints it as it is.
#[derive(serde::Serialize)]
pub struct Facts {
    tcti: String,
    manufacturer: String,
    vendor: String,
    firmware: String,
    pcr_banks: Vec<String>,
    nv_intermediates: usize,
    ek_certificates: Vec<EkCertificate>,
    policy: Policy,
}

#[derive(serde::Serialize)]
struct EkCertificate {
    algorithm: String,
    subject: String,
    issuer: String,
    /// None: not checked (no roots given).
    trusted: Option<bool>,
    verdict: String,
}

/// The lines to paste into a `[[group]]`: the EK's hash for `ek_allow`,
/// PCRs 0-7 as they are now for `pcr_policy`.
#[derive(serde::Serialize)]
struct Policy {
    ek_allow: [String; 1],
    pcr_policy: std::collections::BTreeMap<String, String>,
}

/// Prints what `zeroth tpm info` shows, one fact per line.
pub fn print_info(tpm: &Attester, anchors: TrustAnchors, have_roots: bool) -> Result<()> {
    let f = facts(tpm, anchors, have_roots)?;
    println!("TPM 2.0    {}", f.tcti);
    println!(
        "           manufacturer {} ({}), firmware {}",
        f.manufacturer, f.vendor, f.firmware
    );
    println!("           PCR banks: {}", f.pcr_banks.join(", "));
    if f.nv_intermediates > 0 {
        println!(
            "           {} intermediate certificate(s) in NV",
            f.nv_intermediates
        );
    }
    for c in &f.ek_certificates {
        println!(
            "           EK {} certificate: subject \"{}\", issuer \"{}\", {}",
            c.algorithm, c.subject, c.issuer, c.verdict
        );
    }
    println!("policy     for a [[group]] in server.toml:");
    println!(
        "           ek_allow = [\"{}\"]   # this TPM's EK (RSA-2048), admitted without a certificate",
        f.policy.ek_allow[0]
    );
    let pcrs: Vec<String> = f
        .policy
        .pcr_policy
        .iter()
        .map(|(k, v)| format!("\"{k}\" = \"{v}\""))
        .collect();
    println!(
        "           pcr_policy = {{ {} }}   # PCRs 0-7 (the default `pcrs`) as they are now",
        pcrs.join(", ")
    );
    Ok(())
}

/// Reads the TPM's facts; EK certificates are checked against `anchors`
/// (and the intermediates in the TPM's NV).
pub fn facts(tpm: &Attester, mut anchors: TrustAnchors, have_roots: bool) -> Result<Facts> {
    let info = tpm.run(|t| t.info())?;
    let nv = tpm.run(|t| t.nv_intermediates())?;
    let nv_intermediates = nv.len();
    anchors.intermediates.extend(nv);
    let mut ek_certificates = Vec::new();
    for alg in [
        EkAlgorithm::Rsa2048,
        EkAlgorithm::EccP256,
        EkAlgorithm::EccP384,
    ] {
        let Ok(der) = tpm.run(move |t| t.ek_certificate(alg)) else {
            continue;
        };
        let (trusted, verdict) = match verify_ek_chain(&der, &anchors, SystemTime::now()) {
            Ok(chain) => (
                Some(true),
                format!("chains to a trusted root ({})", chain.path.join(" -> ")),
            ),
            Err(e) if have_roots => (Some(false), format!("NOT trusted: {e}")),
            Err(_) => (None, "trust not checked (no --ek-roots)".to_owned()),
        };
        let (subject, issuer) = names(&der);
        ek_certificates.push(EkCertificate {
            algorithm: alg.to_string(),
            subject,
            issuer,
            trusted,
            verdict,
        });
    }
    let ek = tpm.run(|t| t.ek_public(EkAlgorithm::Rsa2048))?;
    let ek = zeroth_attest::verify::public::Public::from_tpm2b(&ek)
        .map_err(|e| anyhow::anyhow!("the EK's public area: {e}"))?;
    let pcrs: Vec<u8> = (0..8).collect();
    let values = tpm.run(move |t| t.pcr_values(&pcrs))?;
    let pcr_policy = (0..8u8)
        .filter_map(|i| {
            values
                .get(zeroth_attest::verify::alg::HashAlg::Sha256, i)
                .map(|v| (format!("sha256:{i}"), hex::encode(v)))
        })
        .collect();
    Ok(Facts {
        tcti: tpm.tcti().to_string(),
        manufacturer: info.manufacturer.to_string(),
        vendor: info.vendor.to_string(),
        firmware: info.firmware.to_string(),
        pcr_banks: info.pcr_banks.iter().map(|b| b.to_string()).collect(),
        nv_intermediates,
        ek_certificates,
        policy: Policy {
            ek_allow: [zeroth_attest::verify::ek::ek_hash(&ek)],
            pcr_policy,
        },
    })
}

fn names(der: &[u8]) -> (String, String) {
    use x509_parser::prelude::FromDer;
    match x509_parser::certificate::X509Certificate::from_der(der) {
        Ok((_, c)) => (c.subject().to_string(), c.issuer().to_string()),
        Err(e) => (format!("unparsable ({e})"), String::new()),
    }
}
