use std::path::Path;
use std::time::Duration;

use super::*;

#[test]
fn the_packaged_example_configurations_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc");
    let server = std::fs::read_to_string(root.join("server.toml")).unwrap();
    let cfg = ServerConfig::parse(&server, "server.toml").unwrap();
    assert_eq!(cfg.hsm.pin_credential.as_deref(), Some("hsm-pin"));
    assert!(
        cfg.hsm.pin_file.is_none(),
        "the PIN comes from a systemd credential"
    );
    let agent = AgentConfig::load(&root.join("agent.toml")).unwrap();
    assert_eq!(agent.tcti, "device:/dev/tpmrm0");
    // The [ssh] lines, once uncommented, are valid too; so is the
    // token host's variant.
    let text = std::fs::read_to_string(root.join("agent.toml")).unwrap();
    let (tpm_host, token_host) = text.split_once("# A host without a TPM").unwrap();
    let uncomment = |t: &str| -> String {
        t.lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.starts_with('[') || rest.contains(" = ") => rest,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    let token = tpm_host
        .lines()
        .filter(|l| !l.starts_with("group"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        + &uncomment(&format!("#{token_host}"));
    std::fs::write(&path, token).unwrap();
    let agent = AgentConfig::load(&path).unwrap();
    let api = agent.workload_api.unwrap();
    assert_eq!(api.socket, Path::new("/run/zeroth-agent/api.sock"));
    assert_eq!(api.allow_uids, [1001]);
    assert_eq!(api.roles["1002"], ["app-ro"]);
    std::fs::write(&path, uncomment(tpm_host)).unwrap();
    let agent = AgentConfig::load(&path).unwrap();
    assert_eq!(
        agent
            .ssh
            .certificate_path(Path::new("/etc/ssh/ssh_host_ed25519_key.pub")),
        Path::new("/etc/ssh/zeroth/ssh_host_ed25519_key-cert.pub")
    );
}

#[test]
fn workload_api_roles_are_keyed_by_numeric_uids_and_units_by_service() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        "server = \"https://z:8443\"\nca_bundle = \"/ca.pem\"\ngroup = \"edge\"\n[workload_api.roles]\nalice = [\"app-ro\"]\n",
    )
    .unwrap();
    let e = AgentConfig::load(&path).unwrap_err().to_string();
    assert!(
        e.contains("workload_api.roles") && e.contains("numeric uids"),
        "{e}"
    );
    let head = "server = \"https://z:8443\"\nca_bundle = \"/ca.pem\"\ngroup = \"edge\"\n[workload_api.units]\n";
    std::fs::write(&path, format!("{head}\"shop\" = [\"app-ro\"]\n")).unwrap();
    let e = AgentConfig::load(&path).unwrap_err().to_string();
    assert!(
        e.contains("workload_api.units") && e.contains("systemd services"),
        "{e}"
    );
    std::fs::write(&path, format!("{head}\"shop.service\" = [\"app-ro\"]\n")).unwrap();
    let c = AgentConfig::load(&path).unwrap();
    assert_eq!(c.workload_api.unwrap().units["shop.service"], ["app-ro"]);
}

const GOOD: &str = r#"
listen = "127.0.0.1:8443"
trust_domain = "example.org"
state_dir = "/var/lib/zeroth"
tls_names = ["localhost", "127.0.0.1"]

[hsm]
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "zeroth"
pin_file = "/etc/zeroth/hsm.pin"

[[group]]
name = "edge"
ek_roots = "/etc/zeroth/ek-roots"
auto_approve = true
svid_ttl = "30m"
"#;

#[test]
fn a_good_config_loads_with_defaults() {
    let c = ServerConfig::parse(GOOD, "server.toml").unwrap();
    let g = c.group("edge").unwrap();
    assert_eq!(g.pcrs, (0..8).collect::<Vec<_>>());
    assert_eq!(g.svid_ttl, Duration::from_secs(1800));
}

