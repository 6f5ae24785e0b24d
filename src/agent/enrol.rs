//! Enrolment from the machine's side: EK and AK to the server, the
//! credential activated in the TPM, a fresh quote and a certified identity
//! key back, and an X.509-SVID in return.

use super::servers::first_answer;
use std::path::{Path, PathBuf};

use base64::Engine;
use zeroth_attest::{AkAlgorithm, Attester, EkAlgorithm, KeyBlob};

use crate::wire::enrol::{BeginRequest, BeginResponse, FinishRequest, FinishResponse};
use crate::wire::enrol::{RenewChallenge, RenewRequest, RenewResponse};
use crate::wire::node::NodeState;

/// Why enrolment did not complete.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the TPM: {0}")]
    Tpm(#[from] zeroth_attest::AttestError),
    #[error("the server refused ({status}): {reason}")]
    Refused { status: u16, reason: String },
    #[error("cannot reach the server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the server's answer is malformed: {0}")]
    BadAnswer(String),
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A token host's first token is empty.
    #[error("the first token at {0} is empty: encrypt one for this host with `zeroth token create --group GROUP | systemd-creds encrypt --name=token - /etc/zeroth/token.cred` and restart zeroth-agent")]
    NoToken(PathBuf),
}

/// Where to enrol and with what.
#[derive(Debug, Clone)]
pub struct EnrolOptions {
    /// `https://host:port` of the zeroth server.
    pub server: String,
    /// PEM of the zeroth CA the server's certificate chains to.
    pub ca_bundle: PathBuf,
    pub group: String,
    pub tcti: String,
    /// Holds ak.pub/ak.priv and key.pub/key.priv (public and TPM-wrapped
    /// only), svid.pem and bundle.pem.
    pub state_dir: PathBuf,
    /// The TCG boot event log sent with each quote (default: the kernel's,
    /// when it exposes one), for groups whose policy reads it.
    pub event_log: Option<PathBuf>,
}

/// Where Linux exposes the firmware's event log of the first TPM.
pub const KERNEL_EVENT_LOG: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";

/// How enrolment ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Approved {
        node_id: String,
        spiffe_id: String,
        svid_pem: String,
    },
    Pending {
        node_id: String,
    },
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn unb64(field: &str, s: &str) -> Result<Vec<u8>, AgentError> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| AgentError::BadAnswer(format!("{field}: {e}")))
}

pub(crate) fn write(path: &Path, what: &'static str, data: &[u8]) -> Result<(), AgentError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|source| AgentError::File {
            what,
            path: tmp.clone(),
            source,
        })?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| AgentError::File {
            what,
            path: path.to_owned(),
            source,
        })
}

/// The key `name` from the state directory, or a new one created in the TPM.
fn key_blob(
    tpm: &Attester,
    dir: &Path,
    name: &str,
    create: impl FnOnce(&mut zeroth_attest::Tpm) -> Result<KeyBlob, zeroth_attest::AttestError>
        + Send
        + 'static,
) -> Result<KeyBlob, AgentError> {
    let (pub_path, priv_path) = (
        dir.join(format!("{name}.pub")),
        dir.join(format!("{name}.priv")),
    );
    if let (Ok(public), Ok(private)) = (std::fs::read(&pub_path), std::fs::read(&priv_path)) {
        return Ok(KeyBlob { public, private });
    }
    let blob = tpm.run(create)?;
    write(&pub_path, "write", &blob.public)?;
    write(&priv_path, "write", &blob.private)?;
    Ok(blob)
}

/// uname(2), not /proc/sys: the agent's unit hides /proc beyond its own PID.
fn hostname() -> String {
    let name = rustix::system::uname();
    let name = name.nodename().to_string_lossy();
    if name.is_empty() {
        "unknown".into()
    } else {
        name.into_owned()
    }
}

