//! `zeroth lab`: start the private lab and keep it running until asked to stop.

use std::io::Read;
use std::sync::mpsc;

use anyhow::{Context, Result};
use clap::Args;

use crate::lab::{Bench, Component};

#[derive(Debug, Args)]
pub struct LabArgs {
    /// Components to start (default: all). Repeat or separate with commas.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(ComponentArg))]
    only: Vec<ComponentArg>,
}

#[derive(Debug, Clone, Copy)]
struct ComponentArg(Component);

impl std::str::FromStr for ComponentArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse().map(ComponentArg)
    }
}

pub fn run(args: &LabArgs) -> Result<()> {
    let components: Vec<Component> = if args.only.is_empty() {
        Component::ALL.to_vec()
    } else {
        args.only.iter().map(|c| c.0).collect()
    };
    let bench = Bench::start(&components).context("start the lab")?;
    if let Some(t) = &bench.tpm {
        println!(
            "swtpm pid={} tcti={} ca_root={}",
            t.pid().unwrap_or_default(),
            t.tcti(),
            t.ca_root_pem().display()
        );
    }
    if let Some(h) = &bench.hsm {
        println!(
            "softhsm module={} SOFTHSM2_CONF={} token={} pin_file={}",
            h.module().display(),
            h.conf().display(),
            h.token_label(),
            h.pin_file().display()
        );
    }
    // The databases' admin passwords, in files only their owner can read,
    // so that `zeroth db connection create` can be followed against the lab.
    if let Some(p) = &bench.postgres {
        let file = p
            .password_file()
            .context("write the PostgreSQL admin password")?;
        println!(
            "postgres pid={} addr={} admin_user={} admin_password_file={}",
            p.pid().unwrap_or_default(),
            p.addr(),
            crate::lab::postgres::SUPERUSER,
            file.display()
        );
        println!(
            "  zeroth db connection create pg --engine postgres --port {} --admin-user {} < {}",
            p.port(),
            crate::lab::postgres::SUPERUSER,
            file.display()
        );
    }
    if let Some(m) = &bench.mariadb {
        let file = m
            .password_file()
            .context("write the MariaDB admin password")?;
        println!(
            "mariadb pid={} addr={} admin_user=root admin_password_file={}",
            m.pid().unwrap_or_default(),
            m.addr(),
            file.display()
        );
        println!(
            "  zeroth db connection create maria --engine mariadb --port {} --admin-user root --dbname mysql < {}",
            m.port(),
            file.display()
        );
    }
    if let Some(s) = &bench.sshd {
        println!(
            "sshd pid={} addr={} user={}",
            s.pid().unwrap_or_default(),
            s.addr(),
            s.login_user()
        );
    }
    println!("lab ready; stop it with Ctrl-C or by closing standard input");

    wait_for_stop()?;
    drop(bench);
    println!("lab stopped");
    Ok(())
}

/// Blocks until SIGINT, SIGTERM or end of standard input.
fn wait_for_stop() -> Result<()> {
    let (tx, rx) = mpsc::channel::<()>();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .context("install signal handlers")?;
    let on_signal = tx.clone();
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let _ = on_signal.send(());
        }
    });
    std::thread::spawn(move || {
        let mut sink = [0u8; 256];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        let _ = tx.send(());
    });
    rx.recv().context("wait for a stop request")
}
