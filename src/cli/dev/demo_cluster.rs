//! The demo's scale-out step: the single server's SQLite store moves into
//! PostgreSQL, two servers run on it with the same HSM token, both answer
//! alike, and when the one running the cluster's jobs is killed the other
//! takes them over.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use zeroth_hsm::{KeyName, KeyStore, Pkcs11KeyStore};

use crate::lab::{LabDir, Postgres, SoftHsm, ZerothServer};
use crate::store::{Location, Store};

/// `single` has stopped; `groups` is its configuration's groups and roles.
pub fn show_cluster(single: &ZerothServer, hsm: &SoftHsm, groups: &str) -> Result<()> {
    let dir = LabDir::new("demo-cluster")?;
    // The store's own PostgreSQL, apart from the databases users are made on.
    let pg = Postgres::start()?;
    let db = pg.zeroth_store(&dir, "zeroth")?;
    println!(
        "\n$ zeroth store migrate --to {} --password-file {}   # to run several servers",
        db.url,
        db.password_file.display()
    );
    let target = crate::config::StoreConfig {
        url: db.url.clone(),
        password_file: Some(db.password_file.clone()),
        password_credential: None,
        ca_file: None,
    }
    .target()?;
    let moved = {
        let source = Store::open(&single.database())?;
        let store = Store::open_at(&Location::Postgres(target))?;
        let moved = crate::store::copy::copy_all(&source, &store)?;
        let keys = Pkcs11KeyStore::open(&hsm.pkcs11_config())?;
        let key = keys.public_key(&KeyName::new(crate::audit::CHECKPOINT_KEY)?)?;
        let report = crate::audit::verify(&store.lock(), &key)?;
        println!(
            "           moved {} rows; audit chain intact in PostgreSQL: {} events",
            moved.iter().map(|(_, n)| n).sum::<i64>(),
            report.events
        );
        moved
    };
    let leases = moved
        .iter()
        .find(|(t, _)| *t == "leases")
        .map_or(0, |(_, n)| *n);
    let exe = std::env::current_exe().context("find the zeroth binary")?;
    let store = db.toml();
    println!(
        "$ zeroth server   # twice, [store] url = \"{}\", one HSM token",
        db.url
    );
    let mut a = ZerothServer::start_configured(&exe, hsm, &store, groups, &[])?;
    let mut b = ZerothServer::start_configured(&exe, hsm, &store, groups, &[])?;
    let http = crate::agent::enrol::client(&a.bundle())?;
    let bundle = |s: &ZerothServer| -> Result<String> {
        Ok(http.get(format!("{}/v1/bundle", s.url())).send()?.text()?)
    };
    anyhow::ensure!(bundle(&a)? == bundle(&b)?, "two servers, two bundles");
    println!(
        "           {} and {}: one trust bundle, one ledger ({leases} leases moved), one audit chain",
        a.url(),
        b.url()
    );
    println!("$ zeroth server   # a third, on the same store but with another HSM token");
    let other = SoftHsm::start()?;
    match ZerothServer::start_configured(&exe, &other, &store, groups, &[]) {
        Ok(_) => anyhow::bail!("a server with another HSM token joined the cluster"),
        Err(e) => {
            let said = e.to_string();
            let refusal = said
                .lines()
                .find(|l| l.contains("another HSM token"))
                .context("the third server stopped, but not for its token")?;
            let refusal = refusal
                .find("this store")
                .map_or(refusal, |at| &refusal[at..])
                .trim();
            println!("           refused before writing anything: {refusal}");
        }
    }
    let started = Instant::now();
    while !(a.runs_cluster_jobs() || b.runs_cluster_jobs()) {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(10),
            "no server runs the cluster's jobs"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (dead, heir) = if a.runs_cluster_jobs() {
        (&mut a, &b)
    } else {
        (&mut b, &a)
    };
    println!(
        "           {} runs the cluster's jobs (revoker, reconciler, audit checkpoints)",
        dead.url()
    );
    println!("$ kill -9 <that server>");
    let took = dead.kill_and_wait_for(heir, Duration::from_secs(30))?;
    println!(
        "           {} took the cluster's jobs over {:.1} s later",
        heir.url(),
        took.as_secs_f64()
    );
    Ok(())
}
