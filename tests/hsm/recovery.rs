//! The token goes away and comes back: the key store finds its keys again
//! by itself, without a restart, and fails fast while the token is away.

use std::time::{Duration, Instant};

use zeroth::lab::SoftHsm;
use zeroth_hsm::{KeyKind, KeyName, KeyStore, Pkcs11KeyStore};

#[test]
fn keys_are_found_again_once_the_token_is_back() {
    let lab = SoftHsm::start().unwrap();
    lab.export_conf();
    let store = Pkcs11KeyStore::open(&lab.pkcs11_config()).unwrap();
    let name = KeyName::new("recovery-test").unwrap();
    let public = store
        .get_or_generate(&name, KeyKind::EcdsaP256)
        .unwrap()
        .public;
    store.sign(&name, b"before").unwrap();

    let tokens = lab.dir().join("tokens");
    let away = lab.dir().join("tokens.away");
    std::fs::rename(&tokens, &away).unwrap();
    assert!(store.sign(&name, b"while away").is_err());
    // While it stays away, callers are not held up by retries.
    let t = Instant::now();
    for _ in 0..20 {
        assert!(store.sign(&name, b"while away").is_err());
    }
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    std::fs::rename(&away, &tokens).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let sig = loop {
        match store.sign(&name, b"after") {
            Ok(sig) => break sig,
            Err(e) if Instant::now() > deadline => panic!("the HSM did not come back: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    assert_eq!(sig.len(), 64);
    // The same key, not a new one made while the login was lost.
    assert_eq!(store.public_key(&name).unwrap(), public.unwrap());
    assert_eq!(store.list().unwrap().len(), 1);
}

#[test]
fn a_server_whose_token_went_away_is_ready_again_by_itself() {
    use zeroth::lab::ZerothServer;
    let hsm = SoftHsm::start().unwrap();
    let server = ZerothServer::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_zeroth")),
        &hsm,
        &format!(
            "[[group]]\nname = \"edge\"\nek_allow = [\"{}\"]\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    // A new client each time: a new connection, a full TLS handshake.
    let ready = || {
        zeroth::agent::enrol::client(&server.bundle())
            .unwrap()
            .get(format!("{}/readyz", server.url()))
            .send()
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string())
    };
    assert_eq!(ready(), Ok(200));

    let tokens = hsm.dir().join("tokens");
    let away = hsm.dir().join("tokens.away");
    std::fs::rename(&tokens, &away).unwrap();
    // The TLS key is in the token: new connections fail, and say so.
    let deadline = Instant::now() + Duration::from_secs(20);
    while ready() == Ok(200) {
        assert!(Instant::now() < deadline, "still ready without its token");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::rename(&away, &tokens).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready() != Ok(200) {
        assert!(
            Instant::now() < deadline,
            "not ready again: {:?}\n{}",
            ready(),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = server.log();
    assert!(log.contains("TLS handshake refused"), "{log}");
    assert!(log.contains("the HSM is back"), "{log}");
}

/// Waits (up to 30 s) until every time `last` reports is after `started`:
/// each caller of a load has been served once.
fn served_since(started: Instant, last: impl Fn() -> Vec<Instant>) {
    let deadline = started + Duration::from_secs(30);
    while last().iter().any(|t| *t <= started) {
        assert!(Instant::now() < deadline, "the load never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Signs and seals from several threads at once while the token goes away
/// for `away` and comes back: every thread is served again within 10 s of
/// the token's return, with the same keys.
fn recovers_under_load(away: Duration) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let lab = SoftHsm::start().unwrap();
    lab.export_conf();
    let store = Arc::new(Pkcs11KeyStore::open(&lab.pkcs11_config()).unwrap());
    let signer = KeyName::new("load-ca").unwrap();
    let kek = KeyName::new("load-kek").unwrap();
    let public = store
        .get_or_generate(&signer, KeyKind::EcdsaP256)
        .unwrap()
        .public;
    store.get_or_generate(&kek, KeyKind::Aes256).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    // Each worker records when it last succeeded.
    let last_ok: Arc<Vec<std::sync::Mutex<Instant>>> = Arc::new(
        (0..6)
            .map(|_| std::sync::Mutex::new(Instant::now()))
            .collect(),
    );
    let last_err: Arc<Vec<std::sync::Mutex<String>>> = Arc::new(
        (0..6)
            .map(|_| std::sync::Mutex::new(String::new()))
            .collect(),
    );
    let started = Instant::now();
    let workers: Vec<_> = (0..6)
        .map(|i| {
            let (store, stop, last_ok) = (store.clone(), stop.clone(), last_ok.clone());
            let last_err = last_err.clone();
            let (signer, kek) = (signer.clone(), kek.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let done = match i % 3 {
                        0 | 1 => store.sign(&signer, b"under load").map(drop),
                        _ => store
                            .encrypt(&kek, b"sealed", b"aad")
                            .and_then(|ct| store.decrypt(&kek, &ct, b"aad"))
                            .map(drop),
                    };
                    if let Err(e) = done {
                        *last_err[i].lock().unwrap() = e.to_string();
                        // Fail fast while away; do not spin a core meanwhile.
                        std::thread::sleep(Duration::from_millis(5));
                    } else {
                        *last_ok[i].lock().unwrap() = Instant::now();
                    }
                }
            })
        })
        .collect();

    // Under load: every worker served at least once before the token goes.
    served_since(started, || {
        last_ok.iter().map(|t| *t.lock().unwrap()).collect()
    });
    let tokens = lab.dir().join("tokens");
    let hidden = lab.dir().join("tokens.away");
    std::fs::rename(&tokens, &hidden).unwrap();
    let gone = Instant::now();
    std::thread::sleep(away);
    std::fs::rename(&hidden, &tokens).unwrap();
    let back = Instant::now();

    let deadline = back + Duration::from_secs(10);
    loop {
        let all_served = last_ok.iter().all(|t| *t.lock().unwrap() > back);
        if all_served {
            break;
        }
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            let stale: Vec<(usize, String)> = (0..6)
                .filter(|&i| *last_ok[i].lock().unwrap() <= back)
                .map(|i| (i, last_err[i].lock().unwrap().clone()))
                .collect();
            panic!(
                "workers not served within 10 s of the token's return (away {:?}), with their last errors: {stale:?}",
                back - gone
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(store.public_key(&signer).unwrap(), public.unwrap());
    assert_eq!(store.list().unwrap().len(), 2, "no key made twice");
}

#[test]
fn keys_are_found_again_under_load_after_3_s_away() {
    recovers_under_load(Duration::from_secs(3));
}

#[test]
fn keys_are_found_again_under_load_after_12_s_away() {
    recovers_under_load(Duration::from_secs(12));
}

/// A server under load (new TLS handshakes, token exchanges, database users,
/// audit checkpoints: all signing or sealing in the HSM) while its token
/// goes away for `away` and comes back: within 10 s it serves every kind
/// of request again, without a restart, and its audit chain verifies.
fn server_recovers_under_load(away: Duration) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use zeroth::agent::enrol::{client, post_json};
    use zeroth::agent::token::{exchange, TokenOptions};
    use zeroth::lab::{groups, LabDir, Postgres, ZerothServer};
    use zeroth::wire::db::{CredsRequest, CredsResponse};

    let hsm = SoftHsm::start().unwrap();
    let pg = Postgres::start().unwrap();
    let server = ZerothServer::start_configured(
        std::path::Path::new(env!("CARGO_BIN_EXE_zeroth")),
        &hsm,
        "audit_checkpoint_interval = \"1s\"\naudit_checkpoint_events = 1",
        &format!(
            "[[group]]\nname = \"edge\"\nek_allow = [\"{}\"]\n{}",
            "0".repeat(64),
            groups::PG_READ_ONLY_ROLE
        ),
        &[],
    )
    .unwrap();
    server.add_postgres("pg", &pg).unwrap();
    let pid = server.pid();
    let dir = LabDir::new("token-hosts").unwrap();
    // Token hosts: some rotating their tokens all along, one asking for
    // database users with the SVID its first exchange gave it.
    let host = |name: &str| {
        let (ok, out) = server
            .cli(&["token", "create", "--group", "edge", "--ttl", "10m"], "")
            .unwrap();
        assert!(ok, "{out}");
        let token = out.lines().next().unwrap().trim().to_owned();
        TokenOptions {
            server: server.url().to_owned(),
            ca_bundle: server.bundle(),
            bootstrap: dir
                .write(&format!("{name}.token"), token.as_bytes(), 0o600)
                .unwrap(),
            state_dir: dir.join(name),
        }
    };
    let db_host = exchange(&host("db")).unwrap();
    let db_client = {
        use p256::pkcs8::EncodePrivateKey;
        let key = db_host.key.to_pkcs8_pem(Default::default()).unwrap();
        let identity =
            reqwest::Identity::from_pem(format!("{}{}", db_host.svid_pem, *key).as_bytes())
                .unwrap();
        reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(server.bundle()).unwrap()).unwrap(),
            )
            .identity(identity)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    };

    const KINDS: [&str; 3] = ["TLS handshake", "token exchange", "database user"];
    // Per kind: when it last succeeded, and its last error.
    let last: Arc<Vec<Mutex<(Instant, String)>>> = Arc::new(
        KINDS
            .iter()
            .map(|_| Mutex::new((Instant::now(), String::new())))
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let (url, bundle) = (server.url().to_owned(), server.bundle());
    // Three callers of each kind, so signing overlaps as on a busy server.
    let workers: Vec<_> = (0..3 * KINDS.len())
        .map(|n| {
            let i = n % KINDS.len();
            let (last, stop, url, bundle) =
                (last.clone(), stop.clone(), url.clone(), bundle.clone());
            // A chain is one host's: each exchanging caller has its own.
            let rotating = host(&format!("rotating-{n}"));
            let db_client = db_client.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let done: Result<(), String> = match i {
                        // A new client: a new connection, a full handshake.
                        0 => client(&bundle)
                            .map_err(|e| e.to_string())
                            .and_then(|c| {
                                c.get(format!("{url}/readyz"))
                                    .send()
                                    .map_err(|e| e.to_string())
                            })
                            .and_then(|r| match r.status().is_success() {
                                true => Ok(()),
                                false => Err(format!("readyz answered {}", r.status())),
                            }),
                        1 => exchange(&rotating).map(drop).map_err(|e| e.to_string()),
                        _ => post_json::<_, CredsResponse>(
                            &db_client,
                            &format!("{url}/v1/db/creds/app-ro"),
                            &CredsRequest {
                                ttl_seconds: Some(60),
                            },
                        )
                        .map(drop)
                        .map_err(|e| e.to_string()),
                    };
                    let mut l = last[i].lock().unwrap();
                    match done {
                        Ok(()) => l.0 = Instant::now(),
                        Err(e) => {
                            l.1 = e;
                            drop(l);
                            // Failing fast while the token is away; no spin.
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                }
            })
        })
        .collect();

    served_since(started, || {
        last.iter().map(|l| l.lock().unwrap().0).collect()
    });
    let tokens = hsm.dir().join("tokens");
    let hidden = hsm.dir().join("tokens.away");
    std::fs::rename(&tokens, &hidden).unwrap();
    std::thread::sleep(away);
    std::fs::rename(&hidden, &tokens).unwrap();
    let back = Instant::now();
    let deadline = back + Duration::from_secs(10);
    loop {
        let waiting: Vec<(&str, String)> = (0..KINDS.len())
            .filter(|&i| last[i].lock().unwrap().0 <= back)
            .map(|i| (KINDS[i], last[i].lock().unwrap().1.clone()))
            .collect();
        if waiting.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            panic!(
                "not served within 10 s of the token's return (away {away:?}): {waiting:?}\n{}",
                server.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(server.pid(), pid, "served again without a restart");
    let verified = std::process::Command::new(env!("CARGO_BIN_EXE_zeroth"))
        .args(["audit", "verify", "--config"])
        .arg(server.config())
        .env("SOFTHSM2_CONF", hsm.conf())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verified.stdout);
    assert!(
        verified.status.success() && said.contains("audit chain intact"),
        "{said}{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    let log = server.log();
    assert!(log.contains("the HSM is back"), "{log}");
}

#[test]
fn a_server_under_load_serves_again_after_its_token_was_away_3_s() {
    server_recovers_under_load(Duration::from_secs(3));
}

#[test]
fn a_server_under_load_serves_again_after_its_token_was_away_12_s() {
    server_recovers_under_load(Duration::from_secs(12));
}
