//! Database proxies: a program connects to a local socket with no
//! password; the agent checks who it is (the kernel says), gets a fresh
//! database user for this one connection, authenticates upstream with it,
//! relays the bytes, and gives the user back when the connection closes.
//! The program never holds a credential it could reuse or leak.
//!
//! Each `[[proxy]]` listens on a Unix socket (and optionally loopback TCP);
//! the protocols are in `postgres/` and `mariadb/`, what both share (the
//! session's lease, the relay, use events) next to this file.

pub mod conn;
pub mod events;
pub mod lease;
pub mod mariadb;
pub mod postgres;
pub mod reactor;
pub mod relay;
mod session;
pub mod tcp_owner;
mod tls;

use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};

use super::attest::{self, Access, AttestError, Attested, Caller, HashCache};
use super::enrol::AgentError;
use super::spiffe::Identities;
use super::upstream::Upstream;
use crate::config::{ProxyConfig, ProxyEngine};
use events::EventQueue;

/// What every session of one proxy shares.
pub struct Ctx {
    pub config: ProxyConfig,
    pub upstream: Upstream,
    pub events: Arc<EventQueue>,
    pub cancels: postgres::CancelKeys,
    /// Registration entries: a program whose entry names this proxy's
    /// role is admitted too.
    pub ids: Option<Identities>,
    /// Open connections per uid.
    pub slots: crate::agent::slots::Slots,
    /// Who the configuration admits: `allow_uids` and `allow_units`, for
    /// this proxy's role.
    pub access: Access,
}

/// Why a proxy refuses a caller, in words the program's driver shows.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("zeroth proxy {proxy}: {source}")]
    Unattested { proxy: String, source: AttestError },
    #[error("zeroth proxy {proxy} refuses {who}: it admits uids {uids:?}, units {units:?} and programs whose registration entry names role {role}")]
    NotAdmitted {
        proxy: String,
        who: String,
        uids: Vec<u32>,
        units: Vec<String>,
        role: String,
    },
}

/// A caller the proxy admitted, with what was attested of it.
pub struct Admitted {
    pub who: Caller,
    attested: Attested,
}

impl Admitted {
    /// Whether the caller is still the process, running the program, it was
    /// when admitted; checked before its session gets a database user.
    pub fn still_same(&self) -> Result<(), AttestError> {
        self.attested.still_same()
    }
}

impl Ctx {
    /// Whether `who` may connect; the refusal names it and the proxy.
    pub fn admit(&self, who: Result<Attested, AttestError>) -> Result<Admitted, Refused> {
        let who = who.map_err(|source| Refused::Unattested {
            proxy: self.config.name.clone(),
            source,
        })?;
        let caller = Caller {
            uid: who.uid,
            pid: who.pid,
            unit: who.unit.clone(),
        };
        let entry_roles: Vec<String> = self.ids.as_ref().map_or_else(Vec::new, |ids| {
            ids.current()
                .entries_for(&who)
                .flat_map(|e| e.roles.iter().cloned())
                .collect()
        });
        if self
            .access
            .granted(&caller, &entry_roles)
            .includes(&self.config.role)
        {
            return Ok(Admitted {
                who: caller,
                attested: who,
            });
        }
        Err(Refused::NotAdmitted {
            proxy: self.config.name.clone(),
            who: caller.describe(),
            uids: self.config.allow_uids.clone(),
            units: self.config.allow_units.clone(),
            role: self.config.role.clone(),
        })
    }
}

/// The running proxies; their sockets are removed when dropped.
pub struct Proxies {
    runtime: Option<tokio::runtime::Runtime>,
    sockets: Vec<PathBuf>,
}

impl Drop for Proxies {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        for s in &self.sockets {
            let _ = std::fs::remove_file(s);
        }
    }
}

fn bind_unix(config: &ProxyConfig) -> Result<(UnixListener, PathBuf), AgentError> {
    let path = config.socket_path();
    let file_err = |what: &'static str| {
        let path = path.clone();
        move |source| AgentError::File { what, path, source }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(file_err("create the proxy's directory"))?;
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(file_err("bind the proxy's socket"))?;
    // Anyone may connect: who they are is the kernel's answer, checked per
    // connection.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
        .map_err(file_err("open the proxy's socket"))?;
    Ok((listener, path))
}

