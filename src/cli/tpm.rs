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
            )
            .map_err(anyhow::Error::msg)?;
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

/// Prints what `zeroth tpm info` shows, one fact per line.
pub fn print_info(tpm: &Attester, anchors: TrustAnchors, have_roots: bool) -> Result<()> {
    let facts = facts(tpm, anchors, have_roots)?;
    println!("TPM 2.0    {}", facts["tcti"].as_str().unwrap_or(""));
    println!(
        "           manufacturer {} ({}), firmware {}",
        facts["manufacturer"].as_str().unwrap_or(""),
        facts["vendor"].as_str().unwrap_or(""),
        facts["firmware"].as_str().unwrap_or("")
    );
    let banks: Vec<&str> = facts["pcr_banks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b.as_str())
        .collect();
    println!("           PCR banks: {}", banks.join(", "));
    if let Some(n) = facts["nv_intermediates"].as_u64().filter(|n| *n > 0) {
        println!("           {n} intermediate certificate(s) in NV");
    }
    for c in facts["ek_certificates"].as_array().into_iter().flatten() {
        println!(
            "           EK {} certificate: subject \"{}\", issuer \"{}\", {}",
            c["algorithm"].as_str().unwrap_or(""),
            c["subject"].as_str().unwrap_or(""),
            c["issuer"].as_str().unwrap_or(""),
            c["verdict"].as_str().unwrap_or("")
        );
    }
    let policy = &facts["policy"];
    println!("policy     for a [[group]] in server.toml:");
    println!(
        "           ek_allow = [\"{}\"]   # this TPM's EK (RSA-2048), admitted without a certificate",
        policy["ek_allow"][0].as_str().unwrap_or("")
    );
    let pcrs: Vec<String> = policy["pcr_policy"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("\"{k}\" = \"{}\"", v.as_str().unwrap_or("")))
        .collect();
    println!(
        "           pcr_policy = {{ {} }}   # PCRs 0-7 (the default `pcrs`) as they are now",
        pcrs.join(", ")
    );
    Ok(())
}

/// What `zeroth tpm info` finds, as JSON: the TPM, its EK certificates and
/// whether they chain to `anchors`, and what a group's policy in
/// server.toml needs of this machine (the EK hash for `ek_allow`, PCRs 0-7
/// as they are now for `pcr_policy`).
pub fn facts(
    tpm: &Attester,
    mut anchors: TrustAnchors,
    have_roots: bool,
) -> Result<serde_json::Value> {
    let info = tpm.run(|t| t.info())?;
    let nv = tpm.run(|t| t.nv_intermediates())?;
    let nv_count = nv.len();
    anchors.intermediates.extend(nv);
    let mut certificates = Vec::new();
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
        certificates.push(serde_json::json!({
            "algorithm": alg.to_string(),
            "subject": subject,
            "issuer": issuer,
            "trusted": trusted,
            "verdict": verdict,
        }));
    }
    let ek = tpm.run(|t| t.ek_public(EkAlgorithm::Rsa2048))?;
    let ek = zeroth_attest::verify::public::Public::from_tpm2b(&ek)
        .map_err(|e| anyhow::anyhow!("the EK's public area: {e}"))?;
    let pcrs: Vec<u8> = (0..8).collect();
    let values = tpm.run(move |t| t.pcr_values(&pcrs))?;
    let mut pcr_policy = serde_json::Map::new();
    for i in 0..8u8 {
        if let Some(v) = values.get(zeroth_attest::verify::alg::HashAlg::Sha256, i) {
            pcr_policy.insert(format!("sha256:{i}"), hex::encode(v).into());
        }
    }
    Ok(serde_json::json!({
        "tcti": tpm.tcti(),
        "manufacturer": info.manufacturer,
        "vendor": info.vendor,
        "firmware": info.firmware,
        "pcr_banks": info.pcr_banks,
        "nv_intermediates": nv_count,
        "ek_certificates": certificates,
        "policy": {
            "ek_allow": [zeroth_attest::verify::ek::ek_hash(&ek)],
            "pcr_policy": pcr_policy,
        },
    }))
}

fn names(der: &[u8]) -> (String, String) {
    use x509_parser::prelude::FromDer;
    match x509_parser::certificate::X509Certificate::from_der(der) {
        Ok((_, c)) => (c.subject().to_string(), c.issuer().to_string()),
        Err(e) => (format!("unparsable ({e})"), String::new()),
    }
}
