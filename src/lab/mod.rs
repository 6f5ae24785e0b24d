//! A private bench of the real parts zeroth works with: a TPM 2.0 (swtpm), a
//! PKCS#11 token (SoftHSM2), PostgreSQL, MariaDB and an OpenSSH server.
//!
//! Each component runs in its own temporary directory, listens on a random
//! loopback port, and is stopped (with every process it forked) when its
//! handle is dropped. Integration tests and `zeroth demo` both start their
//! parts from here, so they exercise the same paths.

mod accounts;
pub mod agent;
mod bench;
pub mod clients;
mod dir;
mod error;
pub mod event_log;
pub mod groups;
pub mod mariadb;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod relay;
mod service_cgroup;
pub mod softhsm;
pub mod sshd;
pub mod swtpm;
pub mod tls;
pub mod tools;
pub mod vm;
pub mod wait;
pub mod zeroth_server;

pub use accounts::{current_user_name, RunnableCopy};
pub use agent::AgentProcess;
pub use bench::{Bench, Component};
pub use dir::LabDir;
pub use error::LabError;
pub use mariadb::MariaDb;
pub use postgres::Postgres;
pub use service_cgroup::ServiceCgroup;
pub use softhsm::SoftHsm;
pub use sshd::{Sshd, SshdOptions};
pub use swtpm::Swtpm;
pub use zeroth_server::ZerothServer;

use secrecy::SecretString;

/// How many times a component retries its start after losing a port race.
const PORT_ATTEMPTS: usize = 5;

/// A random password for a lab account: 32 alphanumeric characters from the OS CSPRNG.
pub fn random_password() -> SecretString {
    use rand::distr::{Alphanumeric, SampleString};
    SecretString::from(Alphanumeric.sample_string(&mut rand::rng(), 32))
}

/// First line of a program's `--version` style output, trimmed.
fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().trim().to_owned()
}

/// The version number a program prints for `arg` (`--version`, `-V`), from
/// stdout or stderr: "TPM emulator version 0.7.1, …" gives "0.7.1".
fn version_of(program: &std::path::Path, arg: &str) -> Result<String, LabError> {
    let out = std::process::Command::new(program)
        .arg(arg)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| LabError::io(format!("run {} {arg}", program.display()), e))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = first_line(&text);
    Ok(version_number(&line).unwrap_or(line))
}

fn version_number(line: &str) -> Option<String> {
    line.split(|c: char| c.is_whitespace() || c == '_' || c == ',')
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()) && w.contains('.'))
        .map(|w| w.split('-').next().unwrap_or(w).to_owned())
}

#[cfg(test)]
mod tests {
    use super::version_number;

    #[test]
    fn version_numbers_are_found_in_each_tools_banner() {
        for (line, want) in [
            (
                "TPM emulator version 0.7.1, Copyright (c) 2014-2021 IBM Corp.",
                "0.7.1",
            ),
            (
                "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)",
                "15.18",
            ),
            (
                "/usr/sbin/mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu",
                "10.11.19",
            ),
            ("OpenSSH_9.2, OpenSSL 3.0.19 27 Jan 2026", "9.2"),
            ("2.6.1", "2.6.1"),
        ] {
            assert_eq!(version_number(line).as_deref(), Some(want), "{line}");
        }
        assert_eq!(version_number("no version here"), None);
    }
}