impl Proxies {
    /// Binds every proxy's sockets and serves them on a runtime of their
    /// own; use events go to `events`.
    pub fn serve(
        configs: &[ProxyConfig],
        upstream: &Upstream,
        events: &Arc<EventQueue>,
        ids: Option<Identities>,
    ) -> Result<Self, AgentError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("proxy")
            .enable_all()
            .build()
            .map_err(|e| AgentError::BadAnswer(format!("cannot start the proxies: {e}")))?;
        let _entered = runtime.enter();
        let mut sockets = Vec::new();
        let hashes = Arc::new(HashCache::default());
        for config in configs {
            let ctx = Arc::new(Ctx {
                config: config.clone(),
                upstream: upstream.clone(),
                events: events.clone(),
                cancels: postgres::CancelKeys::default(),
                ids: ids.clone(),
                slots: crate::agent::slots::Slots::default(),
                access: Access::for_role(&config.role, &config.allow_uids, &config.allow_units),
            });
            let (unix, path) = bind_unix(config)?;
            sockets.push(path.clone());
            runtime.spawn(accept_unix(ctx.clone(), unix, hashes.clone()));
            let mut listening = path.display().to_string();
            if let Some(addr) = config.tcp {
                let std = std::net::TcpListener::bind(addr).map_err(|source| AgentError::File {
                    what: "listen on the proxy's TCP address",
                    path: PathBuf::from(addr.to_string()),
                    source,
                })?;
                std.set_nonblocking(true)
                    .map_err(|source| AgentError::File {
                        what: "listen on the proxy's TCP address",
                        path: PathBuf::from(addr.to_string()),
                        source,
                    })?;
                let tcp = TcpListener::from_std(std).map_err(|source| AgentError::File {
                    what: "listen on the proxy's TCP address",
                    path: PathBuf::from(addr.to_string()),
                    source,
                })?;
                listening.push_str(&format!(" and {addr}"));
                runtime.spawn(accept_tcp(ctx, tcp));
            }
            println!(
                "proxy {} ({}, role {}) on {listening}",
                config.name,
                config.engine.as_str(),
                config.role
            );
        }
        Ok(Self {
            runtime: Some(runtime),
            sockets,
        })
    }
}

/// After a failed accept (out of descriptors, most often), a pause before
/// the next: a busy loop would take a core and help no one.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

async fn accept_unix(ctx: Arc<Ctx>, listener: UnixListener, hashes: Arc<HashCache>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(proxy = %ctx.config.name, error = %e, "accept failed; pausing");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let (ctx, hashes) = (ctx.clone(), hashes.clone());
        // Executables are hashed only when an entry names a hash.
        hashes.wanted(
            ctx.ids
                .as_ref()
                .is_some_and(|ids| ids.current().names_a_hash()),
        );
        tokio::spawn(async move {
            // Attested as the workload socket attests (the pid pinned, and
            // the executable checked again before a user is made), before
            // the first byte is read.
            let who = match stream.as_fd().try_clone_to_owned() {
                Ok(fd) => tokio::task::spawn_blocking(move || attest::attest(&fd, &hashes))
                    .await
                    .unwrap_or_else(|e| Err(AttestError::Credentials(e.to_string()))),
                Err(e) => Err(AttestError::Credentials(e.to_string())),
            };
            serve(ctx, conn::Conn::Unix(stream), who).await
        });
    }
}

async fn accept_tcp(ctx: Arc<Ctx>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(proxy = %ctx.config.name, error = %e, "accept failed; pausing");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr();
        let who = match local {
            Ok(local) => tcp_owner::owner(peer, local)
                .map(|uid| Attested {
                    uid,
                    pid: 0,
                    unit: None,
                    facts: vec![crate::wire::entry::Selector::Uid(uid)],
                    pinned: false,
                    process: Default::default(),
                })
                .map_err(|e| AttestError::TcpOwner(e.to_string())),
            Err(e) => Err(AttestError::TcpOwner(e.to_string())),
        };
        tokio::spawn(serve(ctx.clone(), conn::Conn::Tcp(stream), who));
    }
}

async fn serve(ctx: Arc<Ctx>, stream: conn::Conn, who: Result<Attested, AttestError>) {
    // Counted per uid; a caller that cannot be attested counts as uid
    // u32::MAX (nobody's), with the not-admitted limit.
    let uid = who.as_ref().map_or(u32::MAX, |w| w.uid);
    // Admission is decided once, here, before anything is read.
    let admitted = ctx.admit(who);
    let limit = match admitted {
        Ok(_) => crate::agent::slots::ADMITTED,
        Err(_) => crate::agent::slots::NOT_ADMITTED,
    };
    let Some(_slot) = ctx.slots.take(uid, limit) else {
        // Closed at once: no read, no answer, no descriptor kept.
        return;
    };
    match ctx.config.engine {
        ProxyEngine::Postgres => postgres::serve(ctx, stream, admitted).await,
        ProxyEngine::Mariadb => mariadb::serve(ctx, stream, admitted).await,
    }
}
