//! Each server says where it stands: leader and its epoch, or follower, and
//! whether the store answered its last renewal (in `zeroth server status`
//! and `/metrics`, not only in its log).

use std::time::Duration;

use super::{cluster, within, zeroth};

/// `zeroth server status --json` on `server`.
fn status(server: &zeroth::lab::ZerothServer) -> serde_json::Value {
    let (ok, out) = zeroth(server, &["server", "status", "--json"], "");
    assert!(ok, "{out}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn each_server_says_its_role_and_when_the_store_is_lost() {
    let mut c = cluster();
    within(Duration::from_secs(10), "a leader", || {
        status(&c.a)["role"] == "leader" || status(&c.b)["role"] == "leader"
    });
    let (a, b) = (status(&c.a), status(&c.b));
    let (leader, follower) = if a["role"] == "leader" {
        (&c.a, b)
    } else {
        (&c.b, a)
    };
    let led = status(leader);
    assert!(led["epoch"].as_i64().unwrap() >= 1, "{led}");
    assert_eq!(follower["role"], "follower", "{follower}");
    assert_eq!(led["store_reachable"], true, "{led}");
    let metrics = String::from_utf8(super::get(leader, "/metrics")).unwrap();
    assert!(
        metrics.contains("zeroth_cluster_role{role=\"leader\"} 1")
            && metrics.contains(&format!("zeroth_cluster_leader_epoch {}", led["epoch"]))
            && metrics.contains("zeroth_store_reachable 1"),
        "{metrics}"
    );
    // The store goes away: both say so, not only their logs.
    c.pg.stop();
    within(Duration::from_secs(10), "the store seen lost", || {
        [&c.a, &c.b]
            .iter()
            .all(|s| status(s)["store_reachable"] == false)
    });
    let lost = status(&c.a);
    assert!(
        lost["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{lost}"
    );
    let (ok, out) = zeroth(&c.a, &["server", "status"], "");
    assert!(ok && out.contains("store     UNREACHABLE"), "{out}");
}

/// `zeroth server bundle --json` on `server`.
fn bundle(server: &zeroth::lab::ZerothServer) -> serde_json::Value {
    let (ok, out) = zeroth(server, &["server", "bundle", "--json"], "");
    assert!(ok, "{out}");
    serde_json::from_str(&out).unwrap()
}

/// Every server of a cluster hands out one trust bundle: the CA
/// certificate persisted in the shared store, the one `/v1/bundle` serves,
/// valid for ten years.
#[test]
fn every_server_hands_out_the_same_ca_bundle() {
    let c = cluster();
    let (a, b) = (bundle(&c.a), bundle(&c.b));
    assert_eq!(a["pem"], b["pem"]);
    let served = String::from_utf8(super::get(&c.a, "/v1/bundle")).unwrap();
    assert_eq!(a["pem"].as_str().unwrap(), served);
    let years =
        (a["not_after"].as_i64().unwrap() - a["not_before"].as_i64().unwrap()) / (365 * 24 * 3600);
    assert_eq!(years, 10, "{a}");
}
