//! A private OpenSSH server with its own host key, for certificate logins.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rustix::process::Signal;

use super::process::{run, Daemon};
use super::tools::{SSH, SSHD, SSH_KEYGEN};
use super::{accounts, ports, version_of, wait, LabDir, LabError, PORT_ATTEMPTS};

/// What the lab's sshd trusts. Each path is read by sshd at every login, so a
/// test may rewrite the file (a new KRL, a new CA key) without a restart.
#[derive(Debug, Default, Clone)]
pub struct SshdOptions {
    /// `TrustedUserCAKeys`: CA keys whose user certificates are accepted.
    pub trusted_user_ca_keys: Option<PathBuf>,
    /// `RevokedKeys`: a KRL. sshd refuses every key if this file is missing.
    pub revoked_keys: Option<PathBuf>,
    /// `AuthorizedPrincipalsFile`: principals accepted for the login user.
    pub authorized_principals_file: Option<PathBuf>,
    /// `HostCertificate`: a certificate for the host key.
    pub host_certificate: Option<PathBuf>,
    /// The host's private key (default: a fresh Ed25519 key in sshd's dir).
    pub host_key: Option<PathBuf>,
    /// `AuthorizedKeysFile`: plain public keys accepted for the login user.
    pub authorized_keys: Option<PathBuf>,
}

/// A running sshd on a random loopback port.
#[derive(Debug)]
pub struct Sshd {
    daemon: Daemon,
    port: u16,
    host_key: PathBuf,
    login_user: String,
    version: String,
    dir: LabDir,
}

impl Sshd {
    /// Starts sshd; it must run as root (it switches to the login user per session).
    pub fn start(opts: &SshdOptions) -> Result<Self, LabError> {
        let sshd = SSHD.path()?;
        SSH.path()?;
        let keygen = SSH_KEYGEN.path()?;
        if !rustix::process::geteuid().is_root() {
            return Err(LabError::Unsupported(
                "the lab's sshd must be started as root (sshd switches to the login user)".into(),
            ));
        }
        let dir = LabDir::new("sshd")?;
        // sshd's privilege-separation directory.
        std::fs::create_dir_all("/run/sshd").map_err(|e| LabError::io("create /run/sshd", e))?;
        let host_key = match &opts.host_key {
            Some(k) => k.clone(),
            None => {
                let k = dir.join("ssh_host_ed25519_key");
                generate_host_key(&keygen, &k)?;
                k
            }
        };
        let login_user = accounts::current_user_name()?;
        let version = version_of(&sshd, "-V")?;

        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = ports::free_port()?;
            let cfg = dir.write(
                "sshd_config",
                config(&dir, port, &host_key, opts).as_bytes(),
                0o600,
            )?;
            run(
                "check the sshd configuration (sshd -t)",
                Command::new(&sshd).arg("-t").arg("-f").arg(&cfg),
            )?;
            let mut cmd = Command::new(&sshd);
            cmd.args(["-D", "-e", "-f"]).arg(&cfg);
            let mut daemon = Daemon::spawn("sshd", cmd, &dir.join("sshd.log"), Signal::TERM)?;
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            match wait::until("sshd", &mut daemon, Duration::from_secs(10), || {
                wait::banner(addr).filter(|b| b.starts_with("SSH-2.0-"))
            }) {
                Ok(_) => {
                    return Ok(Self {
                        daemon,
                        port,
                        host_key,
                        login_user,
                        version,
                        dir,
                    })
                }
                Err(e) if ports::lost_port_race(&e.to_string()) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(LabError::Spawner))
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The local account logins land in (the account running the lab).
    pub fn login_user(&self) -> &str {
        &self.login_user
    }

    /// The host's public key, `ssh-ed25519 AAAA… comment`.
    pub fn host_public_key(&self) -> Result<String, LabError> {
        let p = self.host_key.with_extension("pub");
        std::fs::read_to_string(&p).map_err(|e| LabError::io(format!("read {}", p.display()), e))
    }

    /// The host's private key path (to have it certified for `HostCertificate`).
    pub fn host_key(&self) -> &Path {
        &self.host_key
    }

    pub fn pid(&self) -> Option<u32> {
        Some(self.daemon.pid())
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// sshd's log (LogLevel VERBOSE): accepted certificates, refusal reasons.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.daemon.log_path()).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// An `ssh` command to this server as the login user, isolated from the
    /// caller's ~/.ssh: no config file, no agent, no known_hosts, batch mode.
    /// The caller adds identity options and the remote command.
    pub fn ssh_command(&self) -> Result<Command, LabError> {
        let mut cmd = Command::new(SSH.path()?);
        cmd.args(["-F", "/dev/null"])
            .args(["-o", "BatchMode=yes"])
            .args(["-o", "IdentitiesOnly=yes"])
            .args(["-o", "IdentityAgent=none"])
            .args(["-o", "UserKnownHostsFile=/dev/null"])
            .args(["-o", "GlobalKnownHostsFile=/dev/null"])
            .args(["-o", "StrictHostKeyChecking=no"])
            .args(["-o", "LogLevel=ERROR"])
            .args(["-o", "ConnectTimeout=10"])
            .args(["-p", &self.port.to_string()])
            .arg(format!("{}@127.0.0.1", self.login_user));
        Ok(cmd)
    }
}

/// A fresh Ed25519 host key (and its `.pub`) at `path`.
pub fn generate_host_key(keygen: &Path, path: &Path) -> Result<(), LabError> {
    run(
        "generate an sshd host key",
        Command::new(keygen)
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "zeroth-lab-host",
                "-f",
            ])
            .arg(path),
    )
    .map(|_| ())
}

fn config(dir: &LabDir, port: u16, host_key: &Path, opts: &SshdOptions) -> String {
    let mut c = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\n",
        host_key.display(),
        dir.join("sshd.pid").display()
    );
    c.push_str(
        "UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
         PubkeyAuthentication yes\nPermitRootLogin prohibit-password\n\
         LogLevel VERBOSE\nMaxStartups 100:30:200\n\
         # The lab's files live under /tmp, which StrictModes would refuse.\nStrictModes no\n",
    );
    let line = |key: &str, v: &Option<PathBuf>| match v {
        Some(p) => format!("{key} {}\n", p.display()),
        None => String::new(),
    };
    match &opts.authorized_keys {
        Some(p) => c.push_str(&format!("AuthorizedKeysFile {}\n", p.display())),
        None => c.push_str("AuthorizedKeysFile none\n"),
    }
    c.push_str(&line("TrustedUserCAKeys", &opts.trusted_user_ca_keys));
    c.push_str(&line("RevokedKeys", &opts.revoked_keys));
    c.push_str(&line(
        "AuthorizedPrincipalsFile",
        &opts.authorized_principals_file,
    ));
    c.push_str(&line("HostCertificate", &opts.host_certificate));
    c
}
