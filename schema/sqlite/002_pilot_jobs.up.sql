-- Batch jobs submitted to run pilots, and the scheduler's view of them.
CREATE TABLE pilot_jobs (
    id           INTEGER PRIMARY KEY,
    site         TEXT    NOT NULL,
    app_id       INTEGER NOT NULL DEFAULT 0,
    job_id       TEXT    NOT NULL DEFAULT '',
    count        INTEGER NOT NULL DEFAULT 1,
    state        TEXT    NOT NULL,
    native       TEXT    NOT NULL DEFAULT '',
    reason       TEXT    NOT NULL DEFAULT '',
    exit_code    INTEGER,
    final        INTEGER NOT NULL DEFAULT 0,
    submitted_at INTEGER NOT NULL DEFAULT 0,
    updated_at   INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX pilot_jobs_active ON pilot_jobs (site) WHERE final = 0;
