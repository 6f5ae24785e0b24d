//! `zeroth hsm`: inspect the HSM and create zeroth's standard keys in it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use sha2::{Digest, Sha256};
use zeroth_hsm::{
    Capability, KeyName, KeyStore, PinSource, Pkcs11Config, Pkcs11KeyStore, TokenSelector,
    STANDARD_KEYS,
};

#[derive(Debug, Args)]
pub struct HsmArgs {
    #[command(flatten)]
    pub token: TokenArgs,
    #[command(subcommand)]
    command: HsmCommand,
}

/// How to reach the token. The PIN is read from a file or a systemd
/// credential, never from the command line or the environment.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The server's configuration, whose [hsm] names the module, token and
    /// PIN (e.g. /etc/zeroth/server.toml), instead of the options below.
    #[arg(
        long,
        value_name = "PATH",
        global = true,
        conflicts_with_all = ["module", "token_label", "token_serial", "pin_file", "pin_credential"]
    )]
    pub config: Option<PathBuf>,
    /// PKCS#11 module (shared library), e.g. /usr/lib/softhsm/libsofthsm2.so.
    #[arg(long, value_name = "PATH", global = true)]
    pub module: Option<PathBuf>,
    /// Token label (slot numbers change; labels do not).
    #[arg(
        long,
        value_name = "LABEL",
        global = true,
        conflicts_with = "token_serial"
    )]
    pub token_label: Option<String>,
    /// Token serial number, instead of its label.
    #[arg(long, value_name = "SERIAL", global = true)]
    pub token_serial: Option<String>,
    /// File holding the user PIN (mode 0600, owned by zeroth's account).
    #[arg(
        long,
        value_name = "PATH",
        global = true,
        conflicts_with = "pin_credential"
    )]
    pub pin_file: Option<PathBuf>,
    /// Name of a systemd credential holding the user PIN
    /// ($CREDENTIALS_DIRECTORY/NAME in the unit; from a root shell,
    /// /etc/zeroth/NAME.cred decrypted with systemd-creds).
    #[arg(long, value_name = "NAME", global = true)]
    pub pin_credential: Option<String>,
}

impl TokenArgs {
    pub fn config(&self) -> Result<Pkcs11Config> {
        if let Some(path) = &self.config {
            return Ok(crate::config::ServerConfig::load(path)?.hsm.pkcs11());
        }
        let module = self.module.clone().context(
            "--config (the server's configuration) or --module is required: the PKCS#11 module's path, e.g. /usr/lib/softhsm/libsofthsm2.so",
        )?;
        let token = match (&self.token_label, &self.token_serial) {
            (Some(l), _) => TokenSelector::Label(l.clone()),
            (None, Some(s)) => TokenSelector::Serial(s.clone()),
            (None, None) => anyhow::bail!("--token-label or --token-serial is required"),
        };
        let pin = match (&self.pin_file, &self.pin_credential) {
            (Some(p), _) => PinSource::File(p.clone()),
            (None, Some(c)) => PinSource::SystemdCredential(c.clone()),
            (None, None) => anyhow::bail!("--pin-file or --pin-credential is required"),
        };
        Ok(Pkcs11Config {
            module,
            token,
            pin,
            max_sessions: 0,
        })
    }
}

#[derive(Debug, Subcommand)]
enum HsmCommand {
    /// Show the module, the token, its mechanisms, the PIN source and zeroth's keys.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create zeroth's standard keys in the token; keys already there are kept.
    Init,
}

pub fn run(args: &HsmArgs) -> Result<()> {
    let config = args.token.config()?;
    let store = Pkcs11KeyStore::open(&config).context("open the HSM")?;
    match args.command {
        HsmCommand::Status { json } => status(&store, json),
        HsmCommand::Init => init(&store),
    }
}

/// Creates the standard keys; prints one line per key.
pub fn init(store: &dyn KeyStore) -> Result<()> {
    let existing: Vec<KeyName> = store.list()?.into_iter().map(|k| k.name).collect();
    for (name, kind) in STANDARD_KEYS {
        let name = KeyName::new(name)?;
        let created = !existing.contains(&name);
        let info = store
            .get_or_generate(&name, kind)
            .with_context(|| format!("create key {name}"))?;
        println!(
            "{:<18} {:<11} {:<8} {}",
            name,
            kind,
            if created { "created" } else { "present" },
            fingerprint(info.public.as_ref().map(|p| p.spki_der()))
        );
    }
    Ok(())
}

fn status(store: &Pkcs11KeyStore, json: bool) -> Result<()> {
    let module = store.module();
    let summary = module.token_summary(store.token())?;
    let keys = store.list()?;
    if json {
        let caps: serde_json::Map<String, serde_json::Value> = Capability::ALL
            .iter()
            .map(|c| (c.to_string(), summary.supports(*c).into()))
            .collect();
        let keys: Vec<serde_json::Value> = keys
            .iter()
            .map(|k| {
                serde_json::json!({
                    "name": k.name.as_str(),
                    "kind": k.kind.to_string(),
                    "public_key_spki_sha256": k.public.as_ref().map(|p| hex::encode(Sha256::digest(p.spki_der()))),
                })
            })
            .collect();
        let v = serde_json::json!({
            "module": module.path(),
            "module_description": module.description()?,
            "token": {"label": summary.label, "serial": summary.serial, "manufacturer": summary.manufacturer, "model": summary.model},
            "capabilities": caps,
            "pin_source": store.pin_source().to_string(),
            "keys": keys,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "module      {} ({})",
        module.path().display(),
        module.description()?
    );
    println!(
        "token       {:?} serial {} ({} {})",
        summary.label, summary.serial, summary.manufacturer, summary.model
    );
    for c in Capability::ALL {
        let state = if summary.supports(c) {
            "yes".to_owned()
        } else {
            format!("MISSING {}", summary.missing(c).join(", "))
        };
        println!("mechanisms  {c:<8} {state}");
    }
    println!("pin         {}", store.pin_source());
    if keys.is_empty() {
        println!("keys        none (run `zeroth hsm init`)");
    }
    for k in &keys {
        println!(
            "key         {:<18} {:<11} {}",
            k.name,
            k.kind,
            fingerprint(k.public.as_ref().map(|p| p.spki_der()))
        );
    }
    Ok(())
}

/// `SHA256:<hex>` of a public key's SPKI, or a note for secret keys.
pub fn fingerprint(spki: Option<Vec<u8>>) -> String {
    match spki {
        Some(der) => format!("SHA256:{}", hex::encode(Sha256::digest(der))),
        None => "(secret key, no public half)".into(),
    }
}
