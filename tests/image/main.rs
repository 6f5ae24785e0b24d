//! An edge device end to end (`make image-test`): the image with the
//! zeroth .deb boots under qemu with a lab swtpm as its vTPM; systemd starts
//! the hardened zeroth-agent, which enrols through /dev/tpmrm0 against a
//! zeroth server on this host. Then the device reboots and re-attests
//! (resetCount moved), a PCR is extended inside it and its renewal is
//! refused, and it powers off leaving nothing running.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use zeroth::lab::vm::{EdgeImage, EdgeVm};
use zeroth::lab::{LabDir, SoftHsm, Swtpm, ZerothServer};
use zeroth::store::nodes::{self, Node, NodeState};
use zeroth::store::Store;

fn env_path(name: &str) -> PathBuf {
    std::env::var_os(name)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "{name} is not set: run `make image-test` (it builds the .deb, the image and qemu)"
            )
        })
}

/// The guest side, run by the image's medium hook: waits for an action the
/// host writes into `do`, performs it and reports `done-<action>`.
const HOOK: &str = r#"#!/bin/sh
M=/run/zeroth-medium
echo "hook: boot $(cat /proc/sys/kernel/random/boot_id)" >/dev/console
while :; do
    if [ -f "$M/do" ]; then
        action=$(cat "$M/do"); rm -f "$M/do"
        case "$action" in
        extend-pcr)
            tpm2_pcrextend -T device:/dev/tpmrm0 \
                "15:sha256=$(printf 'zeroth drift' | sha256sum | cut -c1-64)" >/dev/console 2>&1
            systemctl restart zeroth-agent
            touch "$M/done-extend-pcr" ;;
        poweroff)
            touch "$M/done-poweroff"
            systemctl poweroff
            exit 0 ;;
        esac
    fi
    sleep 0.5
done
"#;

struct Device {
    medium: LabDir,
    run: LabDir,
    disk: PathBuf,
    image: EdgeImage,
    qemu: PathBuf,
}

impl Device {
    fn boot(&self, tpm: &mut Swtpm, name: &str) -> EdgeVm {
        for stale in ["do", "done-extend-pcr", "done-poweroff"] {
            let _ = std::fs::remove_file(self.medium.join(stale));
        }
        let sock = tpm.attach_vm().unwrap();
        EdgeVm::boot(
            &self.qemu,
            &self.image,
            &self.disk,
            &sock,
            self.medium.path(),
            &self.run,
            name,
        )
        .unwrap()
    }

    /// Asks the guest's hook to do `action` and waits for its report.
    fn ask(&self, vm: &mut EdgeVm, action: &str, within: Duration) {
        std::fs::write(self.medium.join("do"), action).unwrap();
        let done = self.medium.join(format!("done-{action}"));
        let deadline = Instant::now() + within;
        while !done.exists() {
            if action != "poweroff" {
                vm.ensure_running().unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "the guest did not {action}:\n{}",
                vm.console()
            );
            std::thread::sleep(Duration::from_millis(200)); // polling the share
        }
    }
}

/// Polls the server's store until `want` holds for the only node.
fn wait_node(db: &Path, vm: &mut EdgeVm, within: Duration, want: impl Fn(&Node) -> bool) -> Node {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(store) = Store::open(db) {
            if let Ok(list) = nodes::nodes(&store.lock()) {
                if let Some(n) = list.into_iter().find(|n| want(n)) {
                    return n;
                }
            }
        }
        vm.ensure_running().unwrap();
        assert!(
            Instant::now() < deadline,
            "no node as expected within {within:?}; console:\n{}",
            vm.console()
        );
        std::thread::sleep(Duration::from_millis(500)); // polling the store
    }
}

fn audit_kinds(db: &Path, subject: &str) -> Vec<(String, String)> {
    let store = Store::open(db).unwrap();
    let records = zeroth::audit::tail(&store.lock(), 10_000).unwrap();
    records
        .into_iter()
        .filter(|r| r.subject == subject)
        .map(|r| (r.kind, r.detail))
        .collect()
}

