//! The system programs the lab runs, and the Debian package for each.

use std::path::{Path, PathBuf};

use super::LabError;

/// A program the lab needs, where Debian installs it, and the package that does.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    pub name: &'static str,
    pub package: &'static str,
    /// Absolute path where the package installs it, when it is not on PATH.
    pub fixed_path: Option<&'static str>,
}

macro_rules! tool {
    ($ident:ident, $name:literal, $pkg:literal) => {
        pub const $ident: Tool = Tool {
            name: $name,
            package: $pkg,
            fixed_path: None,
        };
    };
    ($ident:ident, $name:literal, $pkg:literal, $path:literal) => {
        pub const $ident: Tool = Tool {
            name: $name,
            package: $pkg,
            fixed_path: Some($path),
        };
    };
}

tool!(SWTPM, "swtpm", "swtpm");
tool!(SWTPM_SETUP, "swtpm_setup", "swtpm-tools");
tool!(
    SWTPM_LOCALCA,
    "swtpm_localca",
    "swtpm-tools",
    "/usr/bin/swtpm_localca"
);
tool!(CERTTOOL, "certtool", "gnutls-bin");
tool!(OPENSSL, "openssl", "openssl");
tool!(TPM2_PCREXTEND, "tpm2_pcrextend", "tpm2-tools");
tool!(SOFTHSM2_UTIL, "softhsm2-util", "softhsm2");
tool!(
    SOFTHSM2_MODULE,
    "libsofthsm2.so",
    "softhsm2",
    "/usr/lib/softhsm/libsofthsm2.so"
);
tool!(PKCS11_TOOL, "pkcs11-tool", "opensc");
tool!(
    INITDB,
    "initdb",
    "postgresql",
    "/usr/lib/postgresql/15/bin/initdb"
);
tool!(
    POSTGRES,
    "postgres",
    "postgresql",
    "/usr/lib/postgresql/15/bin/postgres"
);
tool!(PSQL, "psql", "postgresql-client");
tool!(PG_ISREADY, "pg_isready", "postgresql-client");
tool!(PG_BASEBACKUP, "pg_basebackup", "postgresql-client");
tool!(MARIADB_INSTALL_DB, "mariadb-install-db", "mariadb-server");
tool!(MARIADBD, "mariadbd", "mariadb-server", "/usr/sbin/mariadbd");
tool!(MARIADB, "mariadb", "mariadb-client");
tool!(SSHD, "sshd", "openssh-server", "/usr/sbin/sshd");
tool!(SSH, "ssh", "openssh-client");
tool!(SSH_KEYGEN, "ssh-keygen", "openssh-client");
tool!(SYSTEMD_ANALYZE, "systemd-analyze", "systemd");
// Debian's own interpreter, where its python3-* driver packages live.
tool!(DEBIAN_PYTHON3, "python3", "python3", "/usr/bin/python3");
tool!(
    PGBENCH,
    "pgbench",
    "postgresql",
    "/usr/lib/postgresql/15/bin/pgbench"
);
tool!(SYSBENCH, "sysbench", "sysbench");

impl Tool {
    /// The program's absolute path, or an error naming the package to install.
    pub fn path(&self) -> Result<PathBuf, LabError> {
        if let Some(p) = self.fixed_path {
            let p = Path::new(p);
            if p.is_file() {
                return Ok(p.to_owned());
            }
        }
        if let Some(found) = search_path(self.name) {
            return Ok(found);
        }
        Err(LabError::MissingTool {
            name: self.name,
            package: self.package,
        })
    }
}

fn search_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_names_its_package() {
        let t = Tool {
            name: "zeroth-no-such-program",
            package: "zeroth-no-such-package",
            fixed_path: None,
        };
        let err = t.path().unwrap_err().to_string();
        assert!(err.contains("zeroth-no-such-program"), "{err}");
        assert!(
            err.contains("apt-get install zeroth-no-such-package"),
            "{err}"
        );
    }
}
