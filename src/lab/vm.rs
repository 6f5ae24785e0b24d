//! An edge device under qemu: the image `images/build.sh` makes, booted
//! straight into its kernel, with a lab swtpm as its vTPM and a 9p share as
//! its provisioning medium. KVM when the CPU offers it, TCG otherwise.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use rustix::process::Signal;

use super::process::Daemon;
use super::{LabDir, LabError};

/// What `images/build.sh` produced: vmlinuz, initrd.img and root.ext4.
#[derive(Debug, Clone)]
pub struct EdgeImage {
    pub dir: PathBuf,
}

impl EdgeImage {
    pub fn open(dir: &Path) -> Result<Self, LabError> {
        for f in ["vmlinuz", "initrd.img", "root.ext4"] {
            if !dir.join(f).is_file() {
                return Err(LabError::Unsupported(format!(
                    "{} has no {f}: build the image with `make image`",
                    dir.display()
                )));
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// A private, writable copy of the root filesystem (sparse), so state
    /// persists across the reboots of one device and nothing else.
    pub fn disk_copy(&self, into: &LabDir) -> Result<PathBuf, LabError> {
        let disk = into.join("disk.ext4");
        super::process::run(
            "copy the edge image",
            Command::new("cp")
                .arg("--sparse=always")
                .arg(self.dir.join("root.ext4"))
                .arg(&disk),
        )?;
        Ok(disk)
    }
}

/// One boot of the device, until it powers off.
pub struct EdgeVm {
    qemu: Daemon,
    serial: PathBuf,
}

/// Whether hardware virtualisation is really usable: /dev/kvm alone is not
/// enough (a paravirtual nested module hangs stock kernels).
fn kvm_usable() -> bool {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let modules = std::fs::read_to_string("/proc/modules").unwrap_or_default();
    Path::new("/dev/kvm").exists()
        && (cpu.contains(" vmx") || cpu.contains(" svm"))
        && !modules.contains("kvm_pvm")
}

impl EdgeVm {
    /// Boots `image` on `disk`, with the vTPM behind `tpm_socket` and
    /// `medium` shared as the 9p tag "zeroth". `qemu_root` is the unpacked
    /// qemu `images/qemu.sh` prints. `forwards` are (host port on
    /// 127.0.0.1, guest port) pairs of TCP forwarded into the guest.
    #[allow(clippy::too_many_arguments)]
    pub fn boot(
        qemu_root: &Path,
        image: &EdgeImage,
        disk: &Path,
        tpm_socket: &Path,
        medium: &Path,
        run_dir: &LabDir,
        name: &str,
        forwards: &[(u16, u16)],
    ) -> Result<Self, LabError> {
        let qemu = qemu_root.join("usr/bin/qemu-system-x86_64");
        if !qemu.is_file() {
            return Err(LabError::Unsupported(format!(
                "{} is missing: run images/qemu.sh (make image does)",
                qemu.display()
            )));
        }
        let serial = run_dir.join(format!("{name}.serial.log"));
        let lib = |p: &str| qemu_root.join(p).display().to_string();
        let mut cmd = Command::new(&qemu);
        cmd.env(
            "LD_LIBRARY_PATH",
            format!(
                "{}:{}",
                lib("usr/lib/x86_64-linux-gnu"),
                lib("lib/x86_64-linux-gnu")
            ),
        );
        for firmware in ["usr/share/qemu", "usr/share/seabios", "usr/lib/ipxe/qemu"] {
            cmd.arg("-L").arg(lib(firmware));
        }
        if kvm_usable() {
            cmd.args(["-accel", "kvm", "-cpu", "host"]);
        } else {
            cmd.args(["-accel", "tcg,thread=multi", "-cpu", "qemu64"]);
        }
        cmd.args(["-m", "1024", "-smp", "2", "-nodefaults", "-no-user-config"])
            .args(["-display", "none", "-no-reboot"])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .arg("-kernel")
            .arg(image.dir.join("vmlinuz"))
            .arg("-initrd")
            .arg(image.dir.join("initrd.img"))
            .arg("-append")
            // The journal on the console too: what the agent says is in
            // the serial log a failing test shows.
            .arg("root=/dev/vda rw console=ttyS0 panic=-1 zeroth.provision=9p systemd.log_color=0 systemd.journald.forward_to_console=1")
            .arg("-drive")
            .arg(format!("file={},if=virtio,format=raw", disk.display()))
            .arg("-netdev")
            .arg(
                forwards
                    .iter()
                    .fold("user,id=n0".to_owned(), |net, (host, guest)| {
                        format!("{net},hostfwd=tcp:127.0.0.1:{host}-:{guest}")
                    }),
            )
            .args(["-device", "virtio-net-pci,netdev=n0"])
            .arg("-virtfs")
            .arg(format!(
                "local,path={},mount_tag=zeroth,security_model=none,id=zeroth",
                medium.display()
            ))
            .arg("-chardev")
            .arg(format!("socket,id=chrtpm,path={}", tpm_socket.display()))
            .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"])
            .args(["-device", "tpm-tis,tpmdev=tpm0"]);
        let qemu = Daemon::spawn(
            "qemu",
            cmd,
            &run_dir.join(format!("{name}.qemu.log")),
            Signal::TERM,
        )?;
        Ok(Self { qemu, serial })
    }

    /// The guest's console so far.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial).unwrap_or_default()).into_owned()
    }

    /// The console's last `lines` lines, where a failure shows (the
    /// whole console of a boot is mostly the kernel's early messages).
    pub fn console_tail(&self, lines: usize) -> String {
        let console = self.console();
        let all: Vec<&str> = console.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Fails with the console's end if qemu has exited.
    pub fn ensure_running(&mut self) -> Result<(), LabError> {
        if let Some(status) = self.qemu.exited() {
            return Err(LabError::Exited {
                name: "qemu".into(),
                status: status.to_string(),
                log: tail(&self.console()),
            });
        }
        Ok(())
    }

    /// Waits for the guest to power off.
    pub fn wait_poweroff(&mut self, within: Duration) -> Result<ExitStatus, LabError> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.qemu.exited() {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(LabError::NotReady {
                    what: "the guest's power-off".into(),
                    after: within,
                    log: tail(&self.console()),
                });
            }
            std::thread::sleep(Duration::from_millis(100)); // polling qemu's exit
        }
    }

    pub fn pid(&self) -> u32 {
        self.qemu.pid()
    }
}

fn tail(console: &str) -> String {
    let lines: Vec<&str> = console.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
