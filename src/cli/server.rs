//! `zeroth server`: run the server, or ask a running one where it stands.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::config::ServerConfig;
use crate::server::admin::{call, AdminRequest};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServerArgs {
    /// Configuration file.
    #[arg(long, default_value = "/etc/zeroth/server.toml")]
    config: PathBuf,
    /// Development only: keep keys in process memory instead of the HSM.
    /// Logs a warning; every key (and so every identity) is lost at exit.
    #[arg(long)]
    dev: bool,
    #[command(subcommand)]
    command: Option<ServerCommand>,
}

#[derive(Debug, Subcommand)]
enum ServerCommand {
    /// A running server's place in its cluster: leader (and its epoch),
    /// follower, or the single server of a SQLite store; whether the store
    /// answered its last leadership renewal, and when.
    Status {
        /// The server's admin socket.
        #[arg(long, default_value_os_t = crate::cli::admin_socket::default())]
        socket: PathBuf,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// The trust bundle: the X.509 CA certificate (PEM, on standard output)
    /// that every SVID chains to, for agents' `ca_bundle` and for clients
    /// of workloads; on standard error, what it is and until when it is
    /// valid. The CA is self-signed over the HSM key `x509-ca`, valid ten
    /// years from the server's first start.
    Bundle {
        /// The server's admin socket.
        #[arg(long, default_value_os_t = crate::cli::admin_socket::default())]
        socket: PathBuf,
        /// Print {"pem", "subject", "not_before", "not_after"} as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: &ServerArgs) -> Result<()> {
    match &args.command {
        Some(ServerCommand::Status { socket, json }) => status(socket, *json),
        Some(ServerCommand::Bundle { socket, json }) => bundle(socket, *json),
        None => {
            let config = ServerConfig::load(&args.config)?;
            crate::server::run(config, args.dev)
        }
    }
}

fn bundle(socket: &std::path::Path, json: bool) -> Result<()> {
    let request = AdminRequest {
        op: "ca.bundle".into(),
        ..Default::default()
    };
    let answer = call(socket, &request).map_err(anyhow::Error::msg)?;
    let pem = answer["pem"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("the server's answer holds no certificate"))?;
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("the server's CA certificate is not PEM: {e}"))?;
    let cert = block
        .parse_x509()
        .map_err(|e| anyhow::anyhow!("the server's CA certificate does not parse: {e}"))?;
    let (not_before, not_after) = (
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    );
    let rfc = |t: i64| {
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64),
        )
        .to_string()
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "pem": pem,
                "subject": cert.subject().to_string(),
                "not_before": not_before,
                "not_after": not_after,
            }))?
        );
        return Ok(());
    }
    eprintln!(
        "X.509 CA {}: self-signed over the HSM key x509-ca, valid {} to {}",
        cert.subject(),
        rfc(not_before),
        rfc(not_after)
    );
    print!("{pem}");
    Ok(())
}

fn status(socket: &std::path::Path, json: bool) -> Result<()> {
    let request = AdminRequest {
        op: "server.status".into(),
        ..Default::default()
    };
    let answer = call(socket, &request).map_err(anyhow::Error::msg)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let text = |k: &str| answer[k].as_str().unwrap_or("-").to_owned();
    println!("server    {}", text("me"));
    match answer["epoch"].as_i64() {
        Some(epoch) => println!("role      {} (epoch {epoch})", text("role")),
        None => println!("role      {}", text("role")),
    }
    let when = answer["last_renewal_ms"]
        .as_u64()
        .map_or("never".to_owned(), |ms| {
            format!("{:.1} s ago", ms as f64 / 1000.0)
        });
    match answer["store_reachable"].as_bool() {
        Some(true) => println!("store     reachable (asked {when})"),
        _ => println!(
            "store     UNREACHABLE (asked {when}): {}",
            answer["error"].as_str().unwrap_or("no answer yet")
        ),
    }
    Ok(())
}
