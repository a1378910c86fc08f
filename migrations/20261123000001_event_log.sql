-- The event log. Every local and remote activity is appended here as an
-- immutable event; every read model is derived from it.
--
-- Ordering. Positions come from a sequence, which hands out numbers before
-- commit: a reader that only remembered "the last sequence number seen" could
-- skip an event whose transaction commits after a later one. So each event
-- also records the id of the transaction that wrote it, readers only read
-- events whose transaction is older than the oldest transaction still running
-- (`pg_snapshot_xmin(pg_current_snapshot())`), and the log order is
-- (transaction_id, seq). Once an event is below that horizon, no event can
-- ever appear before it.

CREATE TABLE events (
    transaction_id bigint      NOT NULL,
    seq            bigint      GENERATED ALWAYS AS IDENTITY,
    event_id       uuid        NOT NULL,
    stream_id      text        NOT NULL,
    stream_version bigint      NOT NULL CHECK (stream_version > 0),
    event_type     text        NOT NULL CHECK (event_type <> ''),
    schema_version integer     NOT NULL CHECK (schema_version > 0),
    payload        jsonb       NOT NULL,
    metadata       jsonb       NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_pkey PRIMARY KEY (transaction_id, seq),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    -- Also how appends detect a concurrent writer: two appends cannot both
    -- take the same version of a stream.
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version)
);

COMMENT ON TABLE events IS
    'The immutable event log. Log order is (transaction_id, seq); see docs/events.md.';

-- Events are never rewritten in place: erasure works by destroying keys, not
-- by editing rows (docs/events.md).
CREATE FUNCTION events_are_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % on events is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER events_immutable
    BEFORE UPDATE OR DELETE OR TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_immutable();

-- Where each subscriber (projection, delivery planner, ...) has got to.
-- Projections write theirs in the same transaction as their rows.
CREATE TABLE subscriber_checkpoints (
    subscriber     text        PRIMARY KEY,
    position_major bigint      NOT NULL,
    position_minor bigint      NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
