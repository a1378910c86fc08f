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

CREATE TABLE streams (
    stream_id text PRIMARY KEY,
    version   bigint NOT NULL CHECK (version > 0)
);

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

-- Appends a batch to one stream in one round trip.
--
-- p_expected: -1 any, -2 no stream, -3 stream exists, n >= 0 exact version.
-- Returns one row per event with status 'appended', or one row per event with
-- status 'duplicate' when every id was already in the log (nothing written),
-- or a single row with status 'conflict' and the stream's actual version.
-- Raises SQLSTATE CH001 when only some of the ids are already in the log.
CREATE FUNCTION chorus_append(
    p_stream          text,
    p_expected        bigint,
    p_ids             uuid[],
    p_types           text[],
    p_schema_versions integer[],
    p_payloads        text[],
    p_metadata        text[]
) RETURNS TABLE (
    status         text,
    event_id       uuid,
    stream_version bigint,
    transaction_id bigint,
    seq            bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    n          bigint := cardinality(p_ids);
    existing   bigint;
    new_version bigint;
    actual     bigint;
BEGIN
    SELECT count(*) INTO existing FROM events e WHERE e.event_id = ANY (p_ids);
    IF existing = n THEN
        RETURN QUERY
            SELECT 'duplicate'::text, e.event_id, e.stream_version, e.transaction_id, e.seq
            FROM events e WHERE e.event_id = ANY (p_ids);
        RETURN;
    ELSIF existing > 0 THEN
        RAISE EXCEPTION '% of % events already appended', existing, n
            USING ERRCODE = 'CH001', DETAIL = existing::text;
    END IF;

    IF p_expected = -1 THEN
        INSERT INTO streams AS s (stream_id, version) VALUES (p_stream, n)
        ON CONFLICT (stream_id) DO UPDATE SET version = s.version + n
        RETURNING s.version INTO new_version;
    ELSIF p_expected = -2 OR p_expected = 0 THEN
        INSERT INTO streams (stream_id, version) VALUES (p_stream, n)
        ON CONFLICT (stream_id) DO NOTHING
        RETURNING version INTO new_version;
    ELSIF p_expected = -3 THEN
        UPDATE streams s SET version = s.version + n WHERE s.stream_id = p_stream
        RETURNING s.version INTO new_version;
    ELSE
        UPDATE streams s SET version = s.version + n
        WHERE s.stream_id = p_stream AND s.version = p_expected
        RETURNING s.version INTO new_version;
    END IF;

    IF new_version IS NULL THEN
        -- A concurrent append of this very batch may have committed while we
        -- waited for the stream's row lock: that is a duplicate, not a conflict.
        SELECT count(*) INTO existing FROM events e WHERE e.event_id = ANY (p_ids);
        IF existing = n THEN
            RETURN QUERY
                SELECT 'duplicate'::text, e.event_id, e.stream_version, e.transaction_id, e.seq
                FROM events e WHERE e.event_id = ANY (p_ids);
            RETURN;
        END IF;
        SELECT s.version INTO actual FROM streams s WHERE s.stream_id = p_stream;
        RETURN QUERY SELECT 'conflict'::text, NULL::uuid, actual, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;

    RETURN QUERY
        INSERT INTO events AS e (transaction_id, event_id, stream_id, stream_version,
                                 event_type, schema_version, payload, metadata)
        SELECT pg_current_xact_id()::text::bigint, u.id, p_stream, new_version - n + u.ord,
               u.t, u.v, u.p::jsonb, u.m::jsonb
        FROM unnest(p_ids, p_types, p_schema_versions, p_payloads, p_metadata)
             WITH ORDINALITY AS u (id, t, v, p, m, ord)
        ORDER BY u.ord
        RETURNING 'appended'::text, e.event_id, e.stream_version, e.transaction_id, e.seq;
END;
$$;

-- Where each subscriber (projection, delivery planner, ...) has got to.
-- Projections write theirs in the same transaction as their rows.
CREATE TABLE subscriber_checkpoints (
    subscriber     text        PRIMARY KEY,
    position_major bigint      NOT NULL,
    position_minor bigint      NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
