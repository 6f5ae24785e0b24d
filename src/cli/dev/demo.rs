//! `zeroth demo`: the newcomer's first look at zeroth, on a private lab.

use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};
use clap::Args;
use secrecy::ExposeSecret;
use std::sync::Arc;
use zeroth_attest::verify::credential::{check_activation, make_credential};
use zeroth_attest::verify::ek::check_ek;
use zeroth_attest::verify::public::Public;
use zeroth_attest::verify::quote::{check_ak, verify_quote, Ak};
use zeroth_attest::{AkAlgorithm, Attester, EkAlgorithm};

use zeroth_hsm::{Binding, Capability, KeyName, KeyStore, Pkcs11KeyStore, PublicKey, Sealer};

use crate::lab::{self, Bench, Component, MariaDb, Postgres, SoftHsm, Sshd, Swtpm};

#[derive(Debug, Args)]
pub struct DemoArgs {}

pub fn run(_args: &DemoArgs) -> Result<()> {
    let started = Instant::now();
    println!(
        "zeroth {} demo: starting a private lab on 127.0.0.1",
        env!("CARGO_PKG_VERSION")
    );
    let bench = Bench::start(&Component::ALL).context("start the lab")?;
    println!("lab ready in {:.1}s\n", started.elapsed().as_secs_f64());
    let (Some(tpm), Some(hsm), Some(pg), Some(maria), Some(sshd)) = (
        &bench.tpm,
        &bench.hsm,
        &bench.postgres,
        &bench.mariadb,
        &bench.sshd,
    ) else {
        anyhow::bail!("the lab started without all of its components");
    };

    show_tpm(tpm)?;
    show_hsm(hsm)?;
    show_postgres(pg)?;
    show_mariadb(maria)?;
    show_sshd(sshd)?;
    // Last: it hands the PostgreSQL admin password to zeroth, which rotates it.
    show_enrolment(tpm, hsm, pg, maria)?;

    let pids = bench.pids();
    drop(bench);
    let left: Vec<u32> = pids
        .into_iter()
        .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
        .collect();
    anyhow::ensure!(
        left.is_empty(),
        "lab processes still running after shutdown: {left:?}"
    );
    println!("\nlab stopped: every daemon reaped, temporary directories removed");
    Ok(())
}

fn show_tpm(lab: &Swtpm) -> Result<()> {
    let anchors = lab.trust_anchors()?;
    println!(
        "swtpm {} on loopback; the lab CA plays the TPM manufacturer",
        lab.version()
    );
    println!(
        "$ zeroth tpm info --tcti {} --ek-roots <lab CA>",
        lab.tcti()
    );
    let tpm = Attester::open(&lab.tcti())?;
    crate::cli::tpm::print_info(&tpm, anchors.clone(), true)?;

    // What enrolment will do: the machine proves its AK lives beside its EK,
    // then quotes its boot PCRs; the verifier needs no TPM of its own.
    println!("\n$ attestation round trip (machine: TPM through tss-esapi; verifier: pure Rust)");
    let ek_pub = tpm.run(|t| t.ek_public(EkAlgorithm::Rsa2048))?;
    let ek_cert = tpm.run(|t| t.ek_certificate(EkAlgorithm::Rsa2048))?;
    let ak_blob = tpm.run(|t| t.create_ak(AkAlgorithm::EccP256))?;
    let ek = Public::from_tpm2b(&ek_pub)?;
    check_ek(&ek, Some(&ek_cert), &anchors, &[], SystemTime::now())?;
    let ak_public = Public::from_tpm2b(&ak_blob.public)?;
    check_ak(&ak_public)?;
    println!(
        "           EK certificate matches the EK; AK {} is fixedTPM, restricted, sign-only",
        hex::encode(&ak_public.name()[2..10])
    );
    let secret: [u8; 32] = rand::random();
    let cred = make_credential(&ek, &ak_public.name(), &secret)?;
    let blob = ak_blob.clone();
    let recovered = tpm.run(move |t| {
        t.activate_credential(&blob, &cred.credential_blob, &cred.encrypted_secret)
    })?;
    check_activation(&secret, &recovered)?;
    println!("           MakeCredential -> ActivateCredential: secret recovered, so AK and EK share one TPM");
    let nonce: [u8; 32] = rand::random();
    let ak = Ak::under_ek(ak_public, &ek);
    let blob = ak_blob.clone();
    let quote = tpm.run(move |t| t.quote(&blob, &[0, 1, 2, 3, 4, 5, 6, 7], &nonce))?;
    let v = verify_quote(
        &ak,
        &quote.attest,
        &quote.signature,
        &nonce,
        &quote.pcrs,
        None,
    )?;
    println!(
        "           quote over sha256 PCRs 0-7 verified: nonce, signer, PCR digest; resetCount {}, clock {} ms",
        v.clock.reset_count, v.clock.clock
    );
    let mut forged = quote.attest.clone();
    if let Some(b) = forged.last_mut() {
        *b ^= 1;
    }
    let refused = verify_quote(&ak, &forged, &quote.signature, &nonce, &quote.pcrs, None)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_else(|| "ACCEPTED".into());
    println!("           the same quote with one bit flipped: refused ({refused})");
    Ok(())
}

