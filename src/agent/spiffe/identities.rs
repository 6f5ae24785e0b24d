//! The workload identities this agent holds: the registration entries the
//! server sends it, an X.509-SVID for each (its key made here, in memory,
//! never written anywhere; the server signs a CSR with the HSM CA), the
//! trust bundle and the JWT keys. A sync thread keeps them current: entries
//! every `refresh`, each SVID renewed at half its lifetime. Streams watch
//! the published [`Snapshot`] and send a new message when it changes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::agent::attest::Attested;
use crate::agent::upstream::{Connected, Upstream, UpstreamError};
use crate::wire::entry::{EntriesResponse, Entry, WorkloadSvidRequest, WorkloadSvidResponse};

/// Why a pass over the entries, or one SVID, did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("the server refuses this node ({status}: {reason}); every workload SVID is withdrawn")]
    NodeRefused { status: u16, reason: String },
    #[error("{path}: the server answered {status}: {reason}")]
    Answer {
        path: &'static str,
        status: u16,
        reason: String,
    },
    #[error("{path}: the answer does not parse: {detail}")]
    Malformed { path: &'static str, detail: String },
    #[error("the trust bundle: {0}")]
    Bundle(String),
    #[error("cannot make a key or CSR: {0}")]
    Key(String),
    #[error("cannot renew {0}")]
    Renewal(String),
}

/// Requests in flight at once while many SVIDs are due (the server batches
/// their commits; more in flight, fewer fsyncs per SVID).
const MINT_WORKERS: usize = 16;

/// One workload X.509-SVID and its private key.
pub struct Svid {
    pub entry: Entry,
    /// DER of the certificate (the CA signs leaves directly).
    pub cert_der: Vec<u8>,
    /// DER PKCS#8 private key, in this process's memory only.
    pub key_pkcs8: Zeroizing<Vec<u8>>,
    pub issued: SystemTime,
    pub not_after: SystemTime,
}

impl std::fmt::Debug for Svid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Svid")
            .field("spiffe_id", &self.entry.spiffe_id)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Svid {
    fn due(&self, now: SystemTime) -> bool {
        let life = self
            .not_after
            .duration_since(self.issued)
            .unwrap_or(Duration::ZERO);
        now >= self.issued + life / 2
    }
}

/// What the agent serves at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub trust_domain: String,
    pub entries: Arc<Vec<Entry>>,
    /// By entry id.
    pub svids: Arc<BTreeMap<String, Arc<Svid>>>,
    /// DER of the trust bundle's certificates, concatenated.
    pub bundle: Arc<Vec<u8>>,
    /// The JWKS document of the JWT-SVID keys.
    pub jwks: Arc<Vec<u8>>,
}

impl Snapshot {
    /// Whether an entry names an executable's hash (`unix:sha256`): only
    /// then is a caller's executable hashed.
    pub fn names_a_hash(&self) -> bool {
        self.entries.iter().any(|e| {
            e.selectors
                .iter()
                .any(|s| matches!(s, crate::wire::entry::Selector::Sha256(_)))
        })
    }

    /// The entries `caller` matches, in the order they were made.
    pub fn entries_for<'a>(&'a self, caller: &'a Attested) -> impl Iterator<Item = &'a Entry> {
        self.entries.iter().filter(|e| e.matches(&caller.facts))
    }

    /// The current SVIDs of the entries `caller` matches (the first is its
    /// default identity).
    pub fn svids_for(&self, caller: &Attested) -> Vec<Arc<Svid>> {
        let now = SystemTime::now();
        self.entries_for(caller)
            .filter_map(|e| self.svids.get(&e.id))
            .filter(|s| s.not_after > now)
            .cloned()
            .collect()
    }

    /// The trust domain's SPIFFE ID, the key of bundle maps.
    pub fn trust_domain_id(&self) -> String {
        format!("spiffe://{}", self.trust_domain)
    }
}

