//! The `zeroth` command line: one module per command group.

mod admin_socket;
mod agent;
mod asker;
mod audit;
mod backup;
mod db;
mod db_creds;
#[cfg(feature = "lab")]
mod dev;
mod entry;
mod hsm;
mod node;
mod printable;
mod server;
mod ssh;
mod store;
mod token;
mod tpm;
mod workload;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// zeroth gives machines a hardware-rooted identity and short-lived credentials.
///
/// Machines prove who they are with their TPM 2.0; every root key stays inside
/// a PKCS#11 HSM; in return machines and their workloads get an auto-rotating
/// identity and dynamic, short-lived PostgreSQL/MariaDB users and OpenSSH
/// certificates, so no durable secret sits on disk, in a config or in an
/// environment variable.
#[derive(Debug, Parser)]
#[command(name = "zeroth", version, about, long_about, propagate_version = true)]
#[command(
    after_long_help = "Exit codes: 0 success, 1 failure, 2 bad usage, 3 a verification that found tampering (audit verify)."
)]
#[cfg_attr(
    feature = "lab",
    command(after_help = "Start with `zeroth demo` to see every part working on a private lab.")
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a private lab (TPM, HSM, PostgreSQL, MariaDB, sshd), show zeroth
    /// working against it, and shut it all down.
    ///
    /// Everything runs on loopback in a temporary directory and is removed
    /// when the demo ends. Needs root (sshd) and the packages `make deps`
    /// installs.
    #[cfg(feature = "lab")]
    Demo(dev::demo::DemoArgs),
    /// Start the private lab and keep it running until Ctrl-C or end of input.
    ///
    /// Prints one line per component with what a client needs to reach it
    /// (address, TCTI, module and PIN file). For poking at the real parts by hand.
    #[cfg(feature = "lab")]
    Lab(dev::lab::LabArgs),
    /// Inspect the PKCS#11 HSM and create zeroth's standard keys in it.
    Hsm(hsm::HsmArgs),
    /// Run the zeroth server: TPM enrolment and identities over HTTPS, keys in the HSM.
    Server(server::ServerArgs),
    /// The machine side: enrol through the TPM.
    Agent(agent::AgentArgs),
    /// The node registry: list, show, approve, reject, revoke, readmit (admin socket).
    Node(node::NodeArgs),
    /// Rotating identity tokens for hosts without a TPM.
    Token(token::TokenArgs),
    /// Registration entries: SPIFFE IDs for the programs on a node, chosen
    /// by selectors its kernel attests (admin socket).
    Entry(entry::EntryArgs),
    /// What this node's agent serves its programs: entries, SVIDs and the
    /// programs that asked (the agent's workload socket).
    Workload(workload::WorkloadArgs),
    /// Dynamic database users: connections (admin socket) and credentials.
    Db(db::DbArgs),
    /// Leases on dynamic credentials: list and revoke (admin socket).
    Lease(db::LeaseArgs),
    /// Log in over SSH with a certificate made for this session (key in
    /// memory, served by a private agent).
    Ssh(ssh::SshArgs),
    /// Verify and read the hash-chained audit log.
    Audit(audit::AuditArgs),
    /// Move a server's SQLite store into PostgreSQL (to run several servers).
    Store(store::StoreArgs),
    /// Write a consistent snapshot of a running server's store to a file
    /// (its secrets stay sealed by the HSM).
    Backup(backup::BackupArgs),
    /// Restore a backup into an empty state directory, after checking it
    /// against the server's HSM token.
    Restore(backup::RestoreArgs),
    /// Inspect the machine's TPM and its endorsement key certificates.
    Tpm(tpm::TpmArgs),
    /// Measure zeroth against the raw speed of the hardware it drives.
    #[cfg(feature = "lab")]
    Bench(dev::bench::BenchArgs),
    /// Print the HTTP API's OpenAPI 3.1 document (what a server serves at
    /// /v1/openapi.json).
    Openapi,
    /// Write the manual pages (zeroth.1, zeroth-server.1, …) into DIR.
    #[command(hide = true)]
    Manpages {
        /// The directory the pages are written to.
        dir: std::path::PathBuf,
    },
}

/// Exit codes: 0 success, 1 failure, 2 bad usage, 3 a verification that
/// found tampering (`zeroth audit verify` on an edited or forged log).
pub const EXIT_TAMPERED: u8 = 3;

