#![no_main]
//! TPM2B_PUBLIC from an untrusted machine: parse, name, and MakeCredential.

use libfuzzer_sys::fuzz_target;
use zeroth_attest::verify::credential::make_credential;
use zeroth_attest::verify::public::Public;
use zeroth_attest::verify::quote::check_ak;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Public::from_tpm2b(data) {
        let name = p.name();
        let _ = check_ak(&p);
        let _ = make_credential(&p, &name, &[7; 16]);
        let _ = p.to_tpm2b();
    }
});
