//! Server configuration the lab's tests, benches and demo share: a node
//! group trusting lab TPMs, and a read-only PostgreSQL role.

use super::{LabDir, LabError, Swtpm};

/// `[[db_role]] app-ro`: read-only users of the connection `pg`, for the
/// nodes of group `edge`.
pub const PG_READ_ONLY_ROLE: &str = r#"
[[db_role]]
name = "app-ro"
connection = "pg"
schema = "public"
access = "read-only"
default_ttl = "10m"
max_ttl = "1h"
allow_groups = ["edge"]
"#;

/// A `[[group]]` named `name` admitting the TPMs `tpms` by their EK
/// certificates (roots and intermediates copied into a directory of its
/// own: keep the returned one while the server runs).
pub fn trusting(
    name: &str,
    tpms: &[&Swtpm],
    auto_approve: bool,
) -> Result<(LabDir, String), LabError> {
    let dir = LabDir::new("ek-trust")?;
    let roots = dir.subdir("roots", 0o755)?;
    let mut intermediates = Vec::new();
    for (i, tpm) in tpms.iter().enumerate() {
        std::fs::copy(tpm.ca_root_pem(), roots.join(format!("root-{i}.pem")))
            .map_err(|e| LabError::io("copy a lab TPM's EK root", e))?;
        intermediates.extend(
            std::fs::read(tpm.ca_intermediate_pem())
                .map_err(|e| LabError::io("read a lab TPM's EK intermediate", e))?,
        );
    }
    let file = dir.write("intermediates.pem", &intermediates, 0o644)?;
    let toml = format!(
        "[[group]]\nname = \"{name}\"\nek_roots = \"{}\"\nek_intermediates = \"{}\"\nauto_approve = {auto_approve}\n",
        roots.display(),
        file.display()
    );
    Ok((dir, toml))
}