fn post<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
    client: &reqwest::blocking::Client,
    url: &str,
    body: &Req,
) -> Result<(u16, Resp), AgentError> {
    let resp = client
        .post(url)
        .timeout(super::servers::attempt_wait())
        .json(body)
        .send()
        .map_err(|e| AgentError::Unreachable {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
    let status = resp.status().as_u16();
    let text = resp
        .text()
        .map_err(|e| AgentError::BadAnswer(e.to_string()))?;
    if !(200..300).contains(&status) {
        let reason = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["reason"].as_str().map(str::to_owned))
            .unwrap_or(text);
        return Err(AgentError::Refused { status, reason });
    }
    serde_json::from_str(&text)
        .map(|r| (status, r))
        .map_err(|e| AgentError::BadAnswer(e.to_string()))
}

/// An HTTPS client that trusts only the zeroth CA.
pub fn client(ca_bundle: &Path) -> Result<reqwest::blocking::Client, AgentError> {
    let pem = std::fs::read(ca_bundle).map_err(|source| AgentError::File {
        what: "read the CA bundle",
        path: ca_bundle.to_owned(),
        source,
    })?;
    let ca = reqwest::Certificate::from_pem(&pem)
        .map_err(|e| AgentError::BadAnswer(format!("CA bundle: {e}")))?;
    reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .min_tls_version(reqwest::tls::Version::TLS_1_3)
        .timeout(super::servers::LAST_WAIT)
        .build()
        .map_err(|e| AgentError::BadAnswer(e.to_string()))
}

/// The TPM side of one enrolment, step by step (the tests drive the steps
/// one at a time to tamper with them).
pub struct Enrolment {
    tpm: std::sync::Arc<Attester>,
    ak: KeyBlob,
    key: KeyBlob,
    event_log: Option<Vec<u8>>,
}

impl Enrolment {
    /// Opens the TPM and loads (or creates) the AK and the identity key.
    pub fn open(tcti: &str, state_dir: &Path) -> Result<Self, AgentError> {
        std::fs::create_dir_all(state_dir).map_err(|source| AgentError::File {
            what: "create",
            path: state_dir.to_owned(),
            source,
        })?;
        let tpm = Attester::open(tcti)?;
        let ak = key_blob(&tpm, state_dir, "ak", |t| t.create_ak(AkAlgorithm::EccP256))?;
        let key = key_blob(&tpm, state_dir, "key", |t| t.create_signing_key())?;
        Ok(Self {
            tpm: std::sync::Arc::new(tpm),
            ak,
            key,
            event_log: std::fs::read(KERNEL_EVENT_LOG).ok(),
        })
    }

    /// Sends the event log at `path` (instead of the kernel's) with quotes.
    pub fn with_event_log(mut self, path: Option<&Path>) -> Result<Self, AgentError> {
        if let Some(path) = path {
            self.event_log = Some(std::fs::read(path).map_err(|source| AgentError::File {
                what: "read the event log",
                path: path.to_owned(),
                source,
            })?);
        }
        Ok(self)
    }

    /// What `POST /v1/enroll/begin` needs: EK, EK certificate, AK.
    pub fn begin_request(&self, group: &str) -> Result<BeginRequest, AgentError> {
        let ek_public = self.tpm.run(|t| t.ek_public(EkAlgorithm::Rsa2048))?;
        let ek_certificate = self
            .tpm
            .run(|t| t.ek_certificate(EkAlgorithm::Rsa2048))
            .ok();
        Ok(BeginRequest {
            group: group.to_owned(),
            hostname: hostname(),
            ek_public: b64(&ek_public),
            ek_certificate: ek_certificate.as_deref().map(b64),
            ak_public: b64(&self.ak.public),
        })
    }

    /// Answers the server's challenge: activate the credential, quote the
    /// PCRs and certify the identity key, both over the server's nonce.
    pub fn finish_request(&self, begin: &BeginResponse) -> Result<FinishRequest, AgentError> {
        let blob = unb64("credential_blob", &begin.credential_blob)?;
        let secret = unb64("encrypted_secret", &begin.encrypted_secret)?;
        let nonce = unb64("nonce", &begin.nonce)?;
        let a = self.ak.clone();
        let recovered = self
            .tpm
            .run(move |t| t.activate_credential(&a, &blob, &secret))?;
        let (a, n, pcrs) = (self.ak.clone(), nonce.clone(), begin.pcrs.clone());
        let quote = self.tpm.run(move |t| t.quote(&a, &pcrs, &n))?;
        let (k, a, n) = (self.key.clone(), self.ak.clone(), nonce);
        let (certify_attest, certify_signature) = self.tpm.run(move |t| t.certify(&k, &a, &n))?;
        let pcrs = pcr_map(&quote);
        Ok(FinishRequest {
            challenge_id: begin.challenge_id.clone(),
            secret: b64(&recovered),
            quote_attest: b64(&quote.attest),
            quote_signature: b64(&quote.signature),
            pcrs,
            identity_key: b64(&self.key.public),
            certify_attest: b64(&certify_attest),
            certify_signature: b64(&certify_signature),
            event_log: self.event_log.as_deref().map(b64),
        })
    }

    /// Answers a renewal challenge with a fresh quote over its nonce.
    pub fn renew_request(&self, ch: &RenewChallenge) -> Result<RenewRequest, AgentError> {
        let nonce = unb64("nonce", &ch.nonce)?;
        let (a, pcrs) = (self.ak.clone(), ch.pcrs.clone());
        let quote = self.tpm.run(move |t| t.quote(&a, &pcrs, &nonce))?;
        Ok(RenewRequest {
            challenge_id: ch.challenge_id.clone(),
            quote_attest: b64(&quote.attest),
            quote_signature: b64(&quote.signature),
            pcrs: pcr_map(&quote),
            event_log: self.event_log.as_deref().map(b64),
        })
    }

    /// An mTLS client presenting `svid_pem`, signing with the identity key
    /// in the TPM.
    pub fn mtls_client(
        &self,
        ca_bundle: &Path,
        svid_pem: &str,
    ) -> Result<reqwest::blocking::Client, AgentError> {
        super::mtls::client(ca_bundle, svid_pem, self.tpm.clone(), self.key.clone())
    }

    /// The identity key's public area (TPM2B_PUBLIC).
    pub fn identity_key(&self) -> &[u8] {
        &self.key.public
    }
}

fn pcr_map(quote: &zeroth_attest::Quote) -> std::collections::BTreeMap<String, String> {
    quote
        .pcrs
        .0
        .iter()
        .map(|((_, idx), v)| (format!("sha256:{idx}"), hex::encode(v)))
        .collect()
}

/// POSTs a JSON body; a non-2xx answer becomes [`AgentError::Refused`]
/// with the server's reason.
pub fn post_json<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
    client: &reqwest::blocking::Client,
    url: &str,
    body: &Req,
) -> Result<Resp, AgentError> {
    post(client, url, body).map(|(_, r)| r)
}

