//! The store's contract, run on both engines: every scenario runs once on
//! a SQLite file and once on a PostgreSQL database of its own (the lab's
//! private server). A behaviour that differs between the engines fails
//! here, whatever the SQL looked like.

use std::future::Future;
use std::sync::Arc;

use secrecy::ExposeSecret;

use super::leases::{self, Lease, LeaseState, CREATING_GRACE};
use super::nodes::{self, Challenge, ChallengeRefusal, Node, NodeState};
use super::sql::{Conn, PgRuntime, PgTarget};
use super::{
    db_connections, entries, migrations, ssh_cas, ssh_certs, tokens, Location, Store, StoreError,
};
use crate::wire::entry::{Entry, Parent, Selector};

mod identity;
mod issued;
mod writing;

use identity::*;
use issued::*;
use writing::*;

/// A store under test, which a scenario may close and open again.
struct Fixture {
    at: Location,
    store: Option<Store>,
}

impl Fixture {
    fn store(&self) -> &Store {
        self.store.as_ref().expect("the fixture's store is open")
    }

    fn reopen(&mut self) -> Result<&Store, StoreError> {
        self.store = None;
        self.store = Some(Store::open_at(&self.at)?);
        Ok(self.store())
    }
}

type Scenario = fn(&mut Fixture);

const SCENARIOS: &[(&str, Scenario)] = &[
    ("schema", schema_is_latest_and_a_newer_one_is_refused),
    ("nodes", node_states_move_only_as_allowed),
    ("challenges", a_challenge_is_taken_once_and_not_after_expiry),
    ("ca certificates", the_first_ca_certificate_saved_stays),
    ("tokens", token_chains_rotate_and_revoke),
    ("lease states", a_revoked_lease_never_becomes_active_again),
    ("due leases", only_unfinished_or_expired_leases_are_due),
    ("lease listing", leases_are_listed_by_holder_and_prefix),
    ("leases of revoked nodes", leases_of_revoked_nodes_are_found),
    (
        "db connections",
        connections_are_saved_and_their_password_switched,
    ),
    (
        "ssh serials",
        ssh_serial_blocks_never_overlap_across_reopening,
    ),
    (
        "ssh revocations",
        revoked_ssh_certificates_are_listed_until_expiry,
    ),
    ("ssh cas", ssh_ca_keys_move_between_states),
    ("entries", a_holder_sees_its_node_and_group_entries_only),
    ("audit", the_audit_chain_verifies_and_tampering_is_found),
    (
        "group commit",
        group_commit_keeps_every_job_and_drops_a_failed_one,
    ),
    ("readers", readers_see_commits_and_cannot_write),
    ("leadership", a_deposed_leaders_jobs_change_nothing),
    (
        "retention",
        what_ended_before_the_horizon_is_swept_and_audited,
    ),
];

fn run_all(open: impl Fn(usize) -> Location) {
    for (i, (name, scenario)) in SCENARIOS.iter().enumerate() {
        let at = open(i);
        eprintln!("store scenario {name:?} on {at:?}");
        let store = Store::open_at(&at).unwrap_or_else(|e| panic!("{name}: open: {e}"));
        scenario(&mut Fixture {
            at,
            store: Some(store),
        });
    }
}

#[test]
fn every_scenario_holds_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    run_all(|i| Location::File(dir.path().join(format!("s{i}.db"))));
}

#[test]
fn every_scenario_holds_on_postgres() {
    let pg = crate::lab::Postgres::start()
        .expect("a private PostgreSQL server for the store suite (`make deps` installs it)");
    let target = |db: &str| PgTarget {
        url: format!(
            "postgres://{}@127.0.0.1:{}/{db}",
            crate::lab::postgres::SUPERUSER,
            pg.port()
        ),
        password: Some(pg.password().expose_secret().to_owned().into()),
        ca_pem: None,
    };
    let runtime = PgRuntime::start().unwrap();
    let admin = Conn::postgres(&target("postgres"), &runtime).unwrap();
    run_all(|i| {
        let db = format!("conformance_{i}");
        admin
            .execute_batch(&format!("CREATE DATABASE {db}"))
            .unwrap();
        Location::Postgres(target(&db))
    });
}

fn commit<T>(store: &Store, f: impl FnOnce(&super::sql::Tx<'_>) -> T) -> T {
    let mut conn = store.lock();
    let tx = conn.transaction().unwrap();
    let out = f(&tx);
    tx.commit().unwrap();
    out
}
