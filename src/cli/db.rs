//! `zeroth db`: database connections (admin socket) and, for a host's
//! identity, dynamic credentials.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;

use super::printable::field;
use crate::server::admin::{call, AdminRequest};

#[derive(Debug, Args)]
pub struct DbArgs {
    #[command(subcommand)]
    command: DbCommand,
}

#[derive(Debug, Args)]
struct Socket {
    /// The server's admin socket.
    #[arg(long, default_value_os_t = crate::cli::admin_socket::default())]
    socket: PathBuf,
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Database connections zeroth administers.
    Connection {
        #[command(subcommand)]
        command: ConnectionCommand,
    },
    /// Give a connection's admin user a new random password only zeroth
    /// knows (sealed under the HSM key); do it right after `connection create`.
    RotateRoot {
        /// The connection whose admin password is replaced.
        name: String,
        #[command(flatten)]
        socket: Socket,
    },
    /// Drop users with zeroth's prefix that no lease accounts for.
    Reconcile {
        #[command(flatten)]
        socket: Socket,
    },
    /// Dynamic credentials of ROLE for this host's identity (agent.toml):
    /// prints a connection string, or runs a client with the password in its
    /// environment only.
    Creds {
        /// The database role (`[[db_role]]` in server.toml), e.g. app-ro.
        role: String,
        /// The agent configuration whose identity asks.
        #[arg(long, default_value = "/etc/zeroth/agent.toml")]
        config: PathBuf,
        /// Ask through the agent's workload API socket, without reading the
        /// agent's configuration (a program's own user cannot read it).
        /// Without it, and when the configuration is unreadable, the
        /// packaged agent's socket /run/zeroth-agent/api.sock is used.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Lease lifetime, e.g. "15m" (the role's default otherwise).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
        /// Run this client (psql or mysql/mariadb and its arguments) with
        /// the credentials; the password goes to its environment only.
        #[arg(long, num_args = 1.., allow_hyphen_values = true, value_name = "CMD")]
        exec: Vec<String>,
        /// Print the credentials as JSON (lease, user, password, host, port,
        /// database, expiry) instead of a connection URL.
        #[arg(long, conflicts_with = "exec")]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ConnectionCommand {
    /// Add (or replace) a connection. The admin password is read from
    /// --password-file or standard input, never from the command line.
    #[command(name = "create", visible_alias = "add")]
    Add {
        /// The connection's name, which roles name (`connection = "…"`).
        name: String,
        /// The database engine.
        #[arg(long, value_parser = ["postgres", "mariadb"])]
        engine: String,
        /// The database server's address.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// The database server's port.
        #[arg(long)]
        port: u16,
        /// Database to connect to (PostgreSQL: where roles' schemas live).
        #[arg(long, default_value = "postgres")]
        dbname: String,
        /// The admin zeroth makes and drops users as (docs/reference.md has
        /// the privileges each engine needs).
        #[arg(long)]
        admin_user: String,
        /// A file holding the admin's password (standard input otherwise).
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Use TLS with full verification (chain to this CA, certificate
        /// naming --host); without it the connection is not encrypted.
        #[arg(long, value_name = "PEM")]
        tls_ca: Option<PathBuf>,
        #[command(flatten)]
        socket: Socket,
    },
    /// Every connection: engine, address, admin (never its password).
    List {
        #[command(flatten)]
        socket: Socket,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a connection (refused while it has live leases).
    #[command(name = "delete", visible_alias = "remove")]
    Remove {
        /// The connection's name.
        name: String,
        #[command(flatten)]
        socket: Socket,
    },
}

#[derive(Debug, Args)]
pub struct LeaseArgs {
    #[command(subcommand)]
    command: LeaseCommand,
}

#[derive(Debug, Subcommand)]
enum LeaseCommand {
    /// Live leases, optionally of one holder or under a prefix ("ROLE/" or "ROLE/ID").
    List {
        /// Only the leases of this holder (a SPIFFE ID).
        #[arg(long)]
        holder: Option<String>,
        /// Only leases under this prefix: "ROLE/" or "ROLE/ID".
        #[arg(long)]
        prefix: Option<String>,
        #[command(flatten)]
        socket: Socket,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make a lease that revocation gave up on (`irrevocable`) due again
    /// now, once the cause is fixed.
    Retry {
        /// The lease's id (`zeroth lease list`).
        id: String,
        #[command(flatten)]
        socket: Socket,
    },
    /// Record a lease revoked without touching its database, once its user
    /// was removed by hand (audited as `lease.marked_revoked`).
    MarkRevoked {
        /// The lease's id (`zeroth lease list`).
        id: String,
        #[command(flatten)]
        socket: Socket,
    },
    /// Revoke one lease, or every lease of a holder or under a prefix.
    Revoke {
        /// The lease's id (`zeroth lease list`).
        id: Option<String>,
        /// Every lease of this holder (a SPIFFE ID).
        #[arg(long, conflicts_with = "id")]
        holder: Option<String>,
        /// Every lease under this prefix: "ROLE/" or "ROLE/ID".
        #[arg(long, conflicts_with_all = ["id", "holder"])]
        prefix: Option<String>,
        #[command(flatten)]
        socket: Socket,
    },
}

fn admin(socket: &Socket, req: AdminRequest) -> Result<serde_json::Value> {
    call(&socket.socket, &req).map_err(anyhow::Error::msg)
}

fn op(name: &str) -> AdminRequest {
    AdminRequest {
        op: name.into(),
        ..Default::default()
    }
}

pub fn run(args: &DbArgs) -> Result<()> {
    match &args.command {
        DbCommand::Connection { command } => match command {
            ConnectionCommand::Add {
                name,
                engine,
                host,
                port,
                dbname,
                admin_user,
                password_file,
                tls_ca,
                socket,
            } => {
                let tls_ca = tls_ca
                    .as_ref()
                    .map(|f| {
                        std::fs::read_to_string(f).with_context(|| format!("read {}", f.display()))
                    })
                    .transpose()?;
                let mut password = match password_file {
                    Some(f) => std::fs::read_to_string(f)
                        .with_context(|| format!("read {}", f.display()))?,
                    None => {
                        let mut s = String::new();
                        std::io::stdin()
                            .read_to_string(&mut s)
                            .context("read the admin password from standard input")?;
                        s
                    }
                };
                let trimmed = password.trim_end_matches(['\n', '\r']).to_owned();
                zeroize::Zeroize::zeroize(&mut password);
                admin(
                    socket,
                    AdminRequest {
                        params: json!({"name": name, "engine": engine, "host": host, "port": port, "dbname": dbname, "admin_user": admin_user, "tls_ca": tls_ca}),
                        secret: Some(trimmed.into()),
                        ..op("db.connection.add")
                    },
                )?;
                println!("connection {name} added; now run `zeroth db rotate-root {name}` so that only zeroth knows the admin password");
                Ok(())
            }
            ConnectionCommand::List { socket, json } => {
                let answer = admin(socket, op("db.connection.list"))?;
                if *json {
                    println!("{}", serde_json::to_string_pretty(&answer["connections"])?);
                    return Ok(());
                }
                println!(
                    "{:<16} {:<9} {:<24} {:<12} {:<9} ROTATED",
                    "NAME", "ENGINE", "ADDRESS", "ADMIN", "TLS"
                );
                for c in answer["connections"].as_array().into_iter().flatten() {
                    println!(
                        "{:<16} {:<9} {:<24} {:<12} {:<9} {}",
                        c["name"].as_str().unwrap_or(""),
                        c["engine"].as_str().unwrap_or(""),
                        format!(
                            "{}:{}/{}",
                            c["host"].as_str().unwrap_or(""),
                            c["port"],
                            c["dbname"].as_str().unwrap_or("")
                        ),
                        c["admin_user"].as_str().unwrap_or(""),
                        if c["tls"] == true { "verified" } else { "none" },
                        if c["rotated"].is_null() { "no" } else { "yes" }
                    );
                }
                Ok(())
            }
            ConnectionCommand::Remove { name, socket } => {
                admin(
                    socket,
                    AdminRequest {
                        id: Some(name.clone()),
                        ..op("db.connection.remove")
                    },
                )?;
                println!("connection {name} removed");
                Ok(())
            }
        },
        DbCommand::RotateRoot { name, socket } => {
            admin(
                socket,
                AdminRequest {
                    id: Some(name.clone()),
                    ..op("db.rotate-root")
                },
            )?;
            println!("the admin password of {name} was changed; only zeroth (sealed under the HSM) knows it now");
            Ok(())
        }
        DbCommand::Reconcile { socket } => {
            let answer = admin(socket, op("db.reconcile"))?;
            let dropped = answer["dropped"].as_array().map_or(0, Vec::len);
            println!("{dropped} stray user(s) dropped");
            Ok(())
        }
        DbCommand::Creds {
            role,
            config,
            socket,
            ttl,
            exec,
            json,
        } => super::db_creds::run(role, config, socket.as_deref(), *ttl, exec, *json),
    }
}

pub fn run_lease(args: &LeaseArgs) -> Result<()> {
    match &args.command {
        LeaseCommand::List {
            holder,
            prefix,
            socket,
            json,
        } => {
            let answer = admin(
                socket,
                AdminRequest {
                    params: json!({"holder": holder, "prefix": prefix}),
                    ..op("lease.list")
                },
            )?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&answer["leases"])?);
                return Ok(());
            }
            println!(
                "{:<34} {:<12} {:<11} {:<11} HOLDER",
                "LEASE", "ROLE", "STATE", "EXPIRES IN"
            );
            for l in answer["leases"].as_array().into_iter().flatten() {
                let left = l["expires"].as_i64().unwrap_or(0) - crate::store::now();
                println!(
                    "{:<34} {:<12} {:<11} {:<11} {}",
                    field(l, "id"),
                    field(l, "role"),
                    field(l, "state"),
                    format!("{}s", left.max(0)),
                    field(l, "holder")
                );
            }
            Ok(())
        }
        LeaseCommand::Retry { id, socket } => {
            admin(
                socket,
                AdminRequest {
                    id: Some(id.clone()),
                    ..op("lease.retry")
                },
            )?;
            println!("lease {id} is due again: the revoker tries it at its next pass");
            Ok(())
        }
        LeaseCommand::MarkRevoked { id, socket } => {
            admin(
                socket,
                AdminRequest {
                    id: Some(id.clone()),
                    ..op("lease.mark-revoked")
                },
            )?;
            println!("lease {id} recorded revoked (its database was not asked)");
            Ok(())
        }
        LeaseCommand::Revoke {
            id,
            holder,
            prefix,
            socket,
        } => {
            anyhow::ensure!(
                id.is_some() || holder.is_some() || prefix.is_some(),
                "name a lease, or --holder or --prefix"
            );
            let answer = admin(
                socket,
                AdminRequest {
                    id: id.clone(),
                    params: json!({"holder": holder, "prefix": prefix}),
                    ..op("lease.revoke")
                },
            )?;
            let n = answer["revoked"].as_array().map_or(0, Vec::len);
            println!("{n} lease(s) revoked");
            Ok(())
        }
    }
}
