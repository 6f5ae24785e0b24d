//! A private TPM 2.0: swtpm with EK certificates issued by a lab-local CA.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rustix::process::Signal;

use super::process::{run, Daemon};
use super::tools::{SWTPM, SWTPM_LOCALCA, SWTPM_SETUP};
use super::{ports, version_of, wait, LabDir, LabError, PORT_ATTEMPTS};

/// A running swtpm whose state was provisioned like a real machine's TPM:
/// RSA-2048 and ECC P-384 EKs with certificates in NV, a platform certificate,
/// all signed by a CA private to this lab.
#[derive(Debug)]
pub struct Swtpm {
    daemon: Option<Daemon>,
    port: u16,
    state: PathBuf,
    ca_root: PathBuf,
    ca_intermediate: PathBuf,
    ek_cert_files: PathBuf,
    version: String,
    dir: LabDir,
}

impl Swtpm {
    /// Provisions a fresh TPM (its own EKs, so its own identity) and starts it.
    pub fn start() -> Result<Self, LabError> {
        let swtpm = SWTPM.path()?;
        let setup = SWTPM_SETUP.path()?;
        let localca = SWTPM_LOCALCA.path()?;
        let dir = LabDir::new("swtpm")?;
        let ca = dir.subdir("ca", 0o700)?;
        let state = dir.subdir("state", 0o700)?;
        let certs = dir.subdir("certs", 0o700)?;

        let localca_conf = dir.write(
            "swtpm-localca.conf",
            format!(
                "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
                ca = ca.display()
            )
            .as_bytes(),
            0o600,
        )?;
        let localca_opts = dir.write(
            "swtpm-localca.options",
            b"--platform-manufacturer Zeroth-Lab\n--platform-version 2.1\n--platform-model swtpm\n",
            0o600,
        )?;
        let setup_conf = dir.write(
            "swtpm_setup.conf",
            format!(
                "create_certs_tool = {}\ncreate_certs_tool_config = {}\ncreate_certs_tool_options = {}\nactive_pcr_banks = sha256\n",
                localca.display(),
                localca_conf.display(),
                localca_opts.display()
            )
            .as_bytes(),
            0o600,
        )?;
        run(
            "provision the TPM (swtpm_setup)",
            Command::new(&setup)
                .args(["--tpm2", "--tpmstate"])
                .arg(&state)
                .args(["--create-ek-cert", "--create-platform-cert", "--lock-nvram"])
                .arg("--config")
                .arg(&setup_conf)
                .arg("--write-ek-cert-files")
                .arg(&certs)
                // Keep swtpm_setup away from the invoking user's ~/.config.
                .env("XDG_CONFIG_HOME", dir.path()),
        )?;
        let version = version_of(&swtpm, "--version")?;

        let mut tpm = Self {
            daemon: None,
            port: 0,
            state,
            ca_root: ca.join("swtpm-localca-rootca-cert.pem"),
            ca_intermediate: ca.join("issuercert.pem"),
            ek_cert_files: certs,
            version,
            dir,
        };
        for f in [&tpm.ca_root, &tpm.ca_intermediate] {
            if !f.is_file() {
                return Err(LabError::Unsupported(format!(
                    "swtpm_setup did not create the lab CA file {}",
                    f.display()
                )));
            }
        }
        tpm.power_on()?;
        Ok(tpm)
    }

    /// Starts swtpm on the provisioned state; swtpm sends TPM2_Startup(CLEAR)
    /// itself, as firmware does at boot.
    fn power_on(&mut self) -> Result<(), LabError> {
        let swtpm = SWTPM.path()?;
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = ports::free_port_pair()?;
            let mut cmd = Command::new(&swtpm);
            cmd.args(["socket", "--tpm2", "--server"])
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .arg("--tpmstate")
                .arg(format!("dir={}", self.state.display()))
                .args(["--flags", "startup-clear", "--log"])
                .arg(format!(
                    "file={},level=1",
                    self.dir.join("swtpm.log").display()
                ));
            let mut daemon =
                Daemon::spawn("swtpm", cmd, &self.dir.join("swtpm.out"), Signal::TERM)?;
            let ctrl = SocketAddr::from((Ipv4Addr::LOCALHOST, port + 1));
            let server = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            match wait::until("swtpm", &mut daemon, Duration::from_secs(10), || {
                (wait::accepts(ctrl) && wait::accepts(server)).then_some(())
            }) {
                Ok(()) => {
                    self.port = port;
                    self.daemon = Some(daemon);
                    return Ok(());
                }
                Err(e) if ports::lost_port_race(&e.to_string()) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(LabError::Spawner))
    }