#[test]
fn errors_name_the_key_and_the_fix() {
    let cases = [
        (GOOD.replace("example.org", "Example.ORG"), "trust_domain"),
        (
            GOOD.replace("pin_file = \"/etc/zeroth/hsm.pin\"", ""),
            "hsm.pin_file",
        ),
        (
            GOOD.replace("ek_roots = \"/etc/zeroth/ek-roots\"", ""),
            "group[0].ek_roots",
        ),
        (GOOD.replace("\"30m\"", "\"soon\""), "not a duration"),
        (GOOD.replace("listen =", "lisen ="), "unknown field `lisen`"),
        (
            format!(
                "{GOOD}\n[group.pcr_policy]\n\"sha256:9\" = \"{}\"\n",
                "00".repeat(32)
            ),
            "does not quote",
        ),
        (
            format!("{GOOD}\n[[ssh_role]]\nname = \"ops/admin\"\nprincipals = [\"ops\"]\nallow_groups = [\"edge\"]\n"),
            "ssh_role[0].name",
        ),
        (
            format!("{GOOD}\n[[ssh_role]]\nname = \"ops\"\nprincipals = [\"ops\"]\nallow_groups = [\"edge\"]\n\n[[ssh_role]]\nname = \"ops\"\nprincipals = [\"root\"]\nallow_groups = [\"edge\"]\n"),
            "\"ops\" is used twice",
        ),
    ];
    for (text, want) in cases {
        let err = ServerConfig::parse(&text, "server.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "expected {want:?} in: {err}");
    }
}

#[test]
fn an_agent_has_a_group_or_a_token_file_not_both() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    let base = "server = \"https://z:8443\"\nca_bundle = \"/etc/zeroth/ca.pem\"\n";
    for (extra, ok) in [
        ("group = \"edge\"", true),
        ("token_file = \"/run/credentials/t\"", true),
        ("", false),
        ("group = \"edge\"\ntoken_file = \"/t\"", false),
    ] {
        std::fs::write(&path, format!("{base}{extra}\n")).unwrap();
        let got = AgentConfig::load(&path);
        assert_eq!(got.is_ok(), ok, "{extra}: {got:?}");
        if let Err(e) = got {
            assert!(e.to_string().contains("token_file"), "{e}");
        }
    }
}

/// The keys a configuration table accepts, read off serde's refusal of a
/// key it does not know ("unknown field `x`, expected one of `a`, `b`").
fn keys_of<T: serde::de::DeserializeOwned>() -> Vec<String> {
    let refusal = match toml::from_str::<T>("zz_not_a_key = 0") {
        Ok(_) => panic!("an unknown key was accepted"),
        Err(e) => e.to_string(),
    };
    let expected = refusal
        .split_once("expected")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no key list in {refusal:?}"));
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The keys the reference lists under `## <file>`: the first cell of each
/// table row.
fn documented(reference: &str, file: &str) -> std::collections::BTreeSet<String> {
    let section = reference
        .split("\n## ")
        .find(|s| s.starts_with(file))
        .unwrap_or_else(|| panic!("no section for {file} in docs/configuration.md"));
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(k, _)| k.to_owned()))
        .collect()
}

#[test]
fn the_configuration_reference_lists_every_key_and_no_other() {
    let reference = include_str!("../../docs/configuration.md");
    let prefixed = |prefix: &str, keys: Vec<String>| -> Vec<String> {
        keys.into_iter().map(|k| format!("{prefix}{k}")).collect()
    };
    let server: std::collections::BTreeSet<String> = [
        prefixed("", keys_of::<ServerConfig>()),
        prefixed("hsm.", keys_of::<server::HsmConfig>()),
        prefixed("store.", keys_of::<server::StoreConfig>()),
        prefixed("enrolment_limits.", keys_of::<server::EnrolmentLimits>()),
        prefixed("group.", keys_of::<server::GroupConfig>()),
        prefixed("db_role.", keys_of::<roles::DbRoleConfig>()),
        prefixed("ssh_role.", keys_of::<roles::SshRoleConfig>()),
    ]
    .concat()
    .into_iter()
    .collect();
    let agent: std::collections::BTreeSet<String> = [
        prefixed("", keys_of::<AgentConfig>()),
        prefixed("ssh.", keys_of::<agent::AgentSshConfig>()),
        prefixed("workload_api.", keys_of::<agent::WorkloadApiConfig>()),
        prefixed("proxy.", keys_of::<ProxyConfig>()),
    ]
    .concat()
    .into_iter()
    .collect();
    assert!(server.contains("group.ek_allow") && agent.contains("proxy.connect_to"));
    for (file, keys) in [("server.toml", server), ("agent.toml", agent)] {
        let listed = documented(reference, file);
        let missing: Vec<_> = keys.difference(&listed).collect();
        let stale: Vec<_> = listed.difference(&keys).collect();
        assert!(
            missing.is_empty() && stale.is_empty(),
            "docs/configuration.md, {file}: missing {missing:?}; no longer keys {stale:?}"
        );
    }
}
