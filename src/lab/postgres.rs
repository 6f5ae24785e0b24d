//! A private PostgreSQL server with SCRAM-SHA-256 password authentication.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use rustix::process::Signal;
use secrecy::{ExposeSecret, SecretString};

use super::process::{run, Daemon};
use super::tools::{INITDB, PG_ISREADY, POSTGRES};
use super::{accounts, ports, random_password, version_of, wait, LabDir, LabError, PORT_ATTEMPTS};

/// The superuser the lab creates.
pub const SUPERUSER: &str = "postgres";

/// A database for a zeroth store on the lab's server.
#[derive(Debug, Clone)]
pub struct StoreDatabase {
    pub url: String,
    pub password_file: PathBuf,
}

impl StoreDatabase {
    /// The `[store]` table for server.toml.
    pub fn toml(&self) -> String {
        format!(
            "[store]\nurl = \"{}\"\npassword_file = \"{}\"\n",
            self.url,
            self.password_file.display()
        )
    }
}

/// A running PostgreSQL cluster on a random loopback port.
#[derive(Debug)]
pub struct Postgres {
    daemon: Daemon,
    port: u16,
    password: SecretString,
    tls: super::tls::LabTls,
    socket_dir: PathBuf,
    version: String,
    _dir: LabDir,
}

impl Postgres {
    pub fn start() -> Result<Self, LabError> {
        Self::start_with(&[])
    }

