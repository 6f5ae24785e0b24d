//! `zeroth server`: the HTTPS API over TLS 1.3, backed by the HSM and SQLite.

pub mod admin;
pub mod api;
mod memory;
pub mod metrics;
pub mod peer;
pub mod rate_limit;
pub mod readiness;
pub mod state;
pub mod tls;
pub mod trust;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use zeroth_hsm::{KeyStore, Pkcs11KeyStore};

use crate::config::ServerConfig;
use crate::identity::X509Ca;
use crate::policy::GroupPolicy;
use crate::store::{leader, nodes, Store};

/// The server's TLS certificate is reissued at every start with this lifetime.
const TLS_CERT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Opens the HSM, the database and the CA, then serves until SIGINT/SIGTERM.
/// Prints one line once listening: `zeroth server listening on https://ADDR`.
pub fn run(config: ServerConfig, dev: bool) -> Result<()> {
    let keys: Arc<dyn KeyStore> = if dev {
        // Only ever on explicit request: keys in memory, gone at exit.
        Arc::new(zeroth_hsm::SoftwareKeyStore::new_insecure())
    } else {
        Arc::new(Pkcs11KeyStore::open(&config.hsm.pkcs11()).context("open the HSM")?)
    };
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("create {}", config.state_dir.display()))?;
    let location = config.store_location()?;
    let store = Arc::new(Store::open_at(&location)?);
    // zeroth's keys (CA, audit checkpoints, store key…): made in the HSM
    // by the first server of a store and recorded there; every later
    // server checks its token holds the very same keys before going on.
    match trust::bind(
        &store,
        &*keys,
        &config.trust_domain,
        config.ssh_ca_algorithm,
    )? {
        trust::Joined::Made => {
            tracing::info!(trust_domain = %config.trust_domain, "recorded this store's trust domain and HSM keys")
        }
        trust::Joined::Found => {
            tracing::info!(trust_domain = %config.trust_domain, "this token holds the store's HSM keys")
        }
    }
    let existing = nodes::ca_certificate(&store.lock(), "x509")?;
    let ca =
        X509Ca::open(keys.clone(), &config.trust_domain, existing).context("open the X.509 CA")?;
    nodes::save_ca_certificate(&store.lock(), "x509", ca.cert_der())?;
    // Servers of a cluster starting together: the certificate saved first
    // is everyone's (same HSM key), so every server hands out one bundle.
    let saved = nodes::ca_certificate(&store.lock(), "x509")?;
    let ca = match saved {
        Some(der) if der != ca.cert_der() => {
            X509Ca::open(keys.clone(), &config.trust_domain, Some(der))
                .context("open the X.509 CA")?
        }
        _ => ca,
    };
    std::fs::write(config.state_dir.join("bundle.pem"), ca.cert_pem())
        .context("write bundle.pem")?;
    let mut groups = BTreeMap::new();
    for g in &config.groups {
        groups.insert(g.name.clone(), GroupPolicy::load(g)?);
    }
    // Bound before anything is served, so the default JWT issuer can name
    // the real port (also when `listen` asks for port 0).
    let listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("listen on {}", config.listen))?;
    let addr = listener.local_addr().context("the listening address")?;
    let issuer = config
        .jwt_issuer
        .clone()
        .unwrap_or_else(|| format!("https://{}:{}", config.tls_names[0], addr.port()));
    let jwt = crate::identity::JwtIssuer::open(keys.clone(), &issuer)
        .context("open the JWT-SVID signing key")?;
    let tls = tls::server_config(keys.clone(), &ca, &config.tls_names, TLS_CERT_TTL)
        .context("set up TLS")?;
    let admin_gid = match &config.admin_group {
        Some(g) => Some(
            admin::group_id(g)
                .with_context(|| format!("admin_group {g:?} is not a group in /etc/group"))?,
        ),
        None => None,
    };
    let group_names = config.groups.iter().map(|g| g.name.clone()).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let ledger =
        Arc::new(crate::creds::lease::Ledger::new(store.clone()).context("open the lease ledger")?);
    let db = Arc::new(
        crate::creds::db::broker::DbBroker::new(ledger.clone(), keys.clone(), &config.db_roles)
            .context("set up dynamic database credentials")?,
    );
    let lease_manager = Arc::new(crate::creds::lease::LeaseManager::new(
        ledger,
        vec![
            Arc::new(crate::creds::db::engine::DbEngine(db.clone())),
            Arc::new(crate::creds::ssh::engine::SshEngine),
        ],
    ));
    let ssh = Arc::new(
        crate::creds::ssh::issuer::SshIssuer::new(
            store.clone(),
            keys.clone(),
            &config.ssh_roles,
            config.ssh_ca_algorithm,
        )
        .context("open the SSH CAs")?,
    );
    let leadership = Arc::new(leader::Leadership::new(
        format!(
            "{}/{}/{}",
            rustix::system::uname().nodename().to_string_lossy(),
            std::process::id(),
            hex::encode(rand::random::<[u8; 4]>())
        ),
        store.is_shared(),
    ));
    admin::serve(
        &config.admin_socket(),
        store.clone(),
        admin::Access { admin_gid },
        admin::Names {
            trust_domain: config.trust_domain.clone(),
            groups: group_names,
            roles: config
                .db_roles
                .iter()
                .map(|r| r.name.clone())
                .chain(config.ssh_roles.iter().map(|r| r.name.clone()))
                .collect(),
        },
        Arc::new(admin::Extensions {
            db: db.clone(),
            leases: lease_manager.clone(),
            ssh: ssh.clone(),
            runtime: runtime.handle().clone(),
            leadership: leadership.clone(),
            ca_pem: ca.cert_pem(),
        }),
    )
    .with_context(|| format!("bind the admin socket {}", config.admin_socket().display()))?;
    let audit_store = store.clone();
    let audit_keys = keys.clone();
    let metrics = metrics::install().context("install the metrics recorder")?;
    let sealer = zeroth_hsm::Sealer::new(
        keys.clone(),
        zeroth_hsm::KeyName::new(zeroth_hsm::STORE_KEK).context("the store key's name")?,
    )
    .context("the HSM's store key")?;
    let state = Arc::new(state::AppState {
        metrics,
        trust_domain: config.trust_domain.clone(),
        sealer,
        enrolment_limits: rate_limit::EnrolmentLimiter::new(&config.enrolment_limits),
        readiness: readiness::Readiness::default(),
        store,
        keys,
        ca,
        jwt,
        jwt_max_ttl: config.jwt_max_ttl,
        groups,
        db: db.clone(),
        leases: lease_manager.clone(),
        ssh: ssh.clone(),
        leadership: leadership.clone(),
    });

    runtime.block_on(async move {
        // Finish what a crash left half-done, then revoke leases as they
        // fall due, a few at a time so issuance never waits behind a storm;
        // failed revocations come back, with backoff, until they are done.
        // With several servers on one store, only the leader does this.
        let (lead_store, lead) = (audit_store.clone(), leadership.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(leader::RENEW_EVERY);
            loop {
                tick.tick().await;
                let (st, l) = (lead_store.clone(), lead.clone());
                let renewed = tokio::task::spawn_blocking(move || l.renew(&mut st.lock())).await;
                match renewed {
                    Ok(Ok(leader::Change::Gained { epoch })) => {
                        println!("this server now runs the cluster's jobs (leader epoch {epoch})");
                        tracing::info!(epoch, me = lead.me(), "leadership gained");
                    }
                    Ok(Ok(leader::Change::Lost)) => {
                        println!("this server no longer runs the cluster's jobs");
                        tracing::warn!(me = lead.me(), "leadership lost");
                    }
                    Ok(Ok(leader::Change::None)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot renew leadership"),
                    Err(e) => tracing::warn!(error = %e, "cannot renew leadership"),
                }
            }
        });
        // Another server of the cluster may rotate the SSH CAs.
        if leadership.is_shared() {
            let ssh = ssh.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(leader::RENEW_EVERY * 2);
                loop {
                    tick.tick().await;
                    let ssh = ssh.clone();
                    match tokio::task::spawn_blocking(move || ssh.refresh()).await {
                        Ok(Ok(true)) => tracing::info!("SSH CA keys reloaded after a rotation elsewhere in the cluster"),
                        Ok(Err(e)) => tracing::warn!(error = %e, "cannot reload the SSH CA keys"),
                        _ => {}
                    }
                }
            });
        }
        let (revoker, lead) = (lease_manager.clone(), leadership.clone());
        let (sweep_store, retention) = (audit_store.clone(), config.retention);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REVOKER_TICK);
            let mut ticks = 0u64;
            let mut leading = false;
            loop {
                tick.tick().await;
                if !lead.is_leader() {
                    leading = false;
                    continue;
                }
                if !leading {
                    // A start, or a takeover: sweep what is left over.
                    leading = true;
                    let swept = revoker.revoke_due(10_000, &lead).await;
                    if swept > 0 {
                        tracing::info!(swept, "leftover leases revoked on taking the jobs over");
                    }
                }
                revoker.revoke_due(REVOKER_BATCH, &lead).await;
                if ticks % SWEEP_EVERY_TICKS == 0 {
                    let st = sweep_store.clone();
                    let horizon = crate::store::now() - retention.as_secs() as i64;
                    let swept = tokio::task::spawn_blocking(move || {
                        crate::store::retention::sweep(&st, horizon, &crate::audit::record_sweep)
                    })
                    .await;
                    match swept {
                        Ok(Ok(s)) if s.total() > 0 => tracing::info!(leases = s.leases, ssh_certs = s.ssh_certs, svids = s.svids, workload_svids = s.workload_svids, "records of what ended before the retention period swept"),
                        Ok(Err(e)) => tracing::warn!(error = %e, "the retention sweep failed"),
                        _ => {}
                    }
                }
                ticks += 1;
                if ticks % RECONCILE_EVERY_TICKS == 0 {
                    if let Err(e) = revoker.reconcile().await {
                        tracing::warn!(error = %e, "reconciling database users failed");
                    }
                }
            }
        });
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(memory::TRIM_EVERY);
            loop {
                tick.tick().await;
                let _ = tokio::task::spawn_blocking(memory::trim).await;
            }
        });
        let handle = axum_server::Handle::new();
        let shutdown = handle.clone();
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { if let Some(t) = term.as_mut() { t.recv().await; } else { std::future::pending::<()>().await } } => {}
            }
            shutdown.graceful_shutdown(Some(Duration::from_secs(5)));
        });
        let announce = handle.clone();
        let notifier = Arc::new(crate::sd_notify::Notifier::from_env());
        let (notify, watchdog_store) = (notifier.clone(), audit_store.clone());
        tokio::spawn(async move {
            if let Some(addr) = announce.listening().await {
                println!("zeroth server listening on https://{addr}");
                notify.ready(&format!("serving on https://{addr}"));
            }
            // Ping systemd's watchdog only while the runtime and the store
            // both answer: a wedged server gets restarted.
            let Some(every) = notify.watchdog_interval() else {
                return;
            };
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let st = watchdog_store.clone();
                let alive = tokio::task::spawn_blocking(move || {
                    st.lock()
                        .query_row("SELECT 1", (), |r| r.get::<i64>(0))
                        .is_ok()
                })
                .await
                .unwrap_or(false);
                if alive {
                    notify.watchdog();
                }
            }
        });
        // Sign the audit head every N events or every interval, whichever
        // comes first, so a rewritten log is caught.
        let (cp_store, cp_keys, cp_lead) =
            (audit_store.clone(), audit_keys.clone(), leadership.clone());
        let (every_events, every) = (
            i64::from(config.audit_checkpoint_events),
            config.audit_checkpoint_interval,
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECKPOINT_POLL.min(every));
            let mut last = std::time::Instant::now();
            loop {
                tick.tick().await;
                if !cp_lead.is_leader() {
                    continue;
                }
                let (st, k) = (cp_store.clone(), cp_keys.clone());
                let due = last.elapsed() >= every;
                let signed = tokio::task::spawn_blocking(move || {
                    let unsigned = crate::audit::unsigned_events(&st.lock()).unwrap_or(0);
                    let sign = unsigned >= every_events || (due && unsigned > 0);
                    if sign {
                        checkpoint(&st, k.as_ref());
                    }
                    sign
                })
                .await
                .unwrap_or(false);
                if signed || due {
                    last = std::time::Instant::now();
                }
            }
        });
        let app = api::router(state);
        let acceptor = peer::PeerAcceptor {
            inner: axum_server::tls_rustls::RustlsAcceptor::new(
                axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(tls)),
            ),
        };
        let served = axum_server::from_tcp(listener)
            .acceptor(acceptor)
            .handle(handle)
            .serve(app.into_make_service_with_connect_info::<std::net::SocketAddr>())
            .await
            .context("serve HTTPS");
        notifier.stopping();
        if leadership.is_leader() {
            checkpoint(&audit_store, audit_keys.as_ref());
        }
        leadership.resign(&audit_store.lock());
        served
    })
}

/// How often the revoker looks for due leases, and how many it takes.
const REVOKER_TICK: Duration = Duration::from_secs(1);
const REVOKER_BATCH: usize = 256;
/// The retention sweep runs at the first tick and every this many after.
const SWEEP_EVERY_TICKS: u64 = 600;
/// The reconciler compares ledger and databases every this many ticks.
const RECONCILE_EVERY_TICKS: u64 = 300;

/// How often the server looks whether an audit checkpoint is due.
const CHECKPOINT_POLL: Duration = Duration::from_secs(1);

fn checkpoint(store: &Store, keys: &dyn KeyStore) {
    match crate::audit::checkpoint(&mut store.lock(), keys) {
        Ok(Some(seq)) => tracing::info!(seq, "audit checkpoint signed"),
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "audit checkpoint failed"),
    }
}
