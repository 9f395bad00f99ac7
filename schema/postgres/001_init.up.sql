-- Scalebox PostgreSQL schema, version 1.
--
-- Conventions: bigserial ids; timestamptz (microseconds) with NULL for "did
-- not happen"; opaque specs as bytea (the store never interprets them);
-- headers and slot maps kept verbatim as text (flat JSON written by the
-- broker); jsonb for what views query (attempt extras, user timestamps).
-- No foreign keys on the hot task/attempt paths: the broker resolves ids and
-- the store stays policy-free (see store/store.go).

-- Bookkeeping of applied migrations (also created by the migrator itself,
-- which needs it before the first migration runs).
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE apps (
    id         bigserial   PRIMARY KEY,
    name       text        NOT NULL,
    status     text        NOT NULL,
    spec       bytea,
    result     text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE modules (
    id     bigserial PRIMARY KEY,
    app_id bigint    NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    name   text      NOT NULL,
    site   text      NOT NULL DEFAULT '',
    spec   bytea,
    UNIQUE (app_id, name)
);

-- Status codes: -9 INITIAL, -1 READY, -2 QUEUED, -3 RUNNING, 0 OK, > 0 module
-- error, < -9 system error. attempt is the fencing token of the current lease.
CREATE TABLE tasks (
    id             bigserial   PRIMARY KEY,
    app_id         bigint      NOT NULL,
    module_id      bigint      NOT NULL,
    body           text        NOT NULL,
    headers        text        NOT NULL DEFAULT '{}',
    status         integer     NOT NULL,
    attempt        integer     NOT NULL DEFAULT 0,
    app_failures   integer     NOT NULL DEFAULT 0,
    infra_failures integer     NOT NULL DEFAULT 0,
    to_host        text        NOT NULL DEFAULT '',
    pilot_id       bigint,
    leased_at      timestamptz,
    lease_expires  timestamptz,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);

-- One task per (module, body). Bodies may exceed the btree row limit, so the
-- key is the body's MD5 (as uuid: 16 bytes, collation-free comparisons).
-- TaskAdd's ON CONFLICT targets exactly this expression.
CREATE UNIQUE INDEX tasks_module_body ON tasks (module_id, (md5(body)::uuid));

-- Leasing: READY tasks of a module for a host ('' = any), oldest first.
CREATE INDEX tasks_ready ON tasks (module_id, to_host, id) WHERE status = -1;

-- Lease expiry and per-pilot lease lookups (heartbeat, release) touch only
-- leased rows.
CREATE INDEX tasks_leased_expiry ON tasks (lease_expires) WHERE status IN (-2, -3);
CREATE INDEX tasks_leased_pilot ON tasks (pilot_id) WHERE status IN (-2, -3);

-- Listings per module of the statuses the hot path never writes (errors,
-- system errors, INITIAL). READY is served by tasks_ready, QUEUED/RUNNING by
-- the leased indexes, OK by the primary key (OK is the common case). An
-- index over every status would cost two more index insertions per task
-- life cycle (lease and completion are non-HOT updates).
CREATE INDEX tasks_module_unusual ON tasks (module_id, status, id) WHERE status NOT IN (-1, -2, -3, 0);

-- One row per attempt: the task perspective.
CREATE TABLE attempts (
    id              bigserial   PRIMARY KEY,
    task_id         bigint      NOT NULL,
    app_id          bigint      NOT NULL,
    module_id       bigint      NOT NULL,
    attempt         integer     NOT NULL,
    pilot_id        bigint      NOT NULL DEFAULT 0,
    host            text        NOT NULL DEFAULT '',
    slot            text        NOT NULL DEFAULT '',
    kind            text        NOT NULL,   -- app, infra, released, fenced
    exit_code       integer     NOT NULL DEFAULT -1,
    code            integer     NOT NULL,
    reason          text        NOT NULL DEFAULT '',
    stdout          text        NOT NULL DEFAULT '',
    stderr          text        NOT NULL DEFAULT '',
    custom_text     text        NOT NULL DEFAULT '',
    bytes_read      bigint      NOT NULL DEFAULT 0,
    bytes_written   bigint      NOT NULL DEFAULT 0,
    input_bytes     bigint      NOT NULL DEFAULT 0,
    output_bytes    bigint      NOT NULL DEFAULT 0,
    cpu_user_ns     bigint      NOT NULL DEFAULT 0,
    cpu_system_ns   bigint      NOT NULL DEFAULT 0,
    max_rss         bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz,            -- task created
    leased_at       timestamptz,            -- lease taken (broker)
    started_at      timestamptz,            -- pilot began the attempt
    program_start   timestamptz,
    program_end     timestamptz,
    reported_at     timestamptz,            -- pilot sent the result
    recorded_at     timestamptz NOT NULL,   -- broker committed the row
    user_timestamps jsonb,                  -- [{"time": "...", "label": "..."}]
    extra           jsonb                   -- extra-attributes.txt, runtime, image, iobytes…
);
CREATE INDEX attempts_task ON attempts (task_id, id);

CREATE TABLE pilots (
    id            bigserial   PRIMARY KEY,
    site          text        NOT NULL DEFAULT '',
    host          text        NOT NULL DEFAULT '',
    ip            text        NOT NULL DEFAULT '',
    cores         integer     NOT NULL DEFAULT 0,
    memory_mb     bigint      NOT NULL DEFAULT 0,
    gpus          integer     NOT NULL DEFAULT 0,
    slots         text        NOT NULL DEFAULT '{}',
    job_id        text        NOT NULL DEFAULT '',
    deadline      timestamptz,
    status        text        NOT NULL,
    version       text        NOT NULL DEFAULT '',
    registered_at timestamptz NOT NULL,
    last_seen     timestamptz NOT NULL
);
CREATE INDEX pilots_live_last_seen ON pilots (last_seen) WHERE status IN ('ACTIVE', 'DRAINING');

CREATE TABLE sites (
    name       text        PRIMARY KEY,
    kind       text        NOT NULL,
    spec       bytea,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

-- App-scoped coordination (Scalebox's t_semaphore / t_variable, app scope).
CREATE TABLE semaphores (
    app_id bigint NOT NULL,
    name   text   NOT NULL,
    value  bigint NOT NULL,
    PRIMARY KEY (app_id, name)
);

CREATE TABLE variables (
    app_id bigint NOT NULL,
    name   text   NOT NULL,
    value  text   NOT NULL,
    PRIMARY KEY (app_id, name)
);

-- API tokens, by hex SHA-256 of the secret.
CREATE TABLE tokens (
    hash       text        PRIMARY KEY,
    name       text        NOT NULL,
    role       text        NOT NULL,
    site       text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL
);

-- The task perspective as a view: one row per attempt with durations.
CREATE VIEW attempt_perspective AS
SELECT a.id, a.task_id, a.app_id, a.module_id, a.attempt, a.pilot_id, a.host, a.slot,
       a.kind, a.exit_code, a.code, a.reason,
       a.bytes_read, a.bytes_written, a.input_bytes, a.output_bytes,
       a.cpu_user_ns / 1e9 AS cpu_user_s, a.cpu_system_ns / 1e9 AS cpu_system_s, a.max_rss,
       a.created_at, a.leased_at, a.started_at, a.program_start, a.program_end, a.reported_at, a.recorded_at,
       a.leased_at - a.created_at      AS wait,
       a.program_end - a.program_start AS run,
       a.recorded_at - a.leased_at     AS turnaround,
       a.user_timestamps, a.extra
FROM attempts a;
