-- Rebuilds of read models: each fills shadow tables (in a schema of its own,
-- `rebuild_<projection>`) from position 0 while the live projection keeps
-- serving, then swaps them in atomically. One row per rebuild, kept after it
-- ends, so admins (GraphQL, `chorus projections`, /metrics) can follow its
-- progress from any process.
CREATE TABLE projection_rebuilds (
    rebuild_id     uuid        PRIMARY KEY,
    projection     text        NOT NULL,
    state          text        NOT NULL CHECK (state IN ('running', 'swapped', 'failed')),
    requested_by   text,                         -- an actor id, or `cli`
    events_done    bigint      NOT NULL DEFAULT 0,
    events_total   bigint      NOT NULL DEFAULT 0,
    started_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    error          text
);
-- At most one running rebuild per projection.
CREATE UNIQUE INDEX projection_rebuilds_running ON projection_rebuilds (projection)
    WHERE state = 'running';
CREATE INDEX projection_rebuilds_recent ON projection_rebuilds (projection, started_at DESC);