fn show_hsm(hsm: &SoftHsm) -> Result<()> {
    hsm.export_conf();
    let store = Pkcs11KeyStore::open(&hsm.pkcs11_config())?;
    let token = store.module().token_summary(store.token())?;
    let caps: Vec<String> = Capability::ALL
        .iter()
        .map(|c| match token.supports(*c) {
            true => format!("{c} yes"),
            false => format!("{c} MISSING {}", token.missing(*c).join(",")),
        })
        .collect();
    println!(
        "PKCS#11    SoftHSM {} ({})",
        hsm.version(),
        hsm.module().display()
    );
    println!(
        "           token \"{}\" ({} {}, serial {}): {}",
        token.label,
        token.manufacturer,
        token.model,
        token.serial,
        caps.join(", ")
    );
    anyhow::ensure!(
        Capability::ALL.iter().all(|c| token.supports(*c)),
        "the token lacks mechanisms zeroth needs"
    );

    println!(
        "\n$ zeroth hsm init   # zeroth's root keys, generated inside the token, never extractable"
    );
    crate::cli::hsm::init(&store)?;

    let ca = KeyName::new("ssh-user-ca")?;
    let message = b"zeroth demo: signed inside the HSM";
    let sig = store.sign(&ca, message)?;
    let Some(PublicKey::Ed25519(pk)) = store
        .list()?
        .into_iter()
        .find(|k| k.name == ca)
        .and_then(|k| k.public)
    else {
        anyhow::bail!("ssh-user-ca has no Ed25519 public key");
    };
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&pk)?;
    vk.verify_strict(message, &ed25519_dalek::Signature::from_slice(&sig)?)
        .context("the HSM's Ed25519 signature does not verify")?;
    println!("           ssh-user-ca signed a message in the HSM; ed25519-dalek verified it");

    let store: Arc<dyn KeyStore> = Arc::new(store);
    let sealer = Sealer::new(store, KeyName::new("store-kek")?)?;
    let here = Binding {
        table: "db_connections",
        record: "demo",
        column: "admin_password",
    };
    let sealed = sealer.seal(here, b"an admin password")?;
    let opened = sealer.open(here, &sealed)?;
    anyhow::ensure!(
        &opened[..] == b"an admin password",
        "sealed value did not round-trip"
    );
    let moved = sealer.open(
        Binding {
            record: "other",
            ..here
        },
        &sealed,
    );
    anyhow::ensure!(moved.is_err(), "a sealed value opened in another row");
    println!(
        "           sealed a secret under store-kek ({} bytes); it opens in its row and not in another",
        sealed.len()
    );
    Ok(())
}