#[test]
fn an_edge_device_enrols_itself_re_attests_after_reboot_and_is_refused_after_pcr_drift() {
    let image = EdgeImage::open(&env_path("ZEROTH_EDGE_IMAGE")).unwrap();
    let qemu = env_path("ZEROTH_QEMU");
    let mut tpm = Swtpm::start().unwrap();
    let hsm = SoftHsm::start().unwrap();
    let roots = LabDir::new("roots").unwrap();
    std::fs::copy(tpm.ca_root_pem(), roots.join("root.pem")).unwrap();
    let zero = "0".repeat(64);
    let groups = format!(
        "[[group]]\nname = \"edge\"\nek_roots = \"{}\"\nek_intermediates = \"{}\"\nauto_approve = true\nsvid_ttl = \"20s\"\npcrs = [0, 1, 2, 3, 4, 5, 6, 7, 15]\npcr_policy = {{ \"sha256:15\" = \"{zero}\" }}\n",
        roots.path().display(),
        tpm.ca_intermediate_pem().display()
    );
    let server =
        ZerothServer::start(Path::new(env!("CARGO_BIN_EXE_zeroth")), &hsm, &groups).unwrap();
    let port = server.url().rsplit(':').next().unwrap().to_owned();

    // The provisioning medium: where the server is and its CA, plus the hook.
    let medium = LabDir::new("medium").unwrap();
    medium
        .write(
            "agent.toml",
            format!(
                "server = \"https://10.0.2.2:{port}\"\nca_bundle = \"/etc/zeroth/ca.pem\"\ngroup = \"edge\"\ntcti = \"device:/dev/tpmrm0\"\nstate_dir = \"/var/lib/zeroth-agent\"\nretry_max = \"5s\"\n"
            )
            .as_bytes(),
            0o644,
        )
        .unwrap();
    std::fs::copy(server.bundle(), medium.join("ca.pem")).unwrap();
    medium.write("hook.sh", HOOK.as_bytes(), 0o755).unwrap();
    let run = LabDir::new("edge-vm").unwrap();
    let disk = image.disk_copy(&run).unwrap();
    let device = Device {
        medium,
        run,
        disk,
        image,
        qemu,
    };
    let db = server.database();

    // First boot: systemd starts zeroth-agent, which enrols through the vTPM.
    let started = Instant::now();
    let mut vm = device.boot(&mut tpm, "boot1");
    let first = wait_node(&db, &mut vm, Duration::from_secs(300), |n| {
        n.state == NodeState::Approved
    });
    println!(
        "enrolled {} ({}) {:.0}s after power-on; resetCount {}",
        first.id,
        first.hostname,
        started.elapsed().as_secs_f64(),
        first.reset_count
    );
    assert_eq!(first.hostname, "zeroth-edge");
    let subject = format!("node/{}", first.id);
    assert!(audit_kinds(&db, &subject)
        .iter()
        .any(|(k, _)| k == "svid.issued"));
    assert!(
        vm.console()
            .contains("zeroth-provision: configuration installed"),
        "{}",
        vm.console()
    );
    device.ask(&mut vm, "poweroff", Duration::from_secs(60));
    assert!(vm
        .wait_poweroff(Duration::from_secs(120))
        .unwrap()
        .success());

    // Second boot: a power cycle of the TPM too. The agent re-attests with a
    // fresh quote, and the server sees the TPM's resetCount move.
    let rebooted = Instant::now();
    let mut vm = device.boot(&mut tpm, "boot2");
    let again = wait_node(&db, &mut vm, Duration::from_secs(300), |n| {
        n.id == first.id && n.reset_count > first.reset_count
    });
    println!(
        "re-attested {:.0}s after power-on; resetCount {} -> {}",
        rebooted.elapsed().as_secs_f64(),
        first.reset_count,
        again.reset_count
    );
    assert_eq!(again.state, NodeState::Approved);

    // PCR 15 drifts inside the device: its next renewal is refused.
    device.ask(&mut vm, "extend-pcr", Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(120);
    let denied = loop {
        let found = audit_kinds(&db, &subject)
            .into_iter()
            .find(|(k, _)| k == "renew.denied" || k == "enroll.denied");
        if let Some(d) = found {
            break d;
        }
        vm.ensure_running().unwrap();
        assert!(Instant::now() < deadline, "no refusal:\n{}", vm.console());
        std::thread::sleep(Duration::from_millis(500)); // polling the audit log
    };
    println!("after the PCR change: {} {}", denied.0, denied.1);
    assert!(denied.1.contains("15"), "{}", denied.1);

    // Power off; nothing is left running.
    device.ask(&mut vm, "poweroff", Duration::from_secs(60));
    assert!(vm
        .wait_poweroff(Duration::from_secs(120))
        .unwrap()
        .success());
    let qemu_pid = vm.pid();
    drop(vm);
    assert!(
        !Path::new(&format!("/proc/{qemu_pid}")).exists(),
        "qemu is still running"
    );
}
