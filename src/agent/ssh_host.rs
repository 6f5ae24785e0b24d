//! What the agent keeps current for the machine's sshd: a host certificate
//! for each host key (renewed at half its lifetime), the user CA keys sshd
//! trusts and the KRL it reads. sshd reads these files on each connection,
//! so a refreshed file takes effect without a restart.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::enrol::{client, post_json, AgentError, EnrolOptions, Enrolment};
use crate::config::AgentSshConfig;
use crate::wire::ssh::{SshSignRequest, SshSignResponse};

/// What one pass changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Synced {
    /// Host certificates (re)issued, by certificate path.
    pub certified: Vec<PathBuf>,
    /// Whether the trusted user CA file changed.
    pub user_ca_changed: bool,
    /// Whether the KRL changed.
    pub krl_changed: bool,
}

pub use crate::config::certificate_path;

/// One pass: fetch the CA keys and the KRL, certify host keys whose
/// certificate is missing, for another key, or past half its lifetime.
pub fn sync(cfg: &AgentSshConfig, opts: &EnrolOptions) -> Result<Synced, AgentError> {
    let plain = client(&opts.ca_bundle)?;
    let get = |path: &str| {
        super::servers::first_answer(&opts.server, |base| get(&plain, &format!("{base}{path}")))
    };
    let mut out = Synced::default();
    if let Some(path) = &cfg.trusted_user_ca_keys {
        let keys = get("/v1/ssh/ca/user")?;
        out.user_ca_changed = replace_if_changed(path, &keys)?;
    }
    if let Some(path) = &cfg.revoked_keys {
        let krl = get("/v1/ssh/krl")?;
        out.krl_changed = replace_if_changed(path, &krl)?;
    }
    let due: Vec<(&PathBuf, String)> = cfg
        .host_keys
        .iter()
        .map(|k| Ok((k, read_text(k)?)))
        .collect::<Result<Vec<_>, AgentError>>()?
        .into_iter()
        .filter(|(k, public)| needs_certificate(&cfg.certificate_path(k), public))
        .collect();
    let (Some(role), false) = (&cfg.host_role, due.is_empty()) else {
        return Ok(out);
    };
    let svid = read_text(&opts.state_dir.join("svid.pem"))?;
    let e = Enrolment::open(&opts.tcti, &opts.state_dir)?;
    let http = e.mtls_client(&opts.ca_bundle, &svid)?;
    for (key, public) in due {
        let request = SshSignRequest {
            public_key: public.trim().to_owned(),
            principals: (!cfg.host_principals.is_empty()).then(|| cfg.host_principals.clone()),
            ttl_seconds: None,
        };
        let signed: SshSignResponse = super::servers::first_answer(&opts.server, |base| {
            post_json(&http, &format!("{base}/v1/ssh/sign/{role}"), &request)
        })?;
        let path = cfg.certificate_path(key);
        write_public(&path, format!("{}\n", signed.certificate).as_bytes())?;
        out.certified.push(path);
    }
    Ok(out)
}

/// True unless `cert_path` holds a certificate for `public` with more than
/// half its lifetime left.
fn needs_certificate(cert_path: &Path, public: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(cert_path) else {
        return true;
    };
    let (Ok(cert), Ok(key)) = (
        ssh_key::Certificate::from_openssh(text.trim()),
        ssh_key::PublicKey::from_openssh(public.trim()),
    ) else {
        return true;
    };
    if cert.public_key() != key.key_data() {
        return true;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (after, before) = (cert.valid_after(), cert.valid_before());
    let half = after + before.saturating_sub(after) / 2;
    now >= half
}

/// GETs `url`: the body of a 200 answer.
pub fn get(http: &reqwest::blocking::Client, url: &str) -> Result<Vec<u8>, AgentError> {
    let resp = http
        .get(url)
        .timeout(super::servers::attempt_wait())
        .send()
        .map_err(|e| AgentError::Unreachable {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
    let status = resp.status().as_u16();
    let body = resp
        .bytes()
        .map_err(|e| AgentError::BadAnswer(e.to_string()))?;
    if status != 200 {
        return Err(AgentError::Refused {
            status,
            reason: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    Ok(body.to_vec())
}

fn read_text(path: &Path) -> Result<String, AgentError> {
    std::fs::read_to_string(path).map_err(|source| AgentError::File {
        what: "read",
        path: path.to_owned(),
        source,
    })
}

/// Writes `data` unless the file already holds it; true if it changed.
fn replace_if_changed(path: &Path, data: &[u8]) -> Result<bool, AgentError> {
    if std::fs::read(path).is_ok_and(|old| old == data) {
        return Ok(false);
    }
    write_public(path, data)?;
    Ok(true)
}

/// Replaces `path` atomically with a world-readable file (public material
/// only: certificates, CA keys, the KRL).
fn write_public(path: &Path, data: &[u8]) -> Result<(), AgentError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".zeroth-tmp");
    let tmp = PathBuf::from(tmp);
    let fail = |source| AgentError::File {
        what: "write",
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(fail)?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_sit_next_to_their_keys_as_openssh_names_them() {
        assert_eq!(
            certificate_path(Path::new("/etc/ssh/ssh_host_ed25519_key.pub")),
            Path::new("/etc/ssh/ssh_host_ed25519_key-cert.pub")
        );
    }

    #[test]
    fn a_missing_or_unreadable_certificate_is_due() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("k-cert.pub");
        assert!(needs_certificate(&cert, "ssh-ed25519 AAAA"));
        std::fs::write(&cert, "garbage").unwrap();
        assert!(needs_certificate(&cert, "ssh-ed25519 AAAA"));
    }
}