/// Parses the command line, runs the command and maps the outcome to an exit code:
/// 0 success, 1 failure, 2 bad usage, 3 tampering found.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The TPM library logs every failed probe (an absent NV index) to stderr;
    // zeroth reports real failures itself. Set before any thread starts.
    if std::env::var_os("TSS2_LOG").is_none() {
        std::env::set_var("TSS2_LOG", "all+none");
    }
    init_logging();
    quiet_on_closed_stdout();
    let run = std::panic::catch_unwind(move || run(cli.command));
    let result = match run {
        Ok(result) => result,
        // 128 + SIGPIPE: what a shell reports for a writer whose pipe closed.
        Err(payload) if closed_stdout(payload.as_ref()) => return ExitCode::from(141),
        Err(payload) => std::panic::resume_unwind(payload),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            let tampered = e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<crate::audit::AuditError>(),
                    Some(
                        crate::audit::AuditError::Broken { .. }
                            | crate::audit::AuditError::BadCheckpoint { .. }
                    )
                )
            });
            match tampered {
                true => ExitCode::from(EXIT_TAMPERED),
                false => ExitCode::FAILURE,
            }
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        #[cfg(feature = "lab")]
        Command::Demo(args) => dev::demo::run(&args),
        #[cfg(feature = "lab")]
        Command::Lab(args) => dev::lab::run(&args),
        Command::Hsm(args) => hsm::run(&args),
        #[cfg(feature = "lab")]
        Command::Bench(args) => dev::bench::run(&args),
        Command::Tpm(args) => tpm::run(&args),
        Command::Server(args) => server::run(&args),
        Command::Agent(args) => agent::run(&args),
        Command::Audit(args) => audit::run(&args),
        Command::Store(args) => store::run(&args),
        Command::Backup(args) => backup::backup(&args),
        Command::Restore(args) => backup::restore(&args),
        Command::Node(args) => node::run(&args),
        Command::Token(args) => token::run(&args),
        Command::Entry(args) => entry::run(&args),
        Command::Workload(args) => workload::run(&args),
        Command::Db(args) => db::run(&args),
        Command::Lease(args) => db::run_lease(&args),
        Command::Ssh(args) => ssh::run(&args),
        Command::Openapi => {
            let doc = crate::server::api::openapi::document();
            println!("{}", serde_json::to_string_pretty(&doc)?);
            Ok(())
        }
        Command::Manpages { dir } => manpages(&dir),
    }
}

/// The error and its causes on one line, each cause once: many errors
/// already say their cause ("cannot read F: No such file or directory"),
/// and repeating it helps nobody.
fn report(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// Whether a panic is `println!` finding its reader gone (`zeroth … | head`).
fn closed_stdout(payload: &(dyn std::any::Any + Send)) -> bool {
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("");
    message.contains("failed printing to stdout") && message.contains("Broken pipe")
}

/// `zeroth … | head` must end quietly when the reader goes away, as other
/// command-line tools do, instead of reporting a panic: such a panic
/// prints nothing, and unwinds (running every cleanup) to [`main`].
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !closed_stdout(info.payload()) {
            default(info);
        }
    }));
}

/// One page for zeroth and one per command, from the same definitions as
/// `--help`.
fn manpages(dir: &std::path::Path) -> anyhow::Result<()> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir)?;
    let top = Cli::command();
    let write = |name: String, cmd: clap::Command| -> anyhow::Result<()> {
        let mut page = Vec::new();
        let cmd = cmd.display_name(name.clone()).bin_name(name.clone());
        clap_mangen::Man::new(cmd).render(&mut page)?;
        std::fs::write(dir.join(format!("{name}.1")), page)?;
        Ok(())
    };
    for sub in top.get_subcommands().filter(|s| !s.is_hide_set()) {
        write(format!("zeroth-{}", sub.get_name()), sub.clone())?;
    }
    write("zeroth".into(), top)
}

/// The log filter: `ZEROTH_LOG` (default "warn"), with cryptoki and
/// tss-esapi silenced unless it names them: cryptoki logs an ERROR for
/// every vendor mechanism it has no name for (some thirty at each start on
/// SoftHSM), tss-esapi one for every failed probe; both surface real
/// failures as errors of ours.
fn log_directives(from_env: Option<&str>) -> String {
    let mut d = from_env
        .filter(|s| !s.trim().is_empty())
        .unwrap_or("warn")
        .to_owned();
    for noisy in ["cryptoki", "tss_esapi"] {
        if !d.contains(noisy) {
            d.push_str(&format!(",{noisy}=off"));
        }
    }
    d
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let env = std::env::var("ZEROTH_LOG").ok();
    let filter = EnvFilter::try_new(log_directives(env.as_deref()))
        .unwrap_or_else(|_| EnvFilter::new(log_directives(None)));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_cause_is_reported_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = anyhow::Error::new(io).context("cannot read /x: entity not found");
        assert_eq!(super::report(&e), "cannot read /x: entity not found");
        let e = anyhow::anyhow!("the cause").context("what we did");
        assert_eq!(super::report(&e), "what we did: the cause");
    }

    #[test]
    fn noisy_dependencies_stay_quiet_whatever_level_is_asked() {
        use super::log_directives;
        assert_eq!(log_directives(None), "warn,cryptoki=off,tss_esapi=off");
        assert_eq!(
            log_directives(Some("info")),
            "info,cryptoki=off,tss_esapi=off"
        );
        assert_eq!(
            log_directives(Some("debug,cryptoki=debug")),
            "debug,cryptoki=debug,tss_esapi=off"
        );
    }

    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn unknown_command_is_a_usage_error() {
        let err = Cli::try_parse_from(["zeroth", "no-such-command"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}

#[cfg(test)]
mod help_tests {
    use clap::CommandFactory;

    /// Every command, option and argument of every subcommand, without a
    /// help text.
    fn undocumented(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        let here = format!("{path} {}", cmd.get_name()).trim().to_owned();
        if cmd.get_about().is_none() && !path.is_empty() {
            out.push(format!("{here}: the command"));
        }
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") || arg.is_hide_set() {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                out.push(format!("{here}: {id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_name() != "help" {
                undocumented(sub, &here, out);
            }
        }
    }

    #[test]
    fn every_command_option_and_argument_has_a_help_text() {
        let mut missing = Vec::new();
        undocumented(&super::Cli::command(), "", &mut missing);
        assert!(
            missing.is_empty(),
            "{} without help:\n{}",
            missing.len(),
            missing.join("\n")
        );
    }
}