fn show_enrolment(tpm: &Swtpm, hsm: &SoftHsm, pg: &Postgres, maria: &MariaDb) -> Result<()> {
    use crate::agent::{enrol, EnrolOptions, Outcome};
    use crate::lab::{LabDir, ZerothServer};

    let roots = LabDir::new("demo-roots")?;
    std::fs::copy(tpm.ca_root_pem(), roots.join("lab-root.pem"))?;
    let zero = "0".repeat(64);
    let login = lab::current_user_name()?;
    let group = format!(
        "[[group]]\nname = \"edge\"\nek_roots = \"{}\"\nek_intermediates = \"{}\"\nauto_approve = true\nsvid_ttl = \"10m\"\npcrs = [0, 1, 2, 3, 4, 5, 6, 7, 10]\npcr_policy = {{ \"sha256:10\" = \"{zero}\" }}\n\n[[db_role]]\nname = \"app-ro\"\nconnection = \"pg\"\nschema = \"public\"\naccess = \"read-only\"\ndefault_ttl = \"10m\"\nallow_groups = [\"edge\"]\n\n[[db_role]]\nname = \"shop-rw\"\nconnection = \"maria\"\nschema = \"shop\"\naccess = \"read-write\"\nallow_groups = [\"edge\"]\n\n[[ssh_role]]\nname = \"ops\"\nprincipals = [\"{login}\"]\nallow_groups = [\"edge\"]\n\n[[ssh_role]]\nname = \"hosts\"\ncert_type = \"host\"\nprincipals = [\"127.0.0.1\"]\ndefault_ttl = \"1h\"\nallow_groups = [\"edge\"]\n",
        roots.path().display(),
        tpm.ca_intermediate_pem().display()
    );
    let exe = std::env::current_exe().context("find the zeroth binary")?;
    let mut server = ZerothServer::start(&exe, hsm, &group)?;
    println!("\n$ zeroth server   # keys in the lab token; trusts the lab CA as TPM manufacturer; PCR 10 must be zero");
    println!(
        "           listening on {} (TLS 1.3, certificate from the HSM CA, key in the HSM)",
        server.url()
    );
    show_api_document(&server)?;

    let agent_dir = LabDir::new("demo-agent")?;
    let options = EnrolOptions {
        server: server.url().to_owned(),
        ca_bundle: server.bundle(),
        group: "edge".into(),
        tcti: tpm.tcti(),
        state_dir: agent_dir.path().to_owned(),
        event_log: None,
    };
    println!("$ zeroth agent enroll --group edge   # EK cert + AK -> credential activation -> quote -> certified TPM key");
    let Outcome::Approved {
        node_id,
        spiffe_id,
        svid_pem,
    } = enrol(&options)?
    else {
        anyhow::bail!("the demo node was not approved");
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(svid_pem.as_bytes())?;
    let cert = pem.parse_x509()?;
    println!("           node {node_id} enrolled: {spiffe_id}");
    println!(
        "           X.509-SVID issued by \"{}\", valid until {}, for a key that never leaves the TPM",
        cert.issuer(),
        cert.validity().not_after
    );
    let mut files: Vec<String> = std::fs::read_dir(agent_dir.path())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    println!(
        "           on the node's disk: {} (public or TPM-wrapped only)",
        files.join(", ")
    );

    println!(
        "           chain: {spiffe_id} -> \"{}\" (the trust bundle, key x509-ca in the HSM)",
        cert.issuer()
    );

    show_renewal(&options, &svid_pem)?;
    show_jwt(&options, &svid_pem, &server)?;
    super::demo_db::show_db_creds(&options, &server, pg)?;
    super::demo_db::show_token_host(&server, pg)?;
    super::demo_proxy::show_proxies(&server, maria)?;
    super::demo_spiffe::show_workload_identities(&server)?;
    super::demo_ssh::show_ssh(&options, &server)?;

    println!("$ tpm2_pcrextend 10:sha256=...   # the node's measured state changes");
    lab::process::run(
        "tpm2_pcrextend",
        std::process::Command::new(lab::tools::TPM2_PCREXTEND.path()?)
            .arg(format!("10:sha256={}", "ab".repeat(32)))
            .env("TPM2TOOLS_TCTI", tpm.tcti())
            .env("TSS2_LOG", "all+none"),
    )?;
    match crate::agent::renew(&options) {
        Ok(_) => anyhow::bail!("the drifted node was renewed"),
        Err(e) => println!("           renewal: {e}"),
    }
    match enrol(&options) {
        Ok(_) => anyhow::bail!("the drifted node was accepted"),
        Err(e) => println!("           enrolment: {e}"),
    }

    println!("$ zeroth node revoke {node_id}   # over the admin socket, as root");
    let answer = crate::server::admin::call(
        &server.admin_socket(),
        &crate::server::admin::AdminRequest {
            op: "node.revoke".into(),
            id: Some(node_id.clone()),
            group: None,
            ttl_secs: None,
            ..Default::default()
        },
    )
    .map_err(anyhow::Error::msg)?;
    println!(
        "           node {node_id} is now {}",
        answer["state"].as_str().unwrap_or("?")
    );
    match crate::agent::renew(&options) {
        Ok(_) => anyhow::bail!("the revoked node was renewed"),
        Err(e) => println!("           renewal: {e}"),
    }
    println!("$ zeroth agent enroll --group edge   # the revoked TPM starts over");
    match enrol(&options) {
        Ok(_) => anyhow::bail!("the revoked node enrolled again"),
        Err(e) => println!("           enrolment: {e}"),
    }

    println!("$ for i in $(seq 30); do curl -X POST https://.../v1/enroll/begin -d '{{}}'; done   # no credential needed, so metered");
    let http = crate::agent::enrol::client(&server.bundle())?;
    let mut limited = None;
    for i in 1..=30 {
        let r = http
            .post(format!("{}/v1/enroll/begin", server.url()))
            .header("content-type", "application/json")
            .body("{}")
            .send()?;
        if r.status().as_u16() == 429 {
            let after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?")
                .to_owned();
            limited = Some((i, after));
            break;
        }
    }
    let (i, after) = limited.context("30 begins from one address were all served")?;
    println!("           request {i}: 429 Too Many Requests, Retry-After: {after}");

    super::demo_backup::show_backup(&server, hsm, &group)?;

    server.stop();
    let store = crate::store::Store::open(&server.database())?;
    let keys = Pkcs11KeyStore::open(&hsm.pkcs11_config())?;
    let key = keys.public_key(&KeyName::new(crate::audit::CHECKPOINT_KEY)?)?;
    let report = crate::audit::verify(&store.lock(), &key)?;
    let kinds: Vec<String> = crate::audit::tail(&store.lock(), 9)?
        .into_iter()
        .map(|e| e.kind)
        .collect();
    println!("$ zeroth audit verify");
    println!(
        "           audit chain intact: {} events ({}), {} HSM-signed checkpoint(s)",
        report.events,
        kinds.join(", "),
        report.checkpoints
    );
    drop(store);
    super::demo_cluster::show_cluster(&server, hsm, &group)
}

fn serial_of(pem: &str) -> Result<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())?;
    Ok(pem.parse_x509()?.raw_serial_as_string())
}

