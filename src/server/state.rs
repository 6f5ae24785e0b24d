//! What every request handler shares.

use std::collections::BTreeMap;
use std::sync::Arc;

use zeroth_hsm::KeyStore;

use crate::identity::{JwtIssuer, X509Ca};
use crate::policy::GroupPolicy;
use crate::store::Store;

pub struct AppState {
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    pub trust_domain: String,
    pub store: Arc<Store>,
    pub keys: Arc<dyn KeyStore>,
    /// Seals what the store keeps of secrets (under the HSM's store key).
    pub sealer: zeroth_hsm::Sealer,
    /// Meters on unauthenticated enrolment.
    pub enrolment_limits: crate::server::rate_limit::EnrolmentLimiter,
    /// The last readiness check, reused for a second.
    pub readiness: crate::server::readiness::Readiness,
    pub ca: X509Ca,
    pub jwt: JwtIssuer,
    /// Longest (and default) lifetime of a JWT-SVID.
    pub jwt_max_ttl: std::time::Duration,
    pub groups: BTreeMap<String, GroupPolicy>,
    pub db: Arc<crate::creds::db::broker::DbBroker>,
    /// Renewal and revocation of every engine's leases.
    pub leases: Arc<crate::creds::lease::LeaseManager>,
    pub ssh: Arc<crate::creds::ssh::issuer::SshIssuer>,
    /// This server's place in the cluster.
    pub leadership: Arc<crate::store::leader::Leadership>,
}

pub type Shared = Arc<AppState>;

impl AppState {
    /// Runs blocking work (SQLite, HSM, verification) off the async reactor.
    pub async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&AppState) -> T + Send + 'static,
    ) -> Result<T, super::api::error::ApiError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|e| super::api::error::ApiError::unavailable("the server", e))
    }
}
