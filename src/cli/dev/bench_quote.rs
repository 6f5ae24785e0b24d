//! `zeroth bench quote`: the verifier's speed against the reference checker.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use zeroth_attest::verify::public::Public;
use zeroth_attest::verify::quote::{verify_quote, Ak};
use zeroth_attest::{AkAlgorithm, Attester, EkAlgorithm, Quote};

use crate::lab::{LabDir, Swtpm};

const QUOTES: usize = 64;

pub fn run(duration: Duration, reference_quotes: usize) -> Result<()> {
    let lab = Swtpm::start().context("start a lab TPM")?;
    let tpm = Attester::open(&lab.tcti())?;
    let ek = Public::from_tpm2b(&tpm.run(|t| t.ek_public(EkAlgorithm::Rsa2048))?)?;
    let blob = tpm.run(|t| t.create_ak(AkAlgorithm::EccP256))?;
    let ak = Ak::under_ek(Public::from_tpm2b(&blob.public)?, &ek);
    let mut quotes: Vec<([u8; 32], Quote)> = Vec::new();
    for i in 0..QUOTES.max(reference_quotes) {
        let mut nonce = [0u8; 32];
        nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let b = blob.clone();
        let q = tpm.run(move |t| t.quote(&b, &[0, 1, 2, 3, 4, 5, 6, 7], &nonce))?;
        quotes.push((nonce, q));
    }
    println!(
        "ECDSA P-256 quotes over sha256 PCRs 0-7 from swtpm; {}s per pure-Rust run",
        duration.as_secs()
    );

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut per_core = 0.0;
    for threads in [1, cores] {
        let done = AtomicU64::new(0);
        let start = Instant::now();
        let deadline = start + duration;
        std::thread::scope(|s| {
            for t in 0..threads {
                let (quotes, ak, done) = (&quotes, &ak, &done);
                s.spawn(move || {
                    let mut i = t;
                    let mut n = 0;
                    while Instant::now() < deadline {
                        let (nonce, q) = &quotes[i % quotes.len()];
                        if verify_quote(ak, &q.attest, &q.signature, nonce, &q.pcrs, None).is_ok() {
                            n += 1;
                        }
                        i += threads;
                    }
                    done.fetch_add(n, Ordering::Relaxed);
                });
            }
        });
        let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
        if threads == 1 {
            per_core = rate;
        }
        println!("  zeroth verifier, {threads} thread(s): {rate:>10.0} verifications/s");
    }

    let dir = LabDir::new("bench-quote")?;
    std::fs::write(dir.join("ak.pub"), &blob.public)?;
    for (i, (_, q)) in quotes.iter().take(reference_quotes).enumerate() {
        std::fs::write(dir.join(format!("{i}.msg")), &q.attest)?;
        std::fs::write(dir.join(format!("{i}.sig")), &q.signature)?;
    }
    let start = Instant::now();
    for (i, (nonce, _)) in quotes.iter().take(reference_quotes).enumerate() {
        let nonce_hex = hex::encode(nonce);
        let st = Command::new("tpm2_checkquote")
            .current_dir(dir.path())
            .args([
                "-u",
                "ak.pub",
                "-m",
                &format!("{i}.msg"),
                "-s",
                &format!("{i}.sig"),
            ])
            .args(["-q", &nonce_hex, "-g", "sha256"])
            .stdout(std::process::Stdio::null())
            .status()
            .context("run tpm2_checkquote (apt-get install tpm2-tools)")?;
        anyhow::ensure!(st.success(), "tpm2_checkquote refused quote {i}");
    }
    let reference = reference_quotes as f64 / start.elapsed().as_secs_f64();
    println!("  tpm2_checkquote per quote:   {reference:>10.0} verifications/s");
    println!(
        "  ratio (1 thread / reference): {:.0}x; target >= 10,000/s per core: {}",
        per_core / reference,
        if per_core >= 10_000.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}
