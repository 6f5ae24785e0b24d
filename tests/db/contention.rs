//! The store under CPU contention: with every core taken by busy
//! processes, programs issuing and giving back database users are answered
//! for what happened (never a 503 "state store unavailable" for a store
//! that is only slow), and writers wait for the store rather than fail.

use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use zeroth::agent::enrol::post_json;
use zeroth::wire::db::{CredsRequest, CredsResponse};

use super::lab;

/// Processes that spin on every core until dropped.
struct CpuHogs(Vec<Child>);

impl CpuHogs {
    fn start(per_core: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self(
            (0..cores * per_core)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .unwrap()
                })
                .collect(),
        )
    }
}

impl Drop for CpuHogs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn issuance_and_give_backs_are_never_refused_as_unavailable_when_the_cpu_is_contended() {
    let lab = lab();
    lab.add_connections();
    let clients = lab.node_clients(8);
    let base = lab.server.url();
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let given_back = Mutex::new(0usize);
    // Three busy processes per core beside the server, SoftHSM and both
    // databases (and whatever else `make test` runs meanwhile).
    let hogs = CpuHogs::start(3);
    let until = Instant::now() + Duration::from_secs(15);
    std::thread::scope(|s| {
        for (i, http) in clients.iter().enumerate() {
            let (base, failures, given_back) = (&base, &failures, &given_back);
            s.spawn(move || {
                let role = if i % 2 == 0 { "app-ro" } else { "shop-rw" };
                while Instant::now() < until {
                    let c = match post_json::<_, CredsResponse>(
                        http,
                        &format!("{base}/v1/db/creds/{role}"),
                        &CredsRequest {
                            ttl_seconds: Some(60),
                        },
                    ) {
                        Ok(c) => c,
                        Err(e) => {
                            failures.lock().unwrap().push(format!("{role} issue: {e}"));
                            continue;
                        }
                    };
                    let back = http
                        .post(format!("{base}/v1/leases/{}/revoke", c.lease_id))
                        .timeout(Duration::from_secs(60))
                        .send();
                    match back {
                        Ok(r) if r.status().as_u16() == 204 => *given_back.lock().unwrap() += 1,
                        Ok(r) => failures.lock().unwrap().push(format!(
                            "{role} give-back: {} {}",
                            r.status(),
                            r.text().unwrap_or_default()
                        )),
                        Err(e) => failures
                            .lock()
                            .unwrap()
                            .push(format!("{role} give-back: {e}")),
                    }
                }
            });
        }
    });
    drop(hogs);
    let failures = failures.into_inner().unwrap();
    let given_back = given_back.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} failed under contention: {:#?}\nthe server said:\n{}",
        failures.len(),
        failures.len() + given_back,
        &failures[..failures.len().min(20)],
        {
            let log = lab.server.log();
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        }
    );
    assert!(given_back > 20, "only {given_back} users given back");
    eprintln!("{given_back} users issued and given back under contention");
}
