//! A private CA for the lab's database servers, so clients can be tested
//! with full verification (chain and host name) against it.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

use super::{LabDir, LabError};

/// A server certificate and key (PEM files) under a private lab CA.
#[derive(Debug, Clone)]
pub struct LabTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn rcgen_err(e: rcgen::Error) -> LabError {
    LabError::io(
        "make a lab certificate",
        std::io::Error::other(e.to_string()),
    )
}

/// Writes `ca.pem`, `server.crt` and `server.key` (0600) into `dir`/`sub`
/// for a server reached at 127.0.0.1.
pub fn server_certificate(dir: &LabDir, sub: &str) -> Result<LabTls, LabError> {
    std::fs::create_dir_all(dir.join(sub))
        .map_err(|e| LabError::io(format!("create {sub} in the lab directory"), e))?;
    let ca_key = KeyPair::generate().map_err(rcgen_err)?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "zeroth lab database CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).map_err(rcgen_err)?;
    let key = KeyPair::generate().map_err(rcgen_err)?;
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    leaf.subject_alt_names = vec![
        SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        SanType::DnsName("localhost".try_into().map_err(rcgen_err)?),
    ];
    let leaf = leaf.signed_by(&key, &ca, &ca_key).map_err(rcgen_err)?;
    Ok(LabTls {
        ca: dir.write(&format!("{sub}/ca.pem"), ca.pem().as_bytes(), 0o644)?,
        cert: dir.write(&format!("{sub}/server.crt"), leaf.pem().as_bytes(), 0o644)?,
        key: dir.write_private(&format!("{sub}/server.key"), key.serialize_pem().as_bytes())?,
    })
}

impl LabTls {
    pub fn ca(&self) -> &Path {
        &self.ca
    }
}
