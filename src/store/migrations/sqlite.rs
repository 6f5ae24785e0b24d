//! SQLite's schema, migration by migration since the first release.

/// (version, SQL). Append only: a released migration never changes.
pub(super) const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE audit (
        seq        INTEGER PRIMARY KEY,
        time       INTEGER NOT NULL,
        kind       TEXT NOT NULL,
        subject    TEXT NOT NULL,
        detail     TEXT NOT NULL,
        prev_hash  BLOB NOT NULL,
        hash       BLOB NOT NULL
     );
     CREATE TABLE audit_checkpoints (
        seq        INTEGER PRIMARY KEY,
        hash       BLOB NOT NULL,
        signature  BLOB NOT NULL,
        time       INTEGER NOT NULL
     );",
    ),
    (
        2,
        "CREATE TABLE nodes (
        id             TEXT PRIMARY KEY,
        grp            TEXT NOT NULL,
        state          TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'revoked')),
        ek_hash        TEXT NOT NULL UNIQUE,
        ek_public      BLOB NOT NULL,
        ek_cert        BLOB,
        ak_public      BLOB NOT NULL,
        hostname       TEXT NOT NULL,
        clock          INTEGER NOT NULL,
        reset_count    INTEGER NOT NULL,
        restart_count  INTEGER NOT NULL,
        created        INTEGER NOT NULL,
        updated        INTEGER NOT NULL
     );
     CREATE TABLE challenges (
        id           TEXT PRIMARY KEY,
        grp          TEXT NOT NULL,
        ek_hash      TEXT NOT NULL,
        ek_public    BLOB NOT NULL,
        ek_cert      BLOB,
        ak_public    BLOB NOT NULL,
        hostname     TEXT NOT NULL,
        nonce        BLOB NOT NULL,
        secret_hash  BLOB NOT NULL,
        expires      INTEGER NOT NULL,
        used         INTEGER NOT NULL DEFAULT 0
     );
     CREATE TABLE svids (
        serial     TEXT PRIMARY KEY,
        node_id    TEXT NOT NULL REFERENCES nodes(id),
        spiffe_id  TEXT NOT NULL,
        not_after  INTEGER NOT NULL,
        issued     INTEGER NOT NULL
     );
     CREATE TABLE ca_certificates (
        name     TEXT PRIMARY KEY,
        der      BLOB NOT NULL,
        created  INTEGER NOT NULL
     );",
    ),
    (
        3,
        "CREATE TABLE token_chains (
        id       TEXT PRIMARY KEY,
        grp      TEXT NOT NULL,
        ttl      INTEGER NOT NULL,
        state    TEXT NOT NULL CHECK (state IN ('active', 'revoked')),
        created  INTEGER NOT NULL
     );
     CREATE TABLE tokens (
        hash        BLOB PRIMARY KEY,
        chain_id    TEXT NOT NULL REFERENCES token_chains(id),
        generation  INTEGER NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('active', 'rotated')),
        expires     INTEGER NOT NULL,
        created     INTEGER NOT NULL
     );",
    ),
    (
        4,
        "CREATE TABLE renewal_challenges (
        id       TEXT PRIMARY KEY,
        node_id  TEXT NOT NULL REFERENCES nodes(id),
        nonce    BLOB NOT NULL,
        expires  INTEGER NOT NULL,
        used     INTEGER NOT NULL DEFAULT 0
     );",
    ),
    (
        5,
        "CREATE TABLE db_connections (
        name             TEXT PRIMARY KEY,
        engine           TEXT NOT NULL CHECK (engine IN ('postgres', 'mariadb')),
        host             TEXT NOT NULL,
        port             INTEGER NOT NULL,
        dbname           TEXT NOT NULL,
        admin_user       TEXT NOT NULL,
        sealed_password  BLOB NOT NULL,
        created          INTEGER NOT NULL,
        rotated          INTEGER
     );
     CREATE TABLE leases (
        id             TEXT PRIMARY KEY,
        kind           TEXT NOT NULL,
        role           TEXT NOT NULL,
        connection     TEXT NOT NULL,
        holder         TEXT NOT NULL,
        external_name  TEXT NOT NULL,
        state          TEXT NOT NULL CHECK (state IN ('creating', 'active', 'revoking', 'revoked')),
        created        INTEGER NOT NULL,
        expires        INTEGER NOT NULL,
        max_expires    INTEGER NOT NULL,
        revoked        INTEGER
     );
     CREATE INDEX leases_by_state_expiry ON leases (state, expires);
     CREATE INDEX leases_by_holder ON leases (holder);",
    ),
    (6, "ALTER TABLE db_connections ADD COLUMN tls_ca BLOB;"),
    (
        7,
        "CREATE TABLE ssh_certs (
        serial       INTEGER PRIMARY KEY AUTOINCREMENT,
        lease_id     TEXT NOT NULL,
        key_id       TEXT NOT NULL,
        holder       TEXT NOT NULL,
        role         TEXT NOT NULL,
        principals   TEXT NOT NULL,
        valid_before INTEGER NOT NULL,
        created      INTEGER NOT NULL
     );",
    ),
    (
        8,
        "CREATE TABLE ssh_cas (
            key_name TEXT PRIMARY KEY,
            kind     TEXT NOT NULL,
            state    TEXT NOT NULL,
            created  INTEGER NOT NULL
         );",
    ),
    (
        9,
        "CREATE TABLE ssh_serial_reservations (
            id    INTEGER PRIMARY KEY CHECK (id = 1),
            up_to INTEGER NOT NULL
         );",
    ),
    (
        10,
        "ALTER TABLE leases ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE leases ADD COLUMN retry_at INTEGER NOT NULL DEFAULT 0;
         CREATE INDEX leases_unfinished ON leases (state, created) WHERE state IN ('creating', 'revoking');",
    ),
    (
        11,
        "ALTER TABLE tokens ADD COLUMN rotated_at INTEGER;
         ALTER TABLE tokens ADD COLUMN rotated_for BLOB;
         ALTER TABLE tokens ADD COLUMN next_sealed BLOB;",
    ),
    (
        12,
        "CREATE INDEX challenges_by_expiry ON challenges (expires);
         CREATE INDEX challenges_by_ek ON challenges (ek_hash, used, expires);
         CREATE INDEX renewal_challenges_by_expiry ON renewal_challenges (expires);",
    ),
    (
        13,
        "ALTER TABLE db_connections ADD COLUMN pending_password BLOB;",
    ),
    (
        14,
        "CREATE TABLE session_events (
            id TEXT PRIMARY KEY,
            lease TEXT NOT NULL,
            recorded INTEGER NOT NULL
         );",
    ),
    (
        15,
        "CREATE TABLE entries (
            id         TEXT PRIMARY KEY,
            spiffe_id  TEXT NOT NULL,
            parent     TEXT NOT NULL,
            selectors  TEXT NOT NULL,
            ttl        INTEGER NOT NULL,
            dns_names  TEXT NOT NULL,
            roles      TEXT NOT NULL,
            hint       TEXT NOT NULL,
            created    INTEGER NOT NULL,
            UNIQUE (spiffe_id, parent, selectors)
         );
         CREATE INDEX entries_by_parent ON entries (parent);",
    ),
    (
        16,
        "CREATE TABLE workload_svids (
            serial     TEXT PRIMARY KEY,
            entry_id   TEXT NOT NULL,
            holder     TEXT NOT NULL,
            spiffe_id  TEXT NOT NULL,
            not_after  INTEGER NOT NULL,
            issued     INTEGER NOT NULL
         );
         CREATE INDEX workload_svids_by_expiry ON workload_svids (not_after);",
    ),
    (17, super::LEADER),
    (18, super::RETENTION),
    (19, super::TRUST),
    (20, super::EXCHANGE_ATTEMPT),
];