/// The published snapshot: streams subscribe to it.
#[derive(Clone)]
pub struct Identities {
    tx: watch::Sender<Snapshot>,
    upstream: Upstream,
    /// The programs each entry served lately: entry id -> who -> when.
    seen: Arc<std::sync::Mutex<BTreeMap<String, BTreeMap<String, SystemTime>>>>,
    /// When the bundle and JWT keys were last fetched.
    fetched: Arc<std::sync::Mutex<Option<Instant>>>,
}

/// The trust bundle and JWT keys are fetched at least this often.
const BUNDLE_REFRESH: Duration = Duration::from_secs(300);

/// Programs remembered per entry, for `zeroth workload list`.
const SEEN_PER_ENTRY: usize = 16;

impl Identities {
    pub fn new(upstream: Upstream) -> Self {
        Self {
            tx: watch::Sender::new(Snapshot::default()),
            upstream,
            seen: Arc::default(),
            fetched: Arc::default(),
        }
    }

    /// Notes that `who` was served the identities of `entries`.
    pub fn saw<'a>(&self, entries: impl Iterator<Item = &'a Entry>, who: &Attested) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for e in entries {
            let programs = seen.entry(e.id.clone()).or_default();
            programs.insert(who.describe(), SystemTime::now());
            while programs.len() > SEEN_PER_ENTRY {
                let oldest = programs
                    .iter()
                    .min_by_key(|(_, t)| **t)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    programs.remove(&k);
                }
            }
        }
    }

    /// What `zeroth workload list` shows: each entry, its SVID and the
    /// programs it served lately.
    pub fn listing(&self) -> serde_json::Value {
        let s = self.current();
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let unix = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        };
        let entries: Vec<serde_json::Value> = s
            .entries
            .iter()
            .map(|e| {
                let svid = s.svids.get(&e.id);
                let programs: Vec<serde_json::Value> = seen
                    .get(&e.id)
                    .into_iter()
                    .flatten()
                    .map(|(who, when)| serde_json::json!({"who": who, "seen": unix(*when)}))
                    .collect();
                serde_json::json!({
                    "entry": e,
                    "svid_expires": svid.map(|v| unix(v.not_after)),
                    "svid_issued": svid.map(|v| unix(v.issued)),
                    "workloads": programs,
                })
            })
            .collect();
        serde_json::json!({"ok": true, "trust_domain": s.trust_domain, "entries": entries})
    }

    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.tx.subscribe()
    }

    pub fn current(&self) -> Snapshot {
        self.tx.borrow().clone()
    }

    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Starts the sync thread: entries every `refresh`, SVIDs at half-life.
    pub fn start(&self, refresh: Duration) -> std::io::Result<()> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("workload-ids".into())
            .spawn(move || me.run(refresh))
            .map(|_| ())
    }

    fn run(&self, refresh: Duration) {
        let mut told = None;
        loop {
            let wait = match self
                .upstream
                .connect()
                .map_err(SyncError::from)
                .and_then(|c| self.sync(&c))
            {
                Ok(next) => {
                    told = None;
                    next.min(refresh)
                }
                Err(e) => {
                    if told.as_ref() != Some(&e) {
                        println!("workload identities: {e}");
                        told = Some(e);
                    }
                    self.drop_expired();
                    refresh.min(Duration::from_secs(5))
                }
            };
            std::thread::sleep(wait.max(Duration::from_millis(200)));
        }
    }

    /// Serves nothing any more.
    fn withdraw(&self) {
        self.tx.send_if_modified(|s| {
            let changed = !s.svids.is_empty() || !s.entries.is_empty();
            s.svids = Arc::default();
            s.entries = Arc::default();
            changed
        });
    }

    /// Removes SVIDs past their end (those the server would not renew).
    fn drop_expired(&self) {
        let now = SystemTime::now();
        self.tx.send_if_modified(|s| {
            let live: BTreeMap<_, _> = s
                .svids
                .iter()
                .filter(|(_, v)| v.not_after > now)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let changed = live.len() != s.svids.len();
            if changed {
                s.svids = Arc::new(live);
            }
            changed
        });
    }

    /// One pass; how long until an SVID is next due.
    fn sync(&self, conn: &Connected) -> Result<Duration, SyncError> {
        let (status, text) = conn.get("/v1/entries")?;
        if status == 401 || status == 403 {
            // The node may no longer act (revoked, or its token chain is):
            // its programs lose their identities now, not at expiry.
            self.withdraw();
            return Err(SyncError::NodeRefused {
                status,
                reason: reason(&text),
            });
        }
        if status != 200 {
            return Err(SyncError::Answer {
                path: "/v1/entries",
                status,
                reason: reason(&text),
            });
        }
        let EntriesResponse { entries, .. } =
            serde_json::from_str(&text).map_err(|e| SyncError::Malformed {
                path: "/v1/entries",
                detail: e.to_string(),
            })?;
        let old = self.current();
        // The trust bundle and the JWT keys change rarely: asked for when
        // the entries change, and every few minutes.
        let (bundle, trust_domain, jwks) = {
            let mut fetched = self.fetched.lock().unwrap_or_else(|p| p.into_inner());
            let stale = fetched.is_none_or(|t| t.elapsed() > BUNDLE_REFRESH);
            if stale || *old.entries != entries || old.bundle.is_empty() {
                let bundle_pem = get_text(conn, "/v1/bundle")?;
                let jwks = get_text(conn, "/v1/jwks")?;
                let (bundle, trust_domain) = bundle_der(&bundle_pem)?;
                *fetched = Some(Instant::now());
                (Arc::new(bundle), trust_domain, Arc::new(jwks.into_bytes()))
            } else {
                (
                    old.bundle.clone(),
                    old.trust_domain.clone(),
                    old.jwks.clone(),
                )
            }
        };
        let now = SystemTime::now();
        let due: Vec<&Entry> = entries
            .iter()
            .filter(|e| match old.svids.get(&e.id) {
                Some(s) => s.entry != **e || s.due(now),
                None => true,
            })
            .collect();
        let pass = Instant::now();
        let mut minted = mint_all(conn, &due);
        if !minted.is_empty() {
            let ok = minted.values().filter(|r| r.is_ok()).count();
            println!(
                "workload SVIDs: {ok} of {} issued in {} ms",
                minted.len(),
                pass.elapsed().as_millis()
            );
        }
        let mut svids = BTreeMap::new();
        let mut failures = Vec::new();
        for e in &entries {
            match minted.remove(&e.id) {
                Some(Ok(svid)) => {
                    println!(
                        "workload SVID issued: {} (entry {}) valid until {}",
                        e.spiffe_id,
                        e.id,
                        humantime::format_rfc3339_seconds(svid.not_after)
                    );
                    svids.insert(e.id.clone(), Arc::new(svid));
                }
                Some(Err(why)) => {
                    failures.push(format!("{}: {why}", e.spiffe_id));
                    if let Some(s) = old.svids.get(&e.id).filter(|s| s.not_after > now) {
                        svids.insert(e.id.clone(), s.clone());
                    }
                }
                None => {
                    if let Some(s) = old.svids.get(&e.id) {
                        svids.insert(e.id.clone(), s.clone());
                    }
                }
            }
        }
        let next = svids
            .values()
            .map(|s| {
                let life = s.not_after.duration_since(s.issued).unwrap_or_default();
                (s.issued + life / 2)
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
            })
            .min()
            .unwrap_or(Duration::MAX);
        let snapshot = Snapshot {
            trust_domain,
            entries: Arc::new(entries),
            svids: Arc::new(svids),
            bundle,
            jwks,
        };
        self.tx.send_if_modified(|s| {
            let changed = !same(s, &snapshot);
            if changed {
                *s = snapshot;
            }
            changed
        });
        if failures.is_empty() {
            Ok(next)
        } else {
            Err(SyncError::Renewal(failures.join("; ")))
        }
    }
}

