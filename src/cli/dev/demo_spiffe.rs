//! The demo's workload identity step: registration entries give two
//! services their own SPIFFE IDs; a stock py-spiffe program in one prints
//! its identity, then the two open mTLS to each other with their X.509-SVIDs
//! and each checks the other's SPIFFE ID.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::lab::{self, clients, LabDir, ServiceCgroup, ZerothServer};
use crate::server::admin::AdminRequest;

const SHOP: &str = "spiffe://lab.zeroth/app/shop";
const BILLING: &str = "spiffe://lab.zeroth/app/billing";

fn create_entry(server: &ZerothServer, spiffe_id: &str, unit: &str) -> Result<()> {
    create_entry_with(server, spiffe_id, &[format!("systemd:unit:{unit}")])
}

fn create_entry_with(server: &ZerothServer, spiffe_id: &str, selectors: &[String]) -> Result<()> {
    let flags: Vec<String> = selectors
        .iter()
        .map(|s| format!("--selector {s}"))
        .collect();
    println!(
        "$ zeroth entry create --group edge --spiffe-id {spiffe_id} {}",
        flags.join(" ")
    );
    crate::server::admin::call(
        &server.admin_socket(),
        &AdminRequest {
            op: "entry.create".into(),
            ttl_secs: Some(600),
            params: serde_json::json!({
                "spiffe_id": spiffe_id,
                "group": "edge",
                "selectors": selectors,
            }),
            ..Default::default()
        },
    )
    .map_err(anyhow::Error::msg)?;
    Ok(())
}

fn json_line(bytes: &[u8]) -> Result<serde_json::Value> {
    let text = String::from_utf8_lossy(bytes);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("a program printed {text:?}"))
}

