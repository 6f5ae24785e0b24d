//! `zeroth entry`: registration entries, which give programs on a node
//! their own SPIFFE IDs (admin socket).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::server::admin::{call, AdminRequest};
use crate::wire::entry::Entry;

#[derive(Debug, Args)]
pub struct EntryArgs {
    /// The server's admin socket.
    #[arg(long, default_value_os_t = crate::cli::admin_socket::default(), global = true)]
    socket: PathBuf,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: EntryCommand,
}

#[derive(Debug, Subcommand)]
enum EntryCommand {
    /// Register a SPIFFE ID for the programs of a node (or of every node of
    /// a group) that match all the selectors.
    Create {
        /// spiffe://<trust domain>/<path>; paths under /node/ and /token/
        /// are the machines' own.
        #[arg(long)]
        spiffe_id: String,
        /// The node whose programs it is for.
        #[arg(long, conflicts_with = "group", required_unless_present = "group")]
        node: Option<String>,
        /// Or every node and token host of this group.
        #[arg(long)]
        group: Option<String>,
        /// unix:uid:N, unix:gid:N, unix:supplementary_gid:N,
        /// systemd:unit:NAME.service, unix:path:/abs/exe, unix:sha256:HEX
        /// (repeat; every one must hold). unix:path and unix:sha256 only
        /// refine unix:uid or systemd:unit, the boundaries a process cannot
        /// leave: they tell one user's programs apart against mistakes,
        /// not against that user, who can exec, ptrace or LD_PRELOAD its
        /// own processes. Matching another user's programs by path or hash
        /// needs the agent to hold CAP_SYS_PTRACE.
        #[arg(long = "selector", required = true)]
        selectors: Vec<String>,
        /// Lifetime of its X.509-SVIDs (rotated at half-life).
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// A DNS name its X.509-SVID also carries (repeat).
        #[arg(long = "dns-name")]
        dns_names: Vec<String>,
        /// A database or SSH role its programs may use (repeat).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Passed to the program beside its SVID (e.g. "internal").
        #[arg(long, default_value = "")]
        hint: String,
    },
    /// Every entry.
    List,
    /// One entry in full.
    Show {
        /// The entry's id (`zeroth entry list`).
        id: String,
    },
    /// Delete an entry: agents stop serving its SVIDs at their next sync.
    Delete {
        /// The entry's id (`zeroth entry list`).
        id: String,
    },
}

fn describe(e: &Entry) -> String {
    let selectors: Vec<String> = e.selectors.iter().map(|s| s.to_string()).collect();
    let mut line = format!(
        "{} {} on {} for {} (SVIDs live {})",
        e.id,
        e.spiffe_id,
        e.parent,
        selectors.join(" + "),
        humantime::format_duration(Duration::from_secs(e.ttl_seconds))
    );
    if !e.roles.is_empty() {
        line.push_str(&format!(", roles {}", e.roles.join(", ")));
    }
    if !e.dns_names.is_empty() {
        line.push_str(&format!(", DNS {}", e.dns_names.join(", ")));
    }
    super::printable::printable(&line).into_owned()
}

pub fn run(args: &EntryArgs) -> Result<()> {
    let request = match &args.command {
        EntryCommand::Create {
            spiffe_id,
            node,
            group,
            selectors,
            ttl,
            dns_names,
            roles,
            hint,
        } => AdminRequest {
            op: "entry.create".into(),
            ttl_secs: Some(ttl.as_secs() as i64),
            params: serde_json::json!({
                "spiffe_id": spiffe_id,
                "node": node,
                "group": group,
                "selectors": selectors,
                "dns_names": dns_names,
                "roles": roles,
                "hint": hint,
            }),
            ..Default::default()
        },
        EntryCommand::List => AdminRequest {
            op: "entry.list".into(),
            ..Default::default()
        },
        EntryCommand::Show { id } => AdminRequest {
            op: "entry.show".into(),
            id: Some(id.clone()),
            ..Default::default()
        },
        EntryCommand::Delete { id } => AdminRequest {
            op: "entry.delete".into(),
            id: Some(id.clone()),
            ..Default::default()
        },
    };
    let answer = call(&args.socket, &request).map_err(anyhow::Error::msg)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let one = || serde_json::from_value::<Entry>(answer["entry"].clone());
    match &args.command {
        EntryCommand::Create { .. } => println!("created {}", describe(&one()?)),
        EntryCommand::Delete { .. } => println!("deleted {}", describe(&one()?)),
        EntryCommand::Show { .. } => {
            println!("{}", serde_json::to_string_pretty(&answer["entry"])?)
        }
        EntryCommand::List => {
            let list: Vec<Entry> = serde_json::from_value(answer["entries"].clone())?;
            if list.is_empty() {
                println!("no entries");
            }
            for e in &list {
                println!("{}", describe(e));
            }
        }
    }
    Ok(())
}