/// Whether two snapshots would give any caller the same messages.
fn same(a: &Snapshot, b: &Snapshot) -> bool {
    a.trust_domain == b.trust_domain
        && a.entries == b.entries
        && a.bundle == b.bundle
        && a.jwks == b.jwks
        && a.svids.len() == b.svids.len()
        && a.svids
            .iter()
            .zip(b.svids.iter())
            .all(|((ka, va), (kb, vb))| ka == kb && Arc::ptr_eq(va, vb))
}

fn get_text(conn: &Connected, path: &'static str) -> Result<String, SyncError> {
    match conn.get(path)? {
        (200, text) => Ok(text),
        (status, text) => Err(SyncError::Answer {
            path,
            status,
            reason: reason(&text),
        }),
    }
}

fn reason(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v["reason"].as_str().map(str::to_owned))
        .unwrap_or_else(|| text.chars().take(200).collect())
}

/// The bundle's certificates as concatenated DER, and the trust domain its
/// root names (its `spiffe://<td>` URI SAN).
fn bundle_der(pem: &str) -> Result<(Vec<u8>, String), SyncError> {
    let mut der = Vec::new();
    let mut trust_domain = None;
    for p in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let p = p.map_err(|e| SyncError::Bundle(format!("not PEM: {e}")))?;
        if let Ok(cert) = p.parse_x509() {
            if let Ok(Some(san)) = cert.subject_alternative_name() {
                for n in &san.value.general_names {
                    if let x509_parser::extensions::GeneralName::URI(u) = n {
                        if let Some(td) = u.strip_prefix("spiffe://") {
                            trust_domain.get_or_insert_with(|| td.trim_end_matches('/').to_owned());
                        }
                    }
                }
            }
        }
        der.extend_from_slice(&p.contents);
    }
    let td = trust_domain.ok_or_else(|| SyncError::Bundle("it names no trust domain".into()))?;
    Ok((der, td))
}