pub fn show_workload_identities(server: &ZerothServer) -> Result<()> {
    println!();
    create_entry(server, SHOP, "demo-shop.service")?;
    create_entry(server, BILLING, "demo-billing.service")?;
    let socket_dir = LabDir::new("demo-spiffe-socket")?;
    let socket = socket_dir.join("api.sock");
    let (_host, config, _) = super::demo_db::token_host(
        server,
        "demo-spiffe-host",
        &format!(
            "[workload_api]\nsocket = \"{}\"\nentry_refresh = \"1s\"\n",
            socket.display()
        ),
    )?;
    println!("$ zeroth agent run   # [workload_api]: the standard SPIFFE Workload API (gRPC) on its socket");
    let exe = std::env::current_exe()?;
    let mut agent = lab::AgentProcess::start(&exe, &config)?;
    for id in [SHOP, BILLING] {
        let want = format!("workload SVID issued: {id} ");
        let line = agent.expect(Duration::from_secs(30), move |l| l.starts_with(&want))?;
        println!("           {line}");
    }

    let python = clients::py_spiffe()?;
    let programs = LabDir::new("demo-spiffe-programs")?;
    let probe = clients::spiffe_probe(&programs)?;
    let mtls = clients::spiffe_mtls(&programs)?;
    let text = |p: &std::path::Path| p.to_str().map(str::to_owned).context("a non-UTF-8 path");
    let (probe_s, mtls_s, socket_s) = (text(&probe)?, text(&mtls)?, text(&socket)?);
    let shop = ServiceCgroup::new("demo-shop.service").map_err(anyhow::Error::msg)?;
    let billing = ServiceCgroup::new("demo-billing.service").map_err(anyhow::Error::msg)?;

    println!("$ python3 spiffe_probe.py   # py-spiffe {}, as nobody in demo-shop.service: WorkloadApiClient().fetch_x509_svid()", clients::PY_SPIFFE_VERSION);
    let out = shop
        .command_as(65534, python.as_path(), &[&probe_s, &socket_s, "x509"])
        .output()?;
    let got = json_line(&out.stdout)?;
    anyhow::ensure!(out.status.success(), "py-spiffe: {got}");
    anyhow::ensure!(got["spiffe_id"] == SHOP, "py-spiffe got {got}");
    println!(
        "           {} (its key made in the agent's memory, handed over the socket, on no disk)",
        got["spiffe_id"].as_str().unwrap_or_default()
    );

    println!("$ python3 spiffe_mtls.py   # demo-billing.service serves TLS, demo-shop.service connects; each checks the other's SPIFFE ID");
    let mut serving = billing
        .command_as(
            65534,
            python.as_path(),
            &[&mtls_s, &socket_s, "serve", SHOP],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(serving.stdout.take().context("stdout")?).lines();
    let listening = lines.next().context("the server printed nothing")??;
    let port = listening
        .strip_prefix("listening ")
        .with_context(|| format!("the server said {listening:?}"))?
        .to_owned();
    let client = shop
        .command_as(
            65534,
            python.as_path(),
            &[&mtls_s, &socket_s, "connect", &port, BILLING],
        )
        .output()?;
    let server_said: serde_json::Value =
        serde_json::from_str(&lines.next().context("the server printed no verdict")??)?;
    serving.wait()?;
    let client_said = json_line(&client.stdout)?;
    anyhow::ensure!(
        server_said["accepted"] == true && client_said["accepted"] == true,
        "mTLS: server {server_said}, client {client_said}"
    );
    println!(
        "           demo-billing.service ({}) accepted {}",
        server_said["me"].as_str().unwrap_or_default(),
        server_said["peer"].as_str().unwrap_or_default()
    );
    println!(
        "           demo-shop.service ({}) accepted {}, which answered as {}",
        client_said["me"].as_str().unwrap_or_default(),
        client_said["peer"].as_str().unwrap_or_default(),
        client_said["heard"].as_str().unwrap_or_default()
    );

    show_impostors_refused(server, &mut agent, &programs, &socket_s)?;

    println!("$ zeroth workload list   # on the node: what its agent serves, and to whom");
    let listing = crate::agent::workload_api::call(
        &socket,
        &crate::agent::workload_api::WorkloadRequest {
            op: "workload.list".into(),
            ..Default::default()
        },
    )
    .map_err(|(_, e)| anyhow::anyhow!(e))?;
    for item in listing["entries"].as_array().into_iter().flatten() {
        let who: Vec<&str> = item["workloads"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w["who"].as_str())
            .collect();
        println!(
            "           {} served to {}",
            item["entry"]["spiffe_id"].as_str().unwrap_or_default(),
            who.join(", ")
        );
    }
    drop((shop, billing));
    agent.stop()?;
    Ok(())
}

const REPORTER: &str = "spiffe://lab.zeroth/app/reporter";

fn probe_as(uid: u32, program: &Path, script: &Path, args: &[&str]) -> Result<serde_json::Value> {
    Ok(clients::run_exec_probe(uid, program, script, args)?)
}

/// A program named by uid and path gets its SVID; once it has run another
/// program, that one is refused on the same connection; and another uid
/// that execs the program after connecting gets nothing.
fn show_impostors_refused(
    server: &ZerothServer,
    agent: &mut lab::AgentProcess,
    programs: &LabDir,
    socket: &str,
) -> Result<()> {
    let (script, reporter) = clients::exec_probe(programs)?;
    let reporter_s = reporter.to_str().context("a non-UTF-8 path")?;
    create_entry_with(
        server,
        REPORTER,
        &["unix:uid:65534".into(), format!("unix:path:{reporter_s}")],
    )?;
    let want = format!("workload SVID issued: {REPORTER} ");
    agent.expect(Duration::from_secs(30), move |l| l.starts_with(&want))?;
    let system_python = std::fs::canonicalize("/usr/bin/python3")?;
    let other = system_python.to_str().context("a non-UTF-8 path")?;
    println!("$ x-python exec_probe.py exec-between {other}   # as nobody: the reporter asks, then execs another program, which asks on the same connection");
    let said = probe_as(65534, &reporter, &script, &[socket, "exec-between", other])?;
    anyhow::ensure!(
        said["first"] == "svid" && said["second"] == "refused",
        "exec between two requests: {said}"
    );
    println!("           the reporter got its X.509-SVID; after the exec, PermissionDenied: the executable changed since it connected");
    println!("$ x-python exec_probe.py race 20 x-python   # as uid 65533: connect, fork, and exec the reporter's program while the child asks");
    let said = probe_as(
        65533,
        &reporter,
        &script,
        &[
            socket,
            "race",
            "20",
            reporter_s,
            "-c",
            "import time; time.sleep(0.2)",
        ],
    )?;
    anyhow::ensure!(said["svids"] == 0, "the fork/exec race: {said}");
    println!(
        "           {} of 20 tries got an SVID: the uid comes from the socket, and no exec changes it",
        said["svids"]
    );
    Ok(())
}
