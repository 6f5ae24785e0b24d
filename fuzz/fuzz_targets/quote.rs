#![no_main]
//! A whole quote check with a real AK: the input is split into TPMS_ATTEST,
//! TPMT_SIGNATURE and one reported PCR value. Nothing may panic, and nothing
//! but the genuine quote may pass.

use libfuzzer_sys::fuzz_target;
use zeroth_attest::verify::alg::HashAlg;
use zeroth_attest::verify::pcr::PcrValues;
use zeroth_attest::verify::public::Public;
use zeroth_attest::verify::quote::{verify_quote, Ak};

const EK: &[u8] = include_bytes!("../../attest/tests/fixtures/ek.pub");
const AK: &[u8] = include_bytes!("../../attest/tests/fixtures/ak.pub");
const QUOTE: &[u8] = include_bytes!("../../attest/tests/fixtures/q.msg");
const QUOTE_SIG: &[u8] = include_bytes!("../../attest/tests/fixtures/q.sig");

fuzz_target!(|data: &[u8]| {
    let (Ok(ek), Ok(ak)) = (Public::from_tpm2b(EK), Public::from_tpm2b(AK)) else {
        return;
    };
    let ak = Ak::under_ek(ak, &ek);
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(split).min(rest.len());
    let (attest, sig) = rest.split_at(at);
    let mut pcrs = PcrValues::default();
    pcrs.insert(HashAlg::Sha256, 0, vec![0; 32]);
    pcrs.insert(HashAlg::Sha256, 7, vec![0; 32]);
    if verify_quote(&ak, attest, sig, &[1; 32], &pcrs, None).is_ok() {
        assert!(
            attest == QUOTE && sig == QUOTE_SIG,
            "a forged quote verified"
        );
    }
});
