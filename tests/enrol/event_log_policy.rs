//! A group whose policy reads the boot event log: the boot loaders and
//! kernels it allows, checked against the quoted PCRs at enrolment and at
//! every renewal.

use sha2::{Digest, Sha256};
use zeroth::agent::{enrol, renew, EnrolOptions, Outcome};
use zeroth::lab::event_log::{LogBuilder, EV_SEPARATOR};
use zeroth::lab::LabDir;

use super::{bench, extend_pcr, refusal, Bench};

fn with_log(b: &Bench, dir: &LabDir, log: &LogBuilder) -> EnrolOptions {
    let path = dir.write("event.log", log.bytes(), 0o600).unwrap();
    EnrolOptions {
        event_log: Some(path),
        ..b.options()
    }
}

#[test]
fn only_allowed_boot_code_in_a_log_that_replays_to_the_quote_is_admitted() {
    let (shim, kernel, evil) = (
        Sha256::digest(b"shim").to_vec(),
        Sha256::digest(b"kernel 6.1").to_vec(),
        Sha256::digest(b"bootkit").to_vec(),
    );
    let b = bench(&format!(
        "auto_approve = true\npcrs = [0, 4]\n[group.event_log_allow]\n\"sha256:4\" = [\"{}\", \"{}\"]",
        hex::encode(&shim),
        hex::encode(&kernel)
    ));
    let logs = LabDir::new("logs").unwrap();
    let separator = Sha256::digest([0u8; 4]).to_vec();
    // The boot as firmware would measure and log it.
    for d in [&separator, &shim, &kernel] {
        extend_pcr(&b.tpm, 4, d);
    }
    let log = LogBuilder::new()
        .typed(4, EV_SEPARATOR, &separator, &[0; 4])
        .event(4, &shim, b"shim")
        .event(4, &kernel, b"vmlinuz");
    let good = with_log(&b, &logs, &log);
    assert!(matches!(enrol(&good).unwrap(), Outcome::Approved { .. }));

    // Without its log the node cannot show what it booted.
    let (status, reason) = refusal(enrol(&b.options()).unwrap_err());
    assert_eq!(status, 403);
    assert!(reason.contains("none was sent"), "{reason}");

    // Something else is loaded: logged honestly it is named and refused…
    extend_pcr(&b.tpm, 4, &evil);
    let honest = with_log(&b, &logs, &log.clone().event(4, &evil, b"bootkit"));
    let (status, reason) = refusal(renew(&honest).unwrap_err());
    assert_eq!(status, 403);
    assert!(
        reason.contains(&format!("measured {} into PCR 4", hex::encode(&evil))),
        "{reason}"
    );
    // …and hidden from the log, the log no longer replays to the quote.
    let (status, reason) = refusal(enrol(&good).unwrap_err());
    assert_eq!(status, 403);
    assert!(
        reason.contains("event log") && reason.contains("PCR"),
        "{reason}"
    );
}
