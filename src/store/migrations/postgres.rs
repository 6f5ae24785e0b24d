//! PostgreSQL's schema. A PostgreSQL store starts at version 16, the
//! schema SQLite reached through migrations 1–16, in one step; later
//! migrations are added to both lists with the same version numbers.
//!
//! Integers are `BIGINT` (the store's values are 64-bit), blobs `BYTEA`.
//! `entries` and `leases` carry an explicit `rowid` (insertion order), the
//! column SQLite gives every table.

pub(super) const MIGRATIONS: &[(i64, &str)] = &[
    (
    16,
    "CREATE TABLE audit (
        seq        BIGINT PRIMARY KEY,
        time       BIGINT NOT NULL,
        kind       TEXT NOT NULL,
        subject    TEXT NOT NULL,
        detail     TEXT NOT NULL,
        prev_hash  BYTEA NOT NULL,
        hash       BYTEA NOT NULL
     );
     CREATE TABLE audit_checkpoints (
        seq        BIGINT PRIMARY KEY,
        hash       BYTEA NOT NULL,
        signature  BYTEA NOT NULL,
        time       BIGINT NOT NULL
     );
     CREATE TABLE nodes (
        id             TEXT PRIMARY KEY,
        grp            TEXT NOT NULL,
        state          TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'revoked')),
        ek_hash        TEXT NOT NULL UNIQUE,
        ek_public      BYTEA NOT NULL,
        ek_cert        BYTEA,
        ak_public      BYTEA NOT NULL,
        hostname       TEXT NOT NULL,
        clock          BIGINT NOT NULL,
        reset_count    BIGINT NOT NULL,
        restart_count  BIGINT NOT NULL,
        created        BIGINT NOT NULL,
        updated        BIGINT NOT NULL
     );
     CREATE TABLE challenges (
        id           TEXT PRIMARY KEY,
        grp          TEXT NOT NULL,
        ek_hash      TEXT NOT NULL,
        ek_public    BYTEA NOT NULL,
        ek_cert      BYTEA,
        ak_public    BYTEA NOT NULL,
        hostname     TEXT NOT NULL,
        nonce        BYTEA NOT NULL,
        secret_hash  BYTEA NOT NULL,
        expires      BIGINT NOT NULL,
        used         BIGINT NOT NULL DEFAULT 0
     );
     CREATE INDEX challenges_by_expiry ON challenges (expires);
     CREATE INDEX challenges_by_ek ON challenges (ek_hash, used, expires);
     CREATE TABLE svids (
        serial     TEXT PRIMARY KEY,
        node_id    TEXT NOT NULL REFERENCES nodes(id),
        spiffe_id  TEXT NOT NULL,
        not_after  BIGINT NOT NULL,
        issued     BIGINT NOT NULL
     );
     CREATE TABLE ca_certificates (
        name     TEXT PRIMARY KEY,
        der      BYTEA NOT NULL,
        created  BIGINT NOT NULL
     );
     CREATE TABLE token_chains (
        id       TEXT PRIMARY KEY,
        grp      TEXT NOT NULL,
        ttl      BIGINT NOT NULL,
        state    TEXT NOT NULL CHECK (state IN ('active', 'revoked')),
        created  BIGINT NOT NULL
     );
     CREATE TABLE tokens (
        hash         BYTEA PRIMARY KEY,
        chain_id     TEXT NOT NULL REFERENCES token_chains(id),
        generation   BIGINT NOT NULL,
        state        TEXT NOT NULL CHECK (state IN ('active', 'rotated')),
        expires      BIGINT NOT NULL,
        created      BIGINT NOT NULL,
        rotated_at   BIGINT,
        rotated_for  BYTEA,
        next_sealed  BYTEA
     );
     CREATE TABLE renewal_challenges (
        id       TEXT PRIMARY KEY,
        node_id  TEXT NOT NULL REFERENCES nodes(id),
        nonce    BYTEA NOT NULL,
        expires  BIGINT NOT NULL,
        used     BIGINT NOT NULL DEFAULT 0
     );
     CREATE INDEX renewal_challenges_by_expiry ON renewal_challenges (expires);
     CREATE TABLE db_connections (
        name              TEXT PRIMARY KEY,
        engine            TEXT NOT NULL CHECK (engine IN ('postgres', 'mariadb')),
        host              TEXT NOT NULL,
        port              BIGINT NOT NULL,
        dbname            TEXT NOT NULL,
        admin_user        TEXT NOT NULL,
        sealed_password   BYTEA NOT NULL,
        created           BIGINT NOT NULL,
        rotated           BIGINT,
        tls_ca            BYTEA,
        pending_password  BYTEA
     );
     CREATE TABLE leases (
        rowid          BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        id             TEXT PRIMARY KEY,
        kind           TEXT NOT NULL,
        role           TEXT NOT NULL,
        connection     TEXT NOT NULL,
        holder         TEXT NOT NULL,
        external_name  TEXT NOT NULL,
        state          TEXT NOT NULL CHECK (state IN ('creating', 'active', 'revoking', 'revoked')),
        created        BIGINT NOT NULL,
        expires        BIGINT NOT NULL,
        max_expires    BIGINT NOT NULL,
        revoked        BIGINT,
        attempts       BIGINT NOT NULL DEFAULT 0,
        retry_at       BIGINT NOT NULL DEFAULT 0
     );
     CREATE INDEX leases_by_state_expiry ON leases (state, expires);
     CREATE INDEX leases_by_holder ON leases (holder);
     CREATE INDEX leases_unfinished ON leases (state, created) WHERE state IN ('creating', 'revoking');
     CREATE TABLE ssh_certs (
        serial       BIGINT PRIMARY KEY,
        lease_id     TEXT NOT NULL,
        key_id       TEXT NOT NULL,
        holder       TEXT NOT NULL,
        role         TEXT NOT NULL,
        principals   TEXT NOT NULL,
        valid_before BIGINT NOT NULL,
        created      BIGINT NOT NULL
     );
     CREATE TABLE ssh_cas (
        key_name TEXT PRIMARY KEY,
        kind     TEXT NOT NULL,
        state    TEXT NOT NULL,
        created  BIGINT NOT NULL
     );
     CREATE TABLE ssh_serial_reservations (
        id    BIGINT PRIMARY KEY CHECK (id = 1),
        up_to BIGINT NOT NULL
     );
     CREATE TABLE session_events (
        id        TEXT PRIMARY KEY,
        lease     TEXT NOT NULL,
        recorded  BIGINT NOT NULL
     );
     CREATE TABLE entries (
        rowid      BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        id         TEXT PRIMARY KEY,
        spiffe_id  TEXT NOT NULL,
        parent     TEXT NOT NULL,
        selectors  TEXT NOT NULL,
        ttl        BIGINT NOT NULL,
        dns_names  TEXT NOT NULL,
        roles      TEXT NOT NULL,
        hint       TEXT NOT NULL,
        created    BIGINT NOT NULL,
        UNIQUE (spiffe_id, parent, selectors)
     );
     CREATE INDEX entries_by_parent ON entries (parent);
     CREATE TABLE workload_svids (
        serial     TEXT PRIMARY KEY,
        entry_id   TEXT NOT NULL,
        holder     TEXT NOT NULL,
        spiffe_id  TEXT NOT NULL,
        not_after  BIGINT NOT NULL,
        issued     BIGINT NOT NULL
     );
     CREATE INDEX workload_svids_by_expiry ON workload_svids (not_after);",
    ),
    (17, super::LEADER),
    (18, super::RETENTION),
    (19, super::TRUST),
    (20, super::EXCHANGE_ATTEMPT),
];
