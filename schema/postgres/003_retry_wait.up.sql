-- Retry backoff: a failed task whose module has retry_backoff waits in
-- RETRY_WAIT (-4) until retry_at, then the broker makes it READY again.
ALTER TABLE tasks ADD COLUMN retry_at timestamptz;
CREATE INDEX tasks_retry_wait ON tasks (retry_at) WHERE status = -4;
