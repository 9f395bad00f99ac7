-- Scalebox SQLite schema, version 1.
--
-- Conventions:
--   * Timestamps are INTEGER unix microseconds (UTC); 0 is the zero time.
--   * JSON documents (headers, specs, user timestamps, extra attributes) are
--     stored as TEXT/BLOB; the store never interprets them.
--   * Task status codes follow Scalebox: INITIAL -9, READY -1, QUEUED -2,
--     RUNNING -3, OK 0, module errors > 0, system errors < -9.
--   * Partial indexes spell their status predicates as literals: the query
--     planner only uses a partial index when the query repeats them verbatim.

-- Migration bookkeeping (the opener creates it too, before reading it).
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL
);

CREATE TABLE apps (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    spec       BLOB,
    result     TEXT    NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE modules (
    id     INTEGER PRIMARY KEY,
    app_id INTEGER NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    name   TEXT    NOT NULL,
    site   TEXT    NOT NULL DEFAULT '',
    spec   BLOB,
    UNIQUE (app_id, name)
);

CREATE TABLE tasks (
    id             INTEGER PRIMARY KEY,
    app_id         INTEGER NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    module_id      INTEGER NOT NULL REFERENCES modules (id) ON DELETE CASCADE,
    body           TEXT    NOT NULL,
    headers        TEXT    NOT NULL DEFAULT '{}',
    status         INTEGER NOT NULL,
    attempt        INTEGER NOT NULL DEFAULT 0, -- attempts started: the fencing token
    app_failures   INTEGER NOT NULL DEFAULT 0,
    infra_failures INTEGER NOT NULL DEFAULT 0,
    to_host        TEXT    NOT NULL DEFAULT '', -- HOST-BOUND target, '' = any host
    pilot_id       INTEGER NOT NULL DEFAULT 0,  -- current lease holder, 0 = none
    leased_at      INTEGER NOT NULL DEFAULT 0,
    lease_expires  INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);

-- Deduplication: one task per (module, body).
CREATE UNIQUE INDEX tasks_module_body ON tasks (module_id, body);

-- Leasing: READY tasks of a module, per target host, in id (= age) order
-- (every SQLite index ends with the rowid, so entries with the same
-- (module_id, to_host) are already sorted by id).
CREATE INDEX tasks_ready ON tasks (module_id, to_host) WHERE status = -1;

-- Leased tasks (QUEUED, RUNNING): by expiry for the lease reaper, by pilot for
-- heartbeats and releases. Both stay as small as the number of leases.
CREATE INDEX tasks_lease_expires ON tasks (lease_expires) WHERE status IN (-2, -3);
CREATE INDEX tasks_pilot ON tasks (pilot_id) WHERE status IN (-2, -3);

-- Progress counts and filtered listings.
CREATE INDEX tasks_module_status ON tasks (module_id, status);

-- One row per attempt: the task perspective.
CREATE TABLE attempts (
    id              INTEGER PRIMARY KEY,
    task_id         INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    app_id          INTEGER NOT NULL,
    module_id       INTEGER NOT NULL,
    attempt         INTEGER NOT NULL,
    pilot_id        INTEGER NOT NULL DEFAULT 0,
    host            TEXT    NOT NULL DEFAULT '',
    slot            TEXT    NOT NULL DEFAULT '',
    kind            TEXT    NOT NULL, -- app, infra, released, fenced
    exit_code       INTEGER NOT NULL DEFAULT 0,
    code            INTEGER NOT NULL DEFAULT 0,
    reason          TEXT    NOT NULL DEFAULT '',
    stdout          TEXT    NOT NULL DEFAULT '',
    stderr          TEXT    NOT NULL DEFAULT '',
    custom_text     TEXT    NOT NULL DEFAULT '',
    bytes_read      INTEGER NOT NULL DEFAULT 0,
    bytes_written   INTEGER NOT NULL DEFAULT 0,
    input_bytes     INTEGER NOT NULL DEFAULT 0,
    output_bytes    INTEGER NOT NULL DEFAULT 0,
    cpu_user_ns     INTEGER NOT NULL DEFAULT 0,
    cpu_system_ns   INTEGER NOT NULL DEFAULT 0,
    max_rss         INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL DEFAULT 0,
    leased_at       INTEGER NOT NULL DEFAULT 0,
    started_at      INTEGER NOT NULL DEFAULT 0,
    program_start   INTEGER NOT NULL DEFAULT 0,
    program_end     INTEGER NOT NULL DEFAULT 0,
    reported_at     INTEGER NOT NULL DEFAULT 0,
    recorded_at     INTEGER NOT NULL DEFAULT 0,
    user_timestamps TEXT    NOT NULL DEFAULT '[]', -- JSON array of {time, label}
    extra           TEXT    NOT NULL DEFAULT '{}'  -- JSON object
);

CREATE INDEX attempts_task ON attempts (task_id);

CREATE TABLE pilots (
    id            INTEGER PRIMARY KEY,
    site          TEXT    NOT NULL DEFAULT '',
    host          TEXT    NOT NULL DEFAULT '',
    ip            TEXT    NOT NULL DEFAULT '',
    cores         INTEGER NOT NULL DEFAULT 0,
    memory_mb     INTEGER NOT NULL DEFAULT 0,
    gpus          INTEGER NOT NULL DEFAULT 0,
    slots         TEXT    NOT NULL DEFAULT '',
    job_id        TEXT    NOT NULL DEFAULT '',
    deadline      INTEGER NOT NULL DEFAULT 0,
    status        TEXT    NOT NULL,
    version       TEXT    NOT NULL DEFAULT '',
    registered_at INTEGER NOT NULL DEFAULT 0,
    last_seen     INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX pilots_live_last_seen ON pilots (last_seen) WHERE status IN ('ACTIVE', 'DRAINING');

CREATE TABLE sites (
    name       TEXT    PRIMARY KEY,
    kind       TEXT    NOT NULL DEFAULT '',
    spec       BLOB,
    created_at INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE semaphores (
    app_id INTEGER NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    name   TEXT    NOT NULL,
    value  INTEGER NOT NULL,
    PRIMARY KEY (app_id, name)
) WITHOUT ROWID;

CREATE TABLE variables (
    app_id INTEGER NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    name   TEXT    NOT NULL,
    value  TEXT    NOT NULL,
    PRIMARY KEY (app_id, name)
) WITHOUT ROWID;

CREATE TABLE tokens (
    hash       TEXT    PRIMARY KEY, -- hex SHA-256 of the secret
    name       TEXT    NOT NULL DEFAULT '',
    role       TEXT    NOT NULL,
    site       TEXT    NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