/// Mints SVIDs for `due`, [`MINT_WORKERS`] requests at a time.
fn mint_all(conn: &Connected, due: &[&Entry]) -> BTreeMap<String, Result<Svid, SyncError>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let out = std::sync::Mutex::new(BTreeMap::new());
    std::thread::scope(|s| {
        for _ in 0..MINT_WORKERS.min(due.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(e) = due.get(i) else { break };
                let r = mint(conn, e);
                out.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(e.id.clone(), r);
            });
        }
    });
    out.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// A new key for `entry`, and the server's SVID for it.
pub fn mint(conn: &Connected, entry: &Entry) -> Result<Svid, SyncError> {
    use base64::Engine;
    let started = Instant::now();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| SyncError::Key(e.to_string()))?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .map_err(|e| SyncError::Key(e.to_string()))?;
    let (status, text) = conn.post(
        "/v1/workload/x509",
        &WorkloadSvidRequest {
            entry_id: entry.id.clone(),
            csr: base64::engine::general_purpose::STANDARD.encode(csr.der()),
        },
    )?;
    if status != 200 {
        return Err(SyncError::Answer {
            path: "/v1/workload/x509",
            status,
            reason: reason(&text),
        });
    }
    let malformed = |detail: String| SyncError::Malformed {
        path: "/v1/workload/x509",
        detail,
    };
    let answer: WorkloadSvidResponse =
        serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(answer.svid.as_bytes())
        .map_err(|e| malformed(format!("the SVID is not PEM: {e}")))?;
    tracing::debug!(entry = %entry.id, took = ?started.elapsed(), "minted a workload SVID");
    Ok(Svid {
        entry: entry.clone(),
        cert_der: pem.contents,
        key_pkcs8: Zeroizing::new(key.serialize_der()),
        issued: SystemTime::now(),
        not_after: SystemTime::UNIX_EPOCH + Duration::from_secs(answer.expires.max(0) as u64),
    })
}
