//! The attester side: a real TPM through tss-esapi, driven from one thread.

mod tpm;
mod worker;

pub use tpm::{AkAlgorithm, AttestError, EkAlgorithm, KeyBlob, Quote, Tpm, TpmInfo};
pub use worker::Attester;

/// The TCG event log of the boot, where the kernel exposes it; `None` on
/// machines (and VMs) without one.
pub fn read_event_log() -> Option<Vec<u8>> {
    std::fs::read("/sys/kernel/security/tpm0/binary_bios_measurements").ok()
}