/// Enrols this machine. Idempotent: a machine already enrolled re-attests
/// with the same AK and gets a fresh SVID.
pub fn enrol(opts: &EnrolOptions) -> Result<Outcome, AgentError> {
    let client = client(&opts.ca_bundle)?;
    let e =
        Enrolment::open(&opts.tcti, &opts.state_dir)?.with_event_log(opts.event_log.as_deref())?;
    let begin_request = e.begin_request(&opts.group)?;
    let begin: BeginResponse = first_answer(&opts.server, |base| {
        post_json(&client, &format!("{base}/v1/enroll/begin"), &begin_request)
    })?;
    let finish = e.finish_request(&begin)?;
    drop(e); // release the TPM before waiting on the network
             // Any server of a cluster finishes a challenge another began.
    let done: FinishResponse = first_answer(&opts.server, |base| {
        post_json(&client, &format!("{base}/v1/enroll/finish"), &finish)
    })?;
    write(
        &opts.state_dir.join("bundle.pem"),
        "write",
        done.bundle.as_bytes(),
    )?;
    match (done.state, done.svid) {
        (NodeState::Approved, Some(svid)) => {
            write(&opts.state_dir.join("svid.pem"), "write", svid.as_bytes())?;
            Ok(Outcome::Approved {
                node_id: done.node_id,
                spiffe_id: done.spiffe_id,
                svid_pem: svid,
            })
        }
        _ => Ok(Outcome::Pending {
            node_id: done.node_id,
        }),
    }
}

/// Renews this machine's SVID over mTLS with a fresh quote. Needs a valid
/// `svid.pem` in the state directory (see [`enrol`] otherwise).
pub fn renew(opts: &EnrolOptions) -> Result<Outcome, AgentError> {
    let svid_path = opts.state_dir.join("svid.pem");
    let current = std::fs::read_to_string(&svid_path).map_err(|source| AgentError::File {
        what: "read",
        path: svid_path.clone(),
        source,
    })?;
    let e =
        Enrolment::open(&opts.tcti, &opts.state_dir)?.with_event_log(opts.event_log.as_deref())?;
    let client = e.mtls_client(&opts.ca_bundle, &current)?;
    let challenge: RenewChallenge = first_answer(&opts.server, |base| {
        post_json(
            &client,
            &format!("{base}/v1/identity/challenge"),
            &serde_json::json!({}),
        )
    })?;
    let request = e.renew_request(&challenge)?;
    let done: RenewResponse = first_answer(&opts.server, |base| {
        post_json(&client, &format!("{base}/v1/identity/renew"), &request)
    })?;
    write(
        &opts.state_dir.join("bundle.pem"),
        "write",
        done.bundle.as_bytes(),
    )?;
    write(&svid_path, "write", done.svid.as_bytes())?;
    let node_id = done
        .spiffe_id
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    Ok(Outcome::Approved {
        node_id,
        spiffe_id: done.spiffe_id,
        svid_pem: done.svid,
    })
}