    /// Power-cycles the TPM: stops swtpm and starts it again on the same state.
    /// PCRs return to their reset values and resetCount increases, as after a
    /// machine reboot. The TCTI string may change (a new port).
    pub fn reboot(&mut self) -> Result<(), LabError> {
        if let Some(mut d) = self.daemon.take() {
            d.stop(Duration::from_secs(10));
        }
        self.power_on()
    }

    /// The TCTI configuration string for tss-esapi and tpm2-tools.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// swtpm's PID while it is powered on.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Daemon::pid)
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// PEM of the lab CA's root: what a verifier trusts as the TPM manufacturer.
    pub fn ca_root_pem(&self) -> &Path {
        &self.ca_root
    }

    /// PEM of the lab CA's intermediate that signed the EK certificates: an
    /// untrusted intermediate for path building.
    pub fn ca_intermediate_pem(&self) -> &Path {
        &self.ca_intermediate
    }

    /// What a verifier trusting this lab's TPM manufacturer holds: the lab
    /// CA's root as a trusted root, its intermediate as an intermediate.
    pub fn trust_anchors(&self) -> Result<zeroth_attest::TrustAnchors, LabError> {
        let read =
            |p: &Path| fs::read(p).map_err(|e| LabError::io(format!("read {}", p.display()), e));
        let mut a = zeroth_attest::TrustAnchors::default();
        a.add_roots_pem(&read(&self.ca_root)?)
            .map_err(|e| LabError::Unsupported(format!("lab CA root: {e}")))?;
        a.add_intermediates_pem(&read(&self.ca_intermediate)?)
            .map_err(|e| LabError::Unsupported(format!("lab CA intermediate: {e}")))?;
        Ok(a)
    }

    /// The RSA-2048 EK certificate (DER) as swtpm_setup wrote it into NV,
    /// for cross-checking what is read back through the TPM.
    pub fn ek_cert_rsa_der(&self) -> Result<Vec<u8>, LabError> {
        let p = self.ek_cert_files.join("ek-rsa2048.crt");
        fs::read(&p).map_err(|e| LabError::io(format!("read {}", p.display()), e))
    }

    /// The directory holding the TPM's persistent state.
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// Hands the TPM to a virtual machine: swtpm is restarted on the same
    /// state behind a Unix control socket, the vTPM qemu's `tpm-tis`
    /// device drives. qemu's firmware sends TPM2_Startup, so every call is
    /// a power cycle (resetCount grows); swtpm exits when qemu does.
    /// Returns the socket for `-chardev socket,path=…`.
    pub fn attach_vm(&mut self) -> Result<PathBuf, LabError> {
        if let Some(mut d) = self.daemon.take() {
            d.stop(Duration::from_secs(10));
        }
        let swtpm = SWTPM.path()?;
        let sock = self.dir.join("vtpm.sock");
        let _ = fs::remove_file(&sock);
        let mut cmd = Command::new(&swtpm);
        cmd.args(["socket", "--tpm2", "--terminate", "--ctrl"])
            .arg(format!("type=unixio,path={}", sock.display()))
            .arg("--tpmstate")
            .arg(format!("dir={}", self.state.display()))
            .arg("--log")
            .arg(format!(
                "file={},level=1",
                self.dir.join("swtpm.log").display()
            ));
        let mut daemon = Daemon::spawn("swtpm", cmd, &self.dir.join("swtpm.out"), Signal::TERM)?;
        wait::until("swtpm (vTPM)", &mut daemon, Duration::from_secs(10), || {
            sock.exists().then_some(())
        })?;
        self.daemon = Some(daemon);
        Ok(sock)
    }
}