fn show_renewal(options: &crate::agent::EnrolOptions, first: &str) -> Result<()> {
    println!("$ zeroth agent run   # at half-life: mTLS with the TPM key, fresh quote, new SVID");
    let crate::agent::Outcome::Approved { svid_pem, .. } = crate::agent::renew(options)? else {
        anyhow::bail!("the renewal was not approved");
    };
    println!(
        "           renewed over mTLS: serial {} -> {}",
        serial_of(first)?,
        serial_of(&svid_pem)?
    );
    Ok(())
}

fn show_jwt(
    options: &crate::agent::EnrolOptions,
    svid_pem: &str,
    server: &crate::lab::ZerothServer,
) -> Result<()> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use p256::ecdsa::signature::Verifier;
    println!("$ zeroth agent jwt --audience payments-db   # a JWT-SVID, signed in the HSM");
    let svid =
        std::fs::read_to_string(options.state_dir.join("svid.pem")).unwrap_or(svid_pem.to_owned());
    let jwt = crate::agent::jwt(options, &svid, &["payments-db".to_owned()], None)?;
    // What any relying party does: discovery, JWKS, signature and audience.
    let anyone = crate::agent::enrol::client(&server.bundle())?;
    let discovery: serde_json::Value = anyone
        .get(format!("{}/.well-known/openid-configuration", server.url()))
        .send()?
        .json()?;
    let jwks: serde_json::Value = anyone
        .get(format!("{}/v1/jwks", server.url()))
        .send()?
        .json()?;
    let parts: Vec<&str> = jwt.token.split('.').collect();
    anyhow::ensure!(parts.len() == 3, "a JWT has three parts");
    let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0])?)?;
    let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1])?)?;
    let jwk = jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["kid"] == header["kid"])
        .context("the JWT's kid is not in the JWKS")?;
    let coord = |c: &str| URL_SAFE_NO_PAD.decode(jwk[c].as_str().unwrap_or_default());
    let point = [vec![4u8], coord("x")?, coord("y")?].concat();
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)?;
    let sig = p256::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2])?)?;
    key.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)?;
    anyhow::ensure!(claims["aud"] == "payments-db" && claims["iss"] == discovery["issuer"]);
    println!(
        "           sub {}, aud {}, expires in {}s; verified with the JWKS named by {}/.well-known/openid-configuration",
        claims["sub"].as_str().unwrap_or("?"),
        claims["aud"],
        jwt.expires - crate::store::now(),
        discovery["issuer"].as_str().unwrap_or("?")
    );
    Ok(())
}

