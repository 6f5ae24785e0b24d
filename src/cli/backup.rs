//! `zeroth backup` and `zeroth restore`: an online snapshot of a running
//! server's store, and its restore into an empty state directory after
//! checking it against the HSM token it needs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use zeroth_hsm::{KeyName, KeyStore, Pkcs11KeyStore, Sealer};

use crate::config::ServerConfig;
use crate::server::admin::client::ClientError;
use crate::server::admin::fetch_backup;
use crate::store::{backup, nodes, ssh_cas, Store};

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where to write the backup (a SQLite file; it must not exist yet).
    #[arg(long)]
    out: PathBuf,
    /// The running server's admin socket.
    #[arg(long, default_value_os_t = crate::cli::admin_socket::default())]
    socket: PathBuf,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A file made by `zeroth backup`.
    file: PathBuf,
    /// The state directory to restore into; it must hold no store.
    /// Default: the configuration's `state_dir`.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The server's configuration (for its HSM token).
    #[arg(long, default_value = "/etc/zeroth/server.toml")]
    config: PathBuf,
}

pub fn backup(args: &BackupArgs) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let partial = partial_name(&args.out);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("create {}", partial.display()))?;
    let fetched = fetch_backup(&args.socket, &mut file).and_then(|v| {
        file.flush()
            .and_then(|()| file.sync_all())
            .map(|()| v)
            .map_err(ClientError::from)
    });
    let answer = match fetched {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            bail!("backup failed: {e}");
        }
    };
    if args.out.exists() {
        let _ = std::fs::remove_file(&partial);
        bail!("{} appeared meanwhile; not replaced", args.out.display());
    }
    std::fs::rename(&partial, &args.out)
        .with_context(|| format!("move the backup to {}", args.out.display()))?;
    println!(
        "backup written to {}: {} bytes, schema {}, {} nodes, {} leases, {} audit events (secrets in it are sealed by the HSM)",
        args.out.display(),
        answer["bytes"],
        answer["schema"],
        answer["nodes"],
        answer["leases"],
        answer["audit_events"]
    );
    Ok(())
}

fn partial_name(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

pub fn restore(args: &RestoreArgs) -> Result<()> {
    let config = ServerConfig::load(&args.config)?;
    if config.store.is_some() {
        bail!(
            "{} keeps its store in PostgreSQL ([store]): restore it with PostgreSQL's tools; zeroth restore rebuilds a SQLite store",
            args.config.display()
        );
    }
    let state_dir = args.state_dir.clone().unwrap_or(config.state_dir.clone());
    let (inspected, staged) = backup::stage(&args.file, &state_dir)?;
    let keys: Arc<dyn KeyStore> =
        Arc::new(Pkcs11KeyStore::open(&config.hsm.pkcs11()).context("open the HSM")?);
    let checked = token_holds_what_the_store_needs(&keys, staged.store())
        .context("restore refused, nothing was written")?;
    let taken = record_restore(staged.store(), &args.file)?;
    // The restored file belongs to whoever owns the state directory (the
    // server's user), as the store the server makes itself would.
    let owner = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&state_dir)
            .ok()
            .map(|m| (m.uid(), m.gid()))
    };
    let placed = staged.install(owner)?;
    println!(
        "restored {} nodes, {} leases and {} audit events (schema {} -> {}) into {}; {checked}. Start the server: leases that expired meanwhile are revoked by it",
        inspected.nodes,
        inspected.leases,
        inspected.audit_events,
        inspected.schema,
        crate::store::LATEST_SCHEMA,
        placed.display()
    );
    println!(
        "the store is as it was at {taken}; what happened since is undone: nodes and token chains revoked since are live again (revoke them again), token hosts whose tokens rotated since must be given new ones, database users made since are dropped by the reconciler, SSH serials continue past any issued since"
    );
    Ok(())
}

