use super::ek_chain::ChainError;

/// Why the verifier refused what a machine sent. Each variant names one
/// check, with what an operator needs to act on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed {structure}: {reason}")]
    Malformed {
        structure: &'static str,
        reason: String,
    },
    #[error("unsupported {what} algorithm {}", super::alg::name(*id))]
    UnsupportedAlgorithm { what: &'static str, id: u16 },
    #[error("attestation magic is 0x{0:08x}, not TPM_GENERATED_VALUE: the TPM did not produce it")]
    BadMagic(u32),
    #[error("attestation type is 0x{found:04x}, expected {expected}")]
    WrongAttestType { expected: &'static str, found: u16 },
    #[error(
        "the attestation's qualifiedSigner is not the AK's Qualified Name: signed by another key"
    )]
    SignerMismatch,
    #[error("quote nonce mismatch: extraData is not the nonce this verifier issued")]
    NonceMismatch,
    #[error("signature scheme {found} is not the pinned {expected} (downgrade refused)")]
    SchemeMismatch { expected: String, found: String },
    #[error("the signature does not verify under the AK")]
    BadSignature,
    #[error("the AK is not a usable attestation key: {0}")]
    AkKeyInvalid(String),
    #[error("PCR values do not match the quote: {0}")]
    PcrMismatch(String),
    #[error("{field} went backwards ({previous} -> {now}): replayed or rolled-back quote")]
    ClockWentBackwards {
        field: &'static str,
        previous: u64,
        now: u64,
    },
    #[error("the AK lacks the {0} attribute")]
    AkAttributeMissing(&'static str),
    #[error("the AK has the decrypt attribute: an attestation key must only sign")]
    AkCanDecrypt,
    #[error("the AK's name algorithm {found} is not the required {required}")]
    AkNameAlg { required: String, found: String },
    #[error("the certified key lacks the {0} attribute")]
    CertifiedAttributeMissing(&'static str),
    #[error("the certified Name is not the Name of the key presented")]
    CertifiedNameMismatch,
    #[error("the EK certificate's public key is not the EK presented")]
    EkCertKeyMismatch,
    #[error("the EK (SHA-256 {0}) is not on the allow-list and has no trusted certificate")]
    EkNotAllowed(String),
    #[error("EK certificate: {0}")]
    EkChain(#[from] ChainError),
    #[error("PCR {bank}:{index} is {found}, policy requires {expected}")]
    PcrPolicy {
        bank: String,
        index: u8,
        expected: String,
        found: String,
    },
    #[error("event log replay gives PCR {bank}:{index} = {replayed}, but the quote says {quoted}: the log is not the one measured")]
    EventLogMismatch {
        bank: String,
        index: u8,
        replayed: String,
        quoted: String,
    },
    #[error("credential activation secret mismatch: the AK and EK are not in the same TPM")]
    CredentialMismatch,
    #[error("the EK cannot be used for MakeCredential: {0}")]
    EkUnusable(String),
}
