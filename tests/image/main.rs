//! An edge device end to end (`make image-test`): the image with the
//! zeroth .deb boots under qemu with a lab swtpm as its vTPM; systemd starts
//! the hardened zeroth-agent, which enrols through /dev/tpmrm0 against a
//! zeroth server on this host. Then the device reboots and re-attests
//! (resetCount moved), a PCR is extended inside it and its renewal is
//! refused, and it powers off leaving nothing running.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use zeroth::lab::vm::{EdgeImage, EdgeVm};
use zeroth::lab::{LabDir, Postgres, SoftHsm, Swtpm, ZerothServer};
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
        linger)
            # A service that leaves a process behind when it restarts
            # (KillMode=process). Each run asks the agent for a database
            # user at its start, and its waiter once more when /tmp/zt-ask
            # appears.
            cat >/run/systemd/system/zt-linger.service <<'UNIT'
[Service]
User=nobody
KillMode=process
ExecStart=/bin/sh -c 'ask() { zeroth db creds app-ro --socket /run/zeroth-agent/api.sock >/tmp/zt-$1.part 2>&1; mv /tmp/zt-$1.part /tmp/zt-$1; }; ask start-$$INVOCATION_ID; (while [ ! -f /tmp/zt-ask ]; do sleep 0.2; done; ask asked-$$INVOCATION_ID) & exec sleep 600'
UNIT
            wait_for() {
                for i in $(seq 1 150); do [ -f "$1" ] && return; sleep 0.2; done
            }
            systemctl daemon-reload
            systemctl start zt-linger
            a=$(systemctl show -p InvocationID --value zt-linger)
            wait_for "/tmp/zt-start-$a"
            # Run b starts beside run a's waiter, left behind.
            systemctl restart zt-linger
            b=$(systemctl show -p InvocationID --value zt-linger)
            wait_for "/tmp/zt-start-$b"
            touch /tmp/zt-ask
            wait_for "/tmp/zt-asked-$a"
            wait_for "/tmp/zt-asked-$b"
            # Both waiters have asked and gone: run c starts clean.
            rm -f /tmp/zt-ask
            systemctl restart zt-linger
            c=$(systemctl show -p InvocationID --value zt-linger)
            wait_for "/tmp/zt-start-$c"
            for f in "start-$a" "asked-$a" "start-$b" "start-$c"; do
                echo "== $f" >>"$M/linger.txt"
                cat "/tmp/zt-$f" >>"$M/linger.txt" 2>&1
            done
            echo "== journal" >>"$M/linger.txt"
            journalctl -u zeroth-agent --no-pager | grep -i 'earlier run' >>"$M/linger.txt"
            systemctl stop zt-linger
            touch "$M/done-linger" ;;
        poweroff)
            touch "$M/done-poweroff"
            systemctl poweroff
            exit 0 ;;
        esac
    fi
    sleep 0.5
done
"#;

/// How much of a guest's console a failure shows: its end, where the agent's
/// and systemd's last words are.
const CONSOLE_TAIL: usize = 120;

struct Device {
    medium: LabDir,
    run: LabDir,
    disk: PathBuf,
    image: EdgeImage,
    qemu: PathBuf,
}

impl Device {
    fn boot(&self, tpm: &mut Swtpm, name: &str) -> EdgeVm {
        for stale in ["do", "done-extend-pcr", "done-linger", "done-poweroff"] {
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
            &[],
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
                vm.console_tail(CONSOLE_TAIL)
            );
            std::thread::sleep(Duration::from_millis(200)); // polling the share
        }
    }
}

