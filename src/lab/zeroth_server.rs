//! A real `zeroth server` process on the lab: its HSM is the lab's SoftHSM
//! token, its TPM manufacturer roots are whatever the caller trusts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rustix::process::Signal;

use super::process::Daemon;
use super::{wait, LabDir, LabError, SoftHsm};

/// The trust domain lab servers use.
pub const TRUST_DOMAIN: &str = "lab.zeroth";

/// A running zeroth server.
#[derive(Debug)]
pub struct ZerothServer {
    daemon: Daemon,
    url: String,
    state_dir: PathBuf,
    config: PathBuf,
    launch: Launch,
    dir: LabDir,
}

/// How to (re)start the server process.
#[derive(Debug)]
struct Launch {
    exe: PathBuf,
    config: PathBuf,
    args: Vec<String>,
    softhsm_conf: PathBuf,
    log: PathBuf,
    /// Extra environment for the next starts.
    env: Vec<(String, String)>,
}

/// `ZEROTH_LAB_SERVER_ENV="K=V K2=V2"`: environment for the lab's zeroth
/// servers alone, not for the clients and databases around them (a heap
/// profiler's `LD_PRELOAD`, say, when a bench runs).
fn extra_server_env() -> Vec<(String, String)> {
    std::env::var("ZEROTH_LAB_SERVER_ENV")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

impl Launch {
    fn run(&self) -> Result<(Daemon, String), LabError> {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("server")
            .arg("--config")
            .arg(&self.config)
            .args(&self.args)
            .env("SOFTHSM2_CONF", &self.softhsm_conf)
            .env("ZEROTH_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(extra_server_env());
        let mut daemon = Daemon::spawn("zeroth server", cmd, &self.log, Signal::TERM)?;
        let log = &self.log;
        let url = wait::until(
            "zeroth server",
            &mut daemon,
            Duration::from_secs(30),
            || {
                let text = std::fs::read_to_string(log).ok()?;
                text.lines()
                    .find_map(|l| l.strip_prefix("zeroth server listening on "))
                    .map(|u| u.trim().to_owned())
            },
        )?;
        Ok((daemon, url))
    }
}

impl ZerothServer {
    /// Starts `exe server` with `groups` (TOML `[[group]]` tables) and the
    /// lab token as its HSM; returns once it listens.
    pub fn start(exe: &Path, hsm: &SoftHsm, groups: &str) -> Result<Self, LabError> {
        Self::start_with(exe, hsm, groups, &[])
    }

    /// As [`ZerothServer::start`], with extra `zeroth server` arguments.
    pub fn start_with(
        exe: &Path,
        hsm: &SoftHsm,
        groups: &str,
        args: &[&str],
    ) -> Result<Self, LabError> {
        Self::start_configured(exe, hsm, "", groups, args)
    }

    /// As [`ZerothServer::start_with`], with extra top-level `settings`
    /// (TOML lines such as `jwt_max_ttl = "1m"`).
    pub fn start_configured(
        exe: &Path,
        hsm: &SoftHsm,
        settings: &str,
        groups: &str,
        args: &[&str],
    ) -> Result<Self, LabError> {
        Configured::new(exe, hsm, settings, groups, args)?.launch()
    }

    /// As [`ZerothServer::start_configured`], in `trust_domain` instead of
    /// the lab's.
    pub fn start_in_domain(
        exe: &Path,
        hsm: &SoftHsm,
        trust_domain: &str,
        settings: &str,
        groups: &str,
    ) -> Result<Self, LabError> {
        let mut configured = Configured::new(exe, hsm, settings, groups, &[])?;
        configured.config = configured.config.replace(
            &format!("trust_domain = \"{TRUST_DOMAIN}\""),
            &format!("trust_domain = \"{trust_domain}\""),
        );
        std::fs::write(&configured.config_path, &configured.config)
            .map_err(|e| LabError::io("write the server configuration", e))?;
        configured.launch()
    }

    /// A new server started on a copy of the store file `store` (a state
    /// directory written by another version of zeroth: the server migrates
    /// it as it starts).
    pub fn start_on_store(
        exe: &Path,
        hsm: &SoftHsm,
        groups: &str,
        store: &Path,
    ) -> Result<Self, LabError> {
        let configured = Configured::new(exe, hsm, "", groups, &[])?;
        std::fs::copy(store, configured.state_dir.join("zeroth.db"))
            .map_err(|e| LabError::io("copy the store into the state directory", e))?;
        configured.launch()
    }

    /// A new server whose store is `backup`, put in place by
    /// `zeroth restore` (which checks it against `hsm`'s token) before the
    /// server starts. Returns what restore printed; a refused restore is an
    /// error carrying its message, and starts nothing.
    pub fn start_from_backup(
        exe: &Path,
        hsm: &SoftHsm,
        groups: &str,
        backup: &Path,
    ) -> Result<(Self, String), LabError> {
        let configured = Configured::new(exe, hsm, "", groups, &[])?;
        let printed = configured.restore(backup)?;
        Ok((configured.launch()?, printed))
    }

    /// Stops the server and starts it again on the same configuration,
    /// port, state and HSM keys.
    pub fn restart(&mut self) -> Result<(), LabError> {
        self.stop();
        self.resume()
    }

    /// As [`ZerothServer::restart`], with `env` set for this and later starts.
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) -> Result<(), LabError> {
        self.stop();
        self.launch.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.resume()
    }

    /// Whether the server process has exited (crashed, or was stopped).
    pub fn exited(&mut self) -> bool {
        self.daemon.exited().is_some()
    }

    /// Starts a [stopped](ZerothServer::stop) server again, on the same port.
    pub fn resume(&mut self) -> Result<(), LabError> {
        let (daemon, url) = self.launch.run()?;
        self.daemon = daemon;
        self.url = url;
        Ok(())
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The CA bundle (PEM) agents trust.
    pub fn bundle(&self) -> PathBuf {
        self.state_dir.join("bundle.pem")
    }

    /// The operators' admin socket.
    pub fn admin_socket(&self) -> PathBuf {
        self.state_dir.join("admin.sock")
    }

    /// The server's database.
    pub fn database(&self) -> PathBuf {
        self.state_dir.join("zeroth.db")
    }

    /// The details of the audit events of `kind` among the last 100, oldest
    /// first (read from the live database).
    pub fn audit_details(&self, kind: &str) -> Result<Vec<serde_json::Value>, LabError> {
        let failed = |e: String| LabError::NotReady {
            what: "the server's audit log".into(),
            after: std::time::Duration::ZERO,
            log: e,
        };
        let config =
            crate::config::ServerConfig::load(&self.config).map_err(|e| failed(e.to_string()))?;
        let at = config.store_location().map_err(|e| failed(e.to_string()))?;
        let store = crate::store::Store::open_at(&at).map_err(|e| failed(e.to_string()))?;
        let events = crate::audit::tail(&store.lock(), 100).map_err(|e| failed(e.to_string()))?;
        Ok(events
            .into_iter()
            .filter(|e| e.kind == kind)
            .filter_map(|e| serde_json::from_str(&e.detail).ok())
            .collect())
    }

    /// The server's configuration file (for `zeroth audit --config`).
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// Stops the server gracefully (it signs a last audit checkpoint), keeping
    /// its state directory for inspection.
    pub fn stop(&mut self) {
        self.daemon.stop(Duration::from_secs(10));
    }

    /// SIGKILLs the server: no graceful shutdown, no last checkpoint.
    pub fn kill(&mut self) {
        self.daemon.kill();
    }

    /// Whether this server has said it runs the cluster's jobs (it leads
    /// the servers sharing its store).
    pub fn runs_cluster_jobs(&self) -> bool {
        self.log()
            .contains("this server now runs the cluster's jobs")
    }

    /// SIGKILLs this server and waits (up to `within`) until `heir` says it
    /// runs the cluster's jobs; how long that took.
    pub fn kill_and_wait_for(
        &mut self,
        heir: &ZerothServer,
        within: Duration,
    ) -> Result<Duration, LabError> {
        let killed = std::time::Instant::now();
        self.kill();
        while !heir.runs_cluster_jobs() {
            if killed.elapsed() > within {
                return Err(LabError::NotReady {
                    what: "another server taking the cluster's jobs over".into(),
                    after: within,
                    log: heir.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(killed.elapsed())
    }

    /// `zeroth db connection create NAME --engine postgres` for the lab's
    /// PostgreSQL `pg`, with its superuser as the admin.
    pub fn add_postgres(&self, name: &str, pg: &super::Postgres) -> Result<(), LabError> {
        use secrecy::ExposeSecret;
        let port = pg.port().to_string();
        let args = [
            "db",
            "connection",
            "create",
            name,
            "--engine",
            "postgres",
            "--port",
            &port,
            "--admin-user",
            super::postgres::SUPERUSER,
        ];
        let (ok, output) = self.cli(&args, &format!("{}\n", pg.password().expose_secret()))?;
        if !ok {
            return Err(LabError::Command {
                what: format!("zeroth {}", args.join(" ")),
                status: "failed".into(),
                output,
            });
        }
        Ok(())
    }

    /// Runs `zeroth ARGS --socket <admin socket>` with `stdin` fed in:
    /// whether it succeeded, and what it printed (stdout, then stderr).
    pub fn cli(&self, args: &[&str], stdin: &str) -> Result<(bool, String), LabError> {
        use std::io::Write;
        let mut child = Command::new(&self.launch.exe)
            .args(args)
            .arg("--socket")
            .arg(self.admin_socket())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| LabError::io("run zeroth", e))?;
        if let Some(mut input) = child.stdin.take() {
            input
                .write_all(stdin.as_bytes())
                .map_err(|e| LabError::io("feed zeroth", e))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| LabError::io("run zeroth", e))?;
        Ok((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.daemon.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        Some(self.daemon.pid())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A server's directory, configuration and launch, before it starts.
struct Configured {
    dir: LabDir,
    state_dir: PathBuf,
    config: String,
    config_path: PathBuf,
    launch: Launch,
}

impl Configured {
    fn new(
        exe: &Path,
        hsm: &SoftHsm,
        settings: &str,
        groups: &str,
        args: &[&str],
    ) -> Result<Self, LabError> {
        let dir = LabDir::new("zeroth-server")?;
        let state_dir = dir.subdir("state", 0o700)?;
        let config = format!(
            "listen = \"127.0.0.1:0\"\ntrust_domain = \"{TRUST_DOMAIN}\"\nstate_dir = \"{}\"\ntls_names = [\"localhost\", \"127.0.0.1\", \"10.0.2.2\"]\n{settings}\n\n[hsm]\nmodule = \"{}\"\ntoken_label = \"{}\"\npin_file = \"{}\"\n\n{groups}\n",
            state_dir.display(),
            hsm.module().display(),
            hsm.token_label(),
            hsm.pin_file().display()
        );
        let config_path = dir.write("server.toml", config.as_bytes(), 0o600)?;
        let launch = Launch {
            exe: exe.to_owned(),
            config: config_path.clone(),
            args: args.iter().map(|a| a.to_string()).collect(),
            softhsm_conf: hsm.conf().to_owned(),
            log: dir.join("server.log"),
            env: Vec::new(),
        };
        Ok(Self {
            dir,
            state_dir,
            config,
            config_path,
            launch,
        })
    }

    /// `zeroth restore BACKUP --config <this server's>`: what it printed.
    fn restore(&self, backup: &Path) -> Result<String, LabError> {
        let out = Command::new(&self.launch.exe)
            .arg("restore")
            .arg(backup)
            .arg("--config")
            .arg(&self.config_path)
            .env("SOFTHSM2_CONF", &self.launch.softhsm_conf)
            .output()
            .map_err(|e| LabError::io("run zeroth restore", e))?;
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            return Err(LabError::Command {
                what: "zeroth restore".into(),
                status: out.status.to_string(),
                output: printed,
            });
        }
        Ok(printed)
    }

    fn launch(self) -> Result<ZerothServer, LabError> {
        let (daemon, url) = self.launch.run()?;
        // Later starts reuse the port, so agents find the server again.
        let port = url.rsplit(':').next().unwrap_or("0");
        std::fs::write(
            &self.config_path,
            self.config
                .replace("127.0.0.1:0", &format!("127.0.0.1:{port}")),
        )
        .map_err(|e| LabError::io("rewrite the server configuration", e))?;
        Ok(ZerothServer {
            daemon,
            url,
            state_dir: self.state_dir,
            config: self.config_path,
            launch: self.launch,
            dir: self.dir,
        })
    }
}
