//! Prometheus metrics: what the server decided and issued, and the node
//! registry by state. Scraped at `GET /metrics`.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::store::leader::Leadership;
use crate::store::leases::{self, LeaseState};
use crate::store::nodes::{self, NodeState};
use crate::store::Store;

/// Installs the process-wide recorder.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    Ok(PrometheusBuilder::new().install_recorder()?)
}

pub fn enrolment(state: NodeState) {
    metrics::counter!("zeroth_enrolments_total", "outcome" => state.as_str()).increment(1);
}

pub fn rejection(kind: &'static str) {
    metrics::counter!("zeroth_refusals_total", "kind" => kind).increment(1);
}

pub fn svid_issued(kind: &'static str) {
    metrics::counter!("zeroth_svids_issued_total", "for" => kind).increment(1);
}

pub fn db_creds_issued() {
    metrics::counter!("zeroth_db_creds_issued_total").increment(1);
}

pub fn token_rotation() {
    metrics::counter!("zeroth_token_rotations_total").increment(1);
}

pub fn token_theft() {
    metrics::counter!("zeroth_token_thefts_total").increment(1);
}

/// The exposition text, with this server's role in the cluster (leader and
/// its epoch, follower, or the single server of a SQLite store; whether
/// the store answered its last renewal) and the node and lease gauges
/// refreshed from the store (through a read-only connection: a scrape never waits for a commit).
pub fn render(handle: &PrometheusHandle, store: &Store, leadership: &Leadership) -> String {
    let status = leadership.status();
    for role in ["leader", "follower", "single"] {
        let on = if status.role == role { 1.0 } else { 0.0 };
        metrics::gauge!("zeroth_cluster_role", "role" => role).set(on);
    }
    metrics::gauge!("zeroth_cluster_leader_epoch").set(status.epoch.unwrap_or(0) as f64);
    metrics::gauge!("zeroth_store_reachable").set(if status.store_reachable { 1.0 } else { 0.0 });
    if let Ok(conn) = store.read() {
        for state in NodeState::ALL {
            if let Ok(n) = nodes::count(&conn, state) {
                metrics::gauge!("zeroth_nodes", "state" => state.as_str()).set(n as f64);
            }
        }
        if let Ok(counts) = leases::counts(&conn) {
            for state in [
                LeaseState::Creating,
                LeaseState::Active,
                LeaseState::Revoking,
            ] {
                let n = counts
                    .iter()
                    .find(|(s, _)| *s == state)
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!("zeroth_leases", "state" => state.as_str()).set(n as f64);
            }
        }
        if let Ok(given_up) = leases::irrevocable(&conn) {
            metrics::gauge!("zeroth_leases", "state" => "irrevocable").set(given_up.len() as f64);
        }
    }
    handle.render()
}