pub(super) fn admin_call(
    server: &crate::lab::ZerothServer,
    req: crate::server::admin::AdminRequest,
) -> Result<serde_json::Value> {
    crate::server::admin::call(&server.admin_socket(), &req).map_err(anyhow::Error::msg)
}

fn show_postgres(pg: &Postgres) -> Result<()> {
    let out = lab::process::run(
        "psql",
        std::process::Command::new(lab::tools::PSQL.path()?)
            .arg(pg.conninfo(lab::postgres::SUPERUSER, "postgres"))
            .args(["-XAtqc", "SHOW server_version"])
            .env("PGPASSWORD", pg.password().expose_secret()),
    )?;
    println!(
        "PostgreSQL {} at {} (superuser logged in with SCRAM-SHA-256; server_version {})",
        pg.version(),
        pg.addr(),
        out.trim()
    );
    Ok(())
}

fn show_mariadb(db: &MariaDb) -> Result<()> {
    let scheduler = db.query("SELECT @@event_scheduler")?;
    println!(
        "MariaDB    {} at {} (root logged in with its password; event_scheduler={})",
        db.version(),
        db.addr(),
        scheduler.trim()
    );
    Ok(())
}

fn show_sshd(sshd: &Sshd) -> Result<()> {
    let host_key = sshd.host_public_key()?;
    let kind = host_key.split_whitespace().next().unwrap_or("?");
    println!(
        "OpenSSH    sshd {} at {} (host key {kind}, logins as {})",
        sshd.version(),
        sshd.addr(),
        sshd.login_user()
    );
    Ok(())
}

/// The API's OpenAPI document, as any client can fetch it.
fn show_api_document(server: &crate::lab::ZerothServer) -> Result<()> {
    println!("$ curl https://.../v1/openapi.json   # the HTTP API, described");
    let doc: serde_json::Value = crate::agent::enrol::client(&server.bundle())?
        .get(format!("{}/v1/openapi.json", server.url()))
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.json())
        .context("fetch the OpenAPI document")?;
    let operations: Vec<&serde_json::Value> = doc["paths"]
        .as_object()
        .into_iter()
        .flat_map(|paths| paths.values())
        .filter_map(|item| item.as_object())
        .flat_map(|item| item.values())
        .collect();
    let mtls = operations
        .iter()
        .filter(|op| op.get("security").is_some())
        .count();
    println!(
        "           OpenAPI {}: {} operations, {mtls} of them for holders of an SVID (mTLS); `make fuzz-api` checks the server against it",
        doc["openapi"].as_str().unwrap_or("?"),
        operations.len()
    );
    Ok(())
}
