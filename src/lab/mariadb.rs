//! A private MariaDB server with a root password and the event scheduler on.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rustix::process::Signal;
use secrecy::{ExposeSecret, SecretString};

use super::process::{run, Daemon};
use super::tools::{MARIADB, MARIADBD, MARIADB_INSTALL_DB};
use super::{ports, random_password, version_of, wait, LabDir, LabError, PORT_ATTEMPTS};

/// A running MariaDB server on a random loopback port.
#[derive(Debug)]
pub struct MariaDb {
    daemon: Daemon,
    port: u16,
    socket: PathBuf,
    password: SecretString,
    version: String,
    tls_ca: PathBuf,
    dir: LabDir,
}

impl MariaDb {
    pub fn start() -> Result<Self, LabError> {
        let install_db = MARIADB_INSTALL_DB.path()?;
        let mariadbd = MARIADBD.path()?;
        MARIADB.path()?;
        let dir = LabDir::new("mariadb")?;
        let data = dir.subdir("data", 0o700)?;
        // Concurrent servers sharing /tmp collide on temporary table names
        // (install-db then fails with "Unknown table 'mysql.tmp_user_sys'").
        let tmp = dir.subdir("tmp", 0o700)?;
        let socket = dir.join("mysqld.sock");
        let tls = super::tls::server_certificate(&dir, "tls")?;
        // As root, mariadbd must be told explicitly that root is intended.
        let user = match rustix::process::geteuid().is_root() {
            true => "root".to_owned(),
            false => std::env::var("USER").unwrap_or_else(|_| "mysql".into()),
        };
        run(
            "initialise the MariaDB data directory (mariadb-install-db)",
            Command::new(&install_db)
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--user={user}"))
                .arg(format!("--tmpdir={}", tmp.display()))
                .args([
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                    "--skip-name-resolve",
                ]),
        )?;
        let version = version_of(&mariadbd, "--version")?;

        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = ports::free_port()?;
            let mut cmd = Command::new(&mariadbd);
            cmd.arg("--no-defaults")
                .arg(format!("--user={user}"))
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--socket={}", socket.display()))
                .arg(format!("--tmpdir={}", tmp.display()))
                .arg(format!("--ssl-cert={}", tls.cert.display()))
                .arg(format!("--ssl-key={}", tls.key.display()))
                .arg(format!("--port={port}"))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
                .arg(format!("--log-error={}", dir.join("err.log").display()))
                .args([
                    "--skip-name-resolve",
                    "--event-scheduler=ON",
                    "--innodb-buffer-pool-size=64M",
                    "--innodb-flush-log-at-trx-commit=0",
                    "--skip-log-bin",
                ]);
            let mut daemon =
                Daemon::spawn("mariadbd", cmd, &dir.join("mariadbd.out"), Signal::TERM)?;
            let ready = wait::until("mariadbd", &mut daemon, Duration::from_secs(30), || {
                socket_query(&socket, "SELECT 1").ok()
            });
            match ready {
                Ok(_) => {
                    let password = random_password();
                    let mut db = Self {
                        daemon,
                        port,
                        socket,
                        password,
                        version,
                        tls_ca: tls.ca.clone(),
                        dir,
                    };
                    db.secure_root()?;
                    return Ok(db);
                }
                Err(e) => {
                    let log = process_log(&dir);
                    if ports::lost_port_race(&format!("{e}{log}")) {
                        last = Some(e);
                    } else {
                        return Err(e);
                    }
                }
            }
        }
        Err(last.unwrap_or(LabError::Spawner))
    }

    /// mariadb-install-db leaves password-less root accounts for every local
    /// host name: give the two the lab uses a password and delete the rest.
    fn secure_root(&mut self) -> Result<(), LabError> {
        let pw = self.password.expose_secret();
        let sql = format!(
            "ALTER USER 'root'@'localhost' IDENTIFIED BY '{pw}';\
             CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '{pw}';\
             ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '{pw}';\
             GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;\
             DELETE FROM mysql.global_priv WHERE user='root' AND host NOT IN ('localhost','127.0.0.1');\
             DELETE FROM mysql.global_priv WHERE user='';\
             FLUSH PRIVILEGES;"
        );
        // The client may quote the statement in an error: keep it out.
        socket_query(&self.socket, &sql)
            .map(|_| ())
            .map_err(|e| match e {
                LabError::Command { what, status, .. } => LabError::Command {
                    what,
                    status,
                    output: "(withheld: the statement sets the root password)".into(),
                },
                other => other,
            })
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (the database going away under zeroth).
    pub fn stop(&mut self) {
        self.daemon.stop(Duration::from_secs(10));
    }

    /// The unix socket path (root logs in over it with the password too).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// root's password.
    pub fn password(&self) -> &SecretString {
        &self.password
    }

    /// root's password in a file only its owner can read, in the server's
    /// own directory (for `zeroth db connection create … < FILE`).
    pub fn password_file(&self) -> Result<PathBuf, LabError> {
        use secrecy::ExposeSecret;
        self.dir
            .write_private("admin.password", self.password.expose_secret().as_bytes())
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn pid(&self) -> Option<u32> {
        Some(self.daemon.pid())
    }

    /// The CA (PEM) the server's TLS certificate chains to.
    pub fn tls_ca(&self) -> &Path {
        &self.tls_ca
    }

    pub fn error_log(&self) -> PathBuf {
        self.dir.join("err.log")
    }

    /// Runs SQL as root over TCP with the `mariadb` client, password via the
    /// environment of the child only. Returns tab-separated rows.
    pub fn query(&self, sql: &str) -> Result<String, LabError> {
        run(
            "mariadb query",
            Command::new(MARIADB.path()?)
                .args([
                    "--no-defaults",
                    "--protocol=TCP",
                    "-h",
                    "127.0.0.1",
                    "-uroot",
                    "-N",
                    "-B",
                ])
                .arg(format!("-P{}", self.port))
                .env("MYSQL_PWD", self.password.expose_secret())
                .arg("-e")
                .arg(sql),
        )
    }
}

/// Runs SQL as root over the socket before root has a password.
/// The SQL goes on standard input, never argv.
fn socket_query(socket: &Path, sql: &str) -> Result<String, LabError> {
    super::process::run_with_input(
        "mariadb query over the socket",
        Command::new(MARIADB.path()?)
            .args(["--no-defaults", "-uroot", "-N", "-B"])
            .arg(format!("--socket={}", socket.display())),
        sql.as_bytes(),
    )
}

fn process_log(dir: &LabDir) -> String {
    super::process::log_tail(&dir.join("err.log"), 20)
}