/// Polls the server's store until `want` holds for the only node.
fn wait_node(
    server: &ZerothServer,
    vm: &mut EdgeVm,
    within: Duration,
    want: impl Fn(&Node) -> bool,
) -> Node {
    let db = server.database();
    let deadline = Instant::now() + within;
    loop {
        if let Ok(store) = Store::open(&db) {
            if let Ok(list) = nodes::nodes(&store.lock()) {
                if let Some(n) = list.into_iter().find(|n| want(n)) {
                    return n;
                }
            }
        }
        vm.ensure_running().unwrap();
        assert!(
            Instant::now() < deadline,
            "no node as expected within {within:?}; console:\n{}\nserver log:\n{}",
            vm.console_tail(CONSOLE_TAIL),
            last_lines(&server.log(), 40)
        );
        std::thread::sleep(Duration::from_millis(500)); // polling the store
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(n)..].join("\n")
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
        "[[group]]\nname = \"edge\"\nek_roots = \"{}\"\nek_intermediates = \"{}\"\nauto_approve = true\nsvid_ttl = \"20s\"\npcrs = [0, 1, 2, 3, 4, 5, 6, 7, 15]\npcr_policy = {{ \"sha256:15\" = \"{zero}\" }}\n\n[[db_role]]\nname = \"app-ro\"\nconnection = \"pg\"\nschema = \"public\"\nallow_groups = [\"edge\"]\n",
        roots.path().display(),
        tpm.ca_intermediate_pem().display()
    );
    let server =
        ZerothServer::start(Path::new(env!("CARGO_BIN_EXE_zeroth")), &hsm, &groups).unwrap();
    let port = server.url().rsplit(':').next().unwrap().to_owned();
    let pg = Postgres::start().unwrap();
    server.add_postgres("pg", &pg).unwrap();

    // The provisioning medium: where the server is and its CA, plus the hook.
    let medium = LabDir::new("medium").unwrap();
    medium
        .write(
            "agent.toml",
            format!(
                "server = \"https://10.0.2.2:{port}\"\nca_bundle = \"/etc/zeroth/ca.pem\"\ngroup = \"edge\"\ntcti = \"device:/dev/tpmrm0\"\nstate_dir = \"/var/lib/zeroth-agent\"\nretry_max = \"5s\"\n\n[workload_api]\nsocket = \"/run/zeroth-agent/api.sock\"\n[workload_api.units]\n\"zt-linger.service\" = [\"app-ro\"]\n"
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
    let first = wait_node(&server, &mut vm, Duration::from_secs(300), |n| {
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
        vm.console_tail(CONSOLE_TAIL)
    );

    // A service's programs get its database role through the agent; while
    // a process an earlier run left behind (KillMode=process) is in its
    // cgroup, no process there does; once it is gone, the service does again.
    device.ask(&mut vm, "linger", Duration::from_secs(120));
    let linger = std::fs::read_to_string(device.medium.join("linger.txt")).unwrap();
    println!("{linger}");
    let said: Vec<&str> = linger.split("== ").skip(1).collect();
    assert_eq!(said.len(), 5, "{linger}");
    let served = |s: &str| s.contains("postgresql://zt_app_ro_");
    let refused = |s: &str| s.contains("may not use this agent") && !served(s);
    assert!(served(said[0]), "run a at its start:\n{linger}");
    assert!(
        refused(said[1]),
        "run a's leftover after the restart:\n{linger}"
    );
    assert!(refused(said[2]), "run b beside run a's leftover:\n{linger}");
    assert!(served(said[3]), "run c, with no leftover:\n{linger}");
    assert!(said[4].contains("an earlier run left behind"), "{linger}");

    device.ask(&mut vm, "poweroff", Duration::from_secs(60));
    assert!(vm
        .wait_poweroff(Duration::from_secs(120))
        .unwrap()
        .success());

    // Second boot: a power cycle of the TPM too. The agent re-attests with a
    // fresh quote, and the server sees the TPM's resetCount move.
    let rebooted = Instant::now();
    let mut vm = device.boot(&mut tpm, "boot2");
    let again = wait_node(&server, &mut vm, Duration::from_secs(300), |n| {
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
        assert!(
            Instant::now() < deadline,
            "no refusal:\n{}",
            vm.console_tail(CONSOLE_TAIL)
        );
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

/// The README's "Install on a server" commands, as a script: the operator's
/// edit of server.toml (and the EK roots it names) follows the `cp` line.
fn readme_install_script() -> String {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("## Install on a server")
        .nth(1)
        .expect("the README has an install section");
    let block = section
        .split("```")
        .nth(1)
        .expect("the install section has a command block");
    let mut script = String::from("set -ex\n");
    for line in block.lines().map(str::trim).filter(|l| !l.is_empty()) {
        script.push_str(line);
        script.push('\n');
        if line.starts_with("cp /etc/zeroth/server.toml.example") {
            script.push_str(
                "install -m 0640 -o root -g zeroth server.toml /etc/zeroth/server.toml\n",
            );
            script.push_str(
                "mkdir -p /etc/zeroth/ek-roots && cp ek-root.pem /etc/zeroth/ek-roots/\n",
            );
            script.push_str("cp ek-intermediate.pem /etc/zeroth/\n");
        }
    }
    script
}

/// The guest side of the server run: the README's install, then what the
/// host asks for.
const SERVER_HOOK: &str = r#"#!/bin/sh
M=/run/zeroth-medium
cd "$M"
PIN=$(cat pin) SO_PIN=$(cat so-pin) sh install.sh >install.log 2>&1
echo $? >install.status
journalctl -u zeroth-server --no-pager | tail -30 >server-journal.txt
systemd-analyze security zeroth-server --no-pager >security.txt 2>&1
systemd-creds has-tpm2 >tpm2.txt 2>&1
cp /var/lib/zeroth/bundle.pem bundle.pem
# An operator without root, in the admin group, and a user outside it.
useradd -m -G zeroth-admin ops && useradd -m stranger
runuser -u ops -- zeroth node list >ops-list.txt 2>&1; echo $? >ops-list.status
runuser -u ops -- zeroth backup --out /home/ops/backup.db >ops-backup.txt 2>&1; echo $? >ops-backup.status
runuser -u stranger -- zeroth node list >stranger.txt 2>&1; echo $? >stranger.status
# Offline commands from a root shell: the HSM PIN is the unit's encrypted
# credential, decrypted with systemd-creds.
zeroth audit verify --config /etc/zeroth/server.toml >audit.txt 2>&1; echo $? >audit.status
zeroth hsm status --config /etc/zeroth/server.toml >hsm.txt 2>&1; echo $? >hsm.status
zeroth restore --config /etc/zeroth/server.toml --state-dir /root/restored /home/ops/backup.db >restore.txt 2>&1; echo $? >restore.status
# A token host installed from the same package: its first token is
# encrypted for it and reaches the agent as the unit's credential.
install -m 0644 /var/lib/zeroth/bundle.pem /etc/zeroth/ca.pem
printf 'server = "https://127.0.0.1:8443"\nca_bundle = "/etc/zeroth/ca.pem"\ntoken_file = "/run/credentials/zeroth-agent.service/token"\nstate_dir = "/var/lib/zeroth-agent"\n' >/etc/zeroth/agent.toml
chgrp zeroth /etc/zeroth/agent.toml && chmod 0640 /etc/zeroth/agent.toml
zeroth token create --group edge 2>token-create.txt | systemd-creds encrypt --with-key=host+tpm2 --name=token - /etc/zeroth/token.cred
install -D -m 0644 /usr/share/zeroth/token-host.conf /etc/systemd/system/zeroth-agent.service.d/token-host.conf
systemctl daemon-reload
systemctl start zeroth-agent
for i in $(seq 1 120); do [ -s /var/lib/zeroth-agent/svid.pem ] && break; sleep 0.5; done
{ systemctl is-active zeroth-agent; ls /var/lib/zeroth-agent; } >agent-state.txt 2>&1
journalctl -u zeroth-agent --no-pager | tail -20 >agent-journal.txt
zeroth token list >token-list.txt 2>&1
systemctl show -p NRestarts -p MainPID zeroth-server >before.txt
touch server-up
while :; do
    if [ -f "$M/do" ]; then
        action=$(cat "$M/do"); rm -f "$M/do"
        case "$action" in
        stop-server)
            pid=$(systemctl show -p MainPID --value zeroth-server)
            kill -STOP "$pid"
            # The watchdog (WatchdogSec=30s) restarts it: wait for a new one.
            for i in $(seq 1 240); do
                now=$(systemctl show -p MainPID --value zeroth-server)
                state=$(systemctl is-active zeroth-server)
                [ "$now" != "$pid" ] && [ "$now" != 0 ] && [ "$state" = active ] && break
                sleep 0.5
            done
            systemctl show -p NRestarts -p MainPID zeroth-server >after.txt
            journalctl -u zeroth-server --no-pager | tail -20 >journal.txt
            touch "$M/done-stop-server" ;;
        poweroff)
            touch "$M/done-poweroff"
            systemctl poweroff
            exit 0 ;;
        esac
    fi
    sleep 0.5
done
"#;

#[test]
fn a_server_installed_as_the_readme_says_runs_under_systemd() {
    use zeroth::agent::{enrol, EnrolOptions, Outcome};
    let image = EdgeImage::open(&env_path("ZEROTH_EDGE_IMAGE")).unwrap();
    let qemu = env_path("ZEROTH_QEMU");
    let deb = env_path("ZEROTH_DEB");
    // The vTPM the server's credentials are sealed to, and a TPM on this
    // host for the agent that enrols against it.
    let mut vtpm = Swtpm::start().unwrap();
    let node_tpm = Swtpm::start().unwrap();
    let port = zeroth::lab::ports::free_port().unwrap();

    let medium = LabDir::new("server-medium").unwrap();
    std::fs::copy(&deb, medium.join("zeroth.deb")).unwrap();
    std::fs::copy(node_tpm.ca_root_pem(), medium.join("ek-root.pem")).unwrap();
    std::fs::copy(
        node_tpm.ca_intermediate_pem(),
        medium.join("ek-intermediate.pem"),
    )
    .unwrap();
    let server_toml = "listen = \"0.0.0.0:8443\"\ntrust_domain = \"appliance.zeroth\"\nstate_dir = \"/var/lib/zeroth\"\nadmin_socket = \"/run/zeroth/admin.sock\"\nadmin_group = \"zeroth-admin\"\ntls_names = [\"127.0.0.1\", \"zeroth-edge\"]\n\n[hsm]\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\ntoken_label = \"zeroth\"\npin_credential = \"hsm-pin\"\n\n[[group]]\nname = \"edge\"\nek_roots = \"/etc/zeroth/ek-roots\"\nek_intermediates = \"/etc/zeroth/ek-intermediate.pem\"\nauto_approve = true\n";
    medium
        .write("server.toml", server_toml.as_bytes(), 0o644)
        .unwrap();
    medium.write("pin", b"4711-lab-pin", 0o644).unwrap();
    medium.write("so-pin", b"0815-lab-so-pin", 0o644).unwrap();
    medium
        .write("install.sh", readme_install_script().as_bytes(), 0o644)
        .unwrap();
    medium
        .write("hook.sh", SERVER_HOOK.as_bytes(), 0o755)
        .unwrap();
    let run = LabDir::new("server-vm").unwrap();
    let disk = image.disk_copy(&run).unwrap();
    let device = Device {
        medium,
        run,
        disk,
        image,
        qemu,
    };
    let sock = vtpm.attach_vm().unwrap();
    let mut vm = EdgeVm::boot(
        &device.qemu,
        &device.image,
        &device.disk,
        &sock,
        device.medium.path(),
        &device.run,
        "server",
        &[(port, 8443)],
    )
    .unwrap();
    let m = |f: &str| std::fs::read_to_string(device.medium.join(f)).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(420);
    while !device.medium.join("server-up").exists() {
        vm.ensure_running().unwrap();
        assert!(
            Instant::now() < deadline,
            "the server did not come up:\n{}\n{}",
            m("install.log"),
            vm.console_tail(CONSOLE_TAIL)
        );
        std::thread::sleep(Duration::from_millis(500)); // polling the share
    }
    let install = m("install.log");
    println!("{install}");
    assert_eq!(
        m("install.status").trim(),
        "0",
        "{install}\n{}",
        m("server-journal.txt")
    );
    // `zeroth node list` (the README's last line) answered from the admin socket.
    assert!(install.contains("ID "), "{install}");
    // The admin group reaches the socket without root; others are refused.
    let said = |name: &str| {
        (
            m(&format!("{name}.status")).trim().to_owned(),
            m(&format!("{name}.txt")),
        )
    };
    let (status, out) = said("ops-list");
    assert_eq!(status, "0", "an admin-group member's node list: {out}");
    assert!(out.contains("ID "), "{out}");
    let (status, out) = said("ops-backup");
    assert_eq!(status, "0", "an admin-group member's backup: {out}");
    let (status, out) = said("stranger");
    assert_ne!(status, "0", "a user outside the admin group: {out}");
    assert!(out.contains("permission denied"), "{out}");
    // Offline commands in a root shell get the HSM PIN from the encrypted
    // credential.
    for name in ["audit", "hsm", "restore"] {
        let (status, out) = said(name);
        println!("zeroth {name} (root shell): {out}");
        assert_eq!(status, "0", "{name}: {out}");
    }
    assert!(m("hsm.txt").contains("x509-ca"), "{}", m("hsm.txt"));
    // The token host's agent started from its encrypted first token.
    let agent = m("agent-state.txt");
    println!("token host agent: {}", agent.replace('\n', " "));
    assert!(
        agent.starts_with("active") && agent.contains("svid.pem") && agent.contains("token"),
        "{agent}\n{}",
        m("agent-journal.txt")
    );
    let chain = m("token-create.txt");
    let chain = chain
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no chain id in {chain:?}"));
    assert!(
        m("token-list.txt").contains(chain),
        "{}",
        m("token-list.txt")
    );

    // systemd's own view of the unit's exposure.
    let security = m("security.txt");
    let exposure: f64 = security
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for zeroth-server.service: ")
                .nth(1)
        })
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure in:\n{security}"));
    println!("systemd-analyze security zeroth-server: {exposure}");
    // The README seals the PIN with the vTPM (--with-key=host+tpm2), which
    // the guest's kernel drives (no UEFI firmware reports it here).
    let tpm2 = m("tpm2.txt");
    println!("systemd-creds has-tpm2: {}", tpm2.replace('\n', " "));
    assert!(tpm2.contains("+driver"), "{tpm2}");
    assert!(install.contains("--with-key=host+tpm2"), "{install}");
    assert!(exposure <= 2.0, "{security}");

    // A node on this host enrols against the appliance.
    let agent = LabDir::new("agent").unwrap();
    let options = EnrolOptions {
        server: format!("https://127.0.0.1:{port}"),
        ca_bundle: device.medium.join("bundle.pem"),
        group: "edge".into(),
        tcti: node_tpm.tcti(),
        state_dir: agent.path().to_owned(),
        event_log: None,
    };
    assert!(matches!(enrol(&options).unwrap(), Outcome::Approved { .. }));

    // The API document the package ships is the one the server serves.
    let unpacked = LabDir::new("deb-contents").unwrap();
    let status = std::process::Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(unpacked.path())
        .status()
        .unwrap();
    assert!(status.success());
    let shipped: serde_json::Value = serde_json::from_slice(
        &std::fs::read(unpacked.join("usr/share/doc/zeroth/openapi.json")).unwrap(),
    )
    .unwrap();
    let served: serde_json::Value = zeroth::agent::enrol::client(&options.ca_bundle)
        .unwrap()
        .get(format!("{}/v1/openapi.json", options.server))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(shipped, served);
    assert_eq!(served["openapi"], "3.1.0");

    // The server hangs (SIGSTOP): systemd's watchdog restarts it, and it serves again.
    device.ask(&mut vm, "stop-server", Duration::from_secs(180));
    let (before, after) = (m("before.txt"), m("after.txt"));
    println!("before: {before}after: {after}{}", m("journal.txt"));
    assert!(
        after.contains("NRestarts=1"),
        "{before}{after}{}",
        m("journal.txt")
    );
    assert!(
        m("journal.txt").contains("Watchdog timeout"),
        "{}",
        m("journal.txt")
    );
    assert!(matches!(enrol(&options).unwrap(), Outcome::Approved { .. }));

    device.ask(&mut vm, "poweroff", Duration::from_secs(60));
    assert!(vm
        .wait_poweroff(Duration::from_secs(120))
        .unwrap()
        .success());
}
