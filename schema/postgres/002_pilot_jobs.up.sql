-- Batch jobs submitted to run pilots, and the scheduler's view of them.
CREATE TABLE pilot_jobs (
    id           bigserial   PRIMARY KEY,
    site         text        NOT NULL,
    app_id       bigint      NOT NULL DEFAULT 0,
    job_id       text        NOT NULL DEFAULT '',
    count        integer     NOT NULL DEFAULT 1,
    state        text        NOT NULL,
    native       text        NOT NULL DEFAULT '',
    reason       text        NOT NULL DEFAULT '',
    exit_code    integer,
    final        boolean     NOT NULL DEFAULT false,
    submitted_at timestamptz,
    updated_at   timestamptz
);

CREATE INDEX pilot_jobs_active ON pilot_jobs (site) WHERE NOT final;