/// Serials an SSH CA may have issued after a backup was taken, and which
/// the restored store does not know: reservations jump past them.
const SERIALS_SINCE_A_BACKUP: i64 = 1 << 40;

/// Prepares a staged store to take over: SSH serial reservations move past
/// any the server may have issued after the backup (a serial issued twice
/// would make the serial-based KRL revoke two certificates), and the
/// restore is an audit event. Returns when the backup was taken (its last
/// audit event).
fn record_restore(store: &Store, file: &Path) -> Result<String> {
    let mut conn = store.lock();
    let tx = conn
        .transaction()
        .context("open the restored store for writing")?;
    let taken = crate::audit::last_time(&tx).context("read the backup's last audit event")?;
    let up_to = crate::store::ssh_certs::reserve_past(&tx, SERIALS_SINCE_A_BACKUP)
        .context("move the SSH serial reservations")?;
    crate::audit::append(
        &tx,
        &crate::audit::Event {
            kind: "store.restored",
            subject: "store",
            detail: serde_json::json!({
                "from": file.display().to_string(),
                "backup_taken": taken,
                "ssh_serials_from": up_to + 1,
                "by_uid": rustix::process::getuid().as_raw(),
            }),
        },
    )
    .context("record the restore in the audit log")?;
    tx.commit().context("commit the restore's records")?;
    Ok(taken.map_or("an unknown time".into(), |t| {
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64),
        )
        .to_string()
    }))
}

/// Checks that `keys` is the token `store` was written with: every key it
/// depends on is there, the audit chain's checkpoints verify with its
/// checkpoint key, the CA certificate is its CA key's, and every sealed
/// secret opens with its store key. Says what was checked.
fn token_holds_what_the_store_needs(keys: &Arc<dyn KeyStore>, store: &Store) -> Result<String> {
    let on_token: Vec<String> = keys
        .list()
        .context("list the token's keys")?
        .into_iter()
        .map(|k| k.name.as_str().to_owned())
        .collect();
    let conn = store.lock();
    let mut needed: Vec<String> = zeroth_hsm::STANDARD_KEYS
        .iter()
        .map(|(name, _)| (*name).to_owned())
        .collect();
    for kind in ["user", "host"] {
        needed.extend(ssh_cas::list(&conn, kind)?.into_iter().map(|c| c.key_name));
    }
    needed.sort();
    needed.dedup();
    if let Some(missing) = needed.iter().find(|n| !on_token.contains(n)) {
        bail!(
            "the HSM token ({}) has no key {missing:?}, which this store depends on: restore onto the token the backup was taken with (or a copy of it)",
            keys.describe()
        );
    }
    let checkpoint = keys.public_key(&KeyName::new(crate::audit::CHECKPOINT_KEY)?)?;
    let report = crate::audit::verify(&conn, &checkpoint).context(
        "the audit chain does not verify with this token's checkpoint key: the backup was taken on another token, or altered",
    )?;
    if let Some(der) = nodes::ca_certificate(&conn, "x509")? {
        let ca = keys.public_key(&KeyName::new(crate::identity::x509_ca::CA_KEY)?)?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| anyhow::anyhow!("the stored CA certificate does not parse: {e}"))?;
        if cert.public_key().subject_public_key.data.as_ref() != ca.raw() {
            bail!("the stored CA certificate is not for this token's CA key: the backup was taken on another token");
        }
    }
    let sealer = Sealer::new(keys.clone(), KeyName::new(zeroth_hsm::STORE_KEK)?)?;
    let opened = crate::creds::db::connections::open_every_sealed(&conn, &sealer).map_err(|e| {
        anyhow::anyhow!("{e}: this token's store key cannot open the secrets sealed in the backup")
    })?;
    Ok(format!(
        "checked against the HSM token: {} keys present, {} audit events and {} signed checkpoints verified, {opened} sealed secrets open",
        needed.len(),
        report.events,
        report.checkpoints
    ))
}