    /// A primary with a streaming standby (pg_basebackup), replicating
    /// synchronously: a commit the primary acknowledged is on the standby.
    /// The standby is a copy: same superuser password, same TLS CA.
    pub fn start_replicated() -> Result<(Self, Self), LabError> {
        let primary = Self::start_with(&["synchronous_commit=on", "synchronous_standby_names=*"])?;
        let owner = accounts::unprivileged()?;
        let dir = LabDir::new("postgres-standby")?;
        let home = dir.subdir("pg", 0o700)?;
        owner.chown(&home)?;
        let data = home.join("data");
        let socket_dir = home.join("sock");
        std::fs::create_dir(&socket_dir)
            .map_err(|e| LabError::io("create the socket directory", e))?;
        owner.chown(&socket_dir)?;
        let mut cmd = Command::new(super::tools::PG_BASEBACKUP.path()?);
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &primary.port.to_string(),
            "-U",
            SUPERUSER,
            "-D",
        ])
        .arg(&data)
        .args(["-R", "-X", "stream", "-c", "fast"])
        .env("PGPASSWORD", primary.password.expose_secret())
        .current_dir(&home);
        owner.apply(&mut cmd);
        run("copy the primary for a standby (pg_basebackup)", &mut cmd)?;
        let (mut daemon, port) = serve(&dir, &owner, &home, &data, &socket_dir, &primary.tls, &[])?;
        // The primary waits for its standby from here on.
        wait::until(
            "the standby streaming",
            &mut daemon,
            Duration::from_secs(30),
            || {
                let n = primary
                    .run_sql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
                    .ok()?;
                (n.trim() == "1").then_some(())
            },
        )?;
        let standby = Self {
            daemon,
            port,
            password: primary.password.clone(),
            tls: primary.tls.clone(),
            socket_dir,
            version: primary.version.clone(),
            _dir: dir,
        };
        Ok((primary, standby))
    }

    /// Makes a standby the primary (`pg_promote`), once it has.
    pub fn promote(&self) -> Result<(), LabError> {
        let done = self.run_sql("SELECT pg_promote(true, 30)")?;
        if done.trim() != "t" {
            return Err(LabError::Unsupported(format!(
                "the standby was not promoted: {done}"
            )));
        }
        Ok(())
    }

    /// A server with `settings` (`name=value`) on top of the lab's.
    fn start_with(settings: &[&str]) -> Result<Self, LabError> {
        let initdb = INITDB.path()?;
        let postgres = POSTGRES.path()?;
        PG_ISREADY.path()?;
        let dir = LabDir::new("postgres")?;
        // initdb refuses to run as root: the cluster belongs to an unprivileged account.
        let owner = accounts::unprivileged()?;
        let home = dir.subdir("pg", 0o700)?;
        owner.chown(&home)?;
        let socket_dir = home.join("sock");
        let data = home.join("data");
        let password = random_password();
        let pwfile = dir.write_private("pg/pwfile", password.expose_secret().as_bytes())?;
        owner.chown(&pwfile)?;
        let mut cmd = Command::new(&initdb);
        cmd.arg("-D")
            .arg(&data)
            .args([
                "-U",
                SUPERUSER,
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .current_dir(&home);
        owner.apply(&mut cmd);
        run("initialise the PostgreSQL cluster (initdb)", &mut cmd)?;
        std::fs::remove_file(&pwfile)
            .map_err(|e| LabError::io("remove the initdb password file", e))?;
        std::fs::create_dir(&socket_dir)
            .map_err(|e| LabError::io("create the socket directory", e))?;
        owner.chown(&socket_dir)?;
        let version = version_of(&postgres, "--version")?;
        // TLS offered (not required), with a certificate from a lab CA.
        let tls = super::tls::server_certificate(&dir, "pg")?;
        owner.chown(&tls.key)?;
        let (daemon, port) = serve(&dir, &owner, &home, &data, &socket_dir, &tls, settings)?;
        Ok(Self {
            daemon,
            port,
            password,
            tls,
            socket_dir,
            version,
            _dir: dir,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's password.
    pub fn password(&self) -> &SecretString {
        &self.password
    }

    /// The superuser's password in a file only its owner can read, in the
    /// server's own directory (for `zeroth db connection create … < FILE`).
    pub fn password_file(&self) -> Result<PathBuf, LabError> {
        use secrecy::ExposeSecret;
        self._dir
            .write_private("admin.password", self.password.expose_secret().as_bytes())
    }

    /// A libpq connection string without the password (pass it as `PGPASSWORD`).
    pub fn conninfo(&self, user: &str, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} dbname={dbname} sslmode=disable",
            self.port
        )
    }

    /// The CA (PEM) the server's TLS certificate chains to.
    pub fn tls_ca(&self) -> &std::path::Path {
        self.tls.ca()
    }

    pub fn socket_dir(&self) -> &std::path::Path {
        &self.socket_dir
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn pid(&self) -> Option<u32> {
        Some(self.daemon.pid())
    }

    /// Runs `sql` as the superuser with psql (the statements on standard
    /// input, so passwords in them never show in argv); psql's output.
    pub fn run_sql(&self, sql: &str) -> Result<String, LabError> {
        let mut cmd = Command::new(super::tools::PSQL.path()?);
        cmd.arg(self.conninfo(SUPERUSER, "postgres"))
            .args(["-XAtq", "-v", "ON_ERROR_STOP=1"])
            .env("PGPASSWORD", self.password.expose_secret());
        super::process::run_with_input("psql", &mut cmd, sql.as_bytes())
    }

    /// A database `name` owned by a login role of the same name, for a
    /// zeroth store; its password in a private file under `dir`.
    pub fn zeroth_store(&self, dir: &LabDir, name: &str) -> Result<StoreDatabase, LabError> {
        let password = random_password();
        self.run_sql(&format!(
            "CREATE ROLE {name} LOGIN PASSWORD '{}';\nCREATE DATABASE {name} OWNER {name};",
            password.expose_secret()
        ))?;
        let password_file = dir.write_private(
            &format!("{name}.password"),
            password.expose_secret().as_bytes(),
        )?;
        Ok(StoreDatabase {
            url: format!("postgres://{name}@127.0.0.1:{}/{name}", self.port),
            password_file,
        })
    }

    /// Stops the server (the database going away under zeroth).
    pub fn stop(&mut self) {
        self.daemon.stop(Duration::from_secs(10));
    }
}

/// Runs `postgres` on `data` on a free loopback port; `settings` on top
/// of the lab's (speed over durability, TLS offered).
fn serve(
    dir: &LabDir,
    owner: &accounts::Unprivileged,
    home: &std::path::Path,
    data: &std::path::Path,
    socket_dir: &std::path::Path,
    tls: &super::tls::LabTls,
    settings: &[&str],
) -> Result<(Daemon, u16), LabError> {
    let postgres = POSTGRES.path()?;
    let mut last = None;
    for _ in 0..PORT_ATTEMPTS {
        let port = ports::free_port()?;
        let mut cmd = Command::new(&postgres);
        cmd.arg("-D")
            .arg(data)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-p",
                &port.to_string(),
                "-k",
            ])
            .arg(socket_dir)
            // Durability is not under test here; speed is.
            .args([
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "ssl=on",
            ])
            .arg("-c")
            .arg(format!("ssl_cert_file={}", tls.cert.display()))
            .arg("-c")
            .arg(format!("ssl_key_file={}", tls.key.display()));
        // Commits wait for nothing unless asked (a replicated primary).
        if !settings
            .iter()
            .any(|s| s.starts_with("synchronous_commit="))
        {
            cmd.args(["-c", "synchronous_commit=off"]);
        }
        for s in settings {
            cmd.args(["-c", s]);
        }
        cmd.current_dir(home);
        owner.apply(&mut cmd);
        // SIGINT is PostgreSQL's "fast" shutdown: roll back and disconnect clients.
        let mut daemon = Daemon::spawn("postgres", cmd, &dir.join("postgres.log"), Signal::INT)?;
        let ready = wait::until("postgres", &mut daemon, Duration::from_secs(30), || {
            Command::new(PG_ISREADY.path().ok()?)
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string(), "-t", "1"])
                .status()
                .ok()
                .filter(|s| s.success())
        });
        match ready {
            Ok(_) => return Ok((daemon, port)),
            Err(e) if ports::lost_port_race(&e.to_string()) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(LabError::Spawner))
}
