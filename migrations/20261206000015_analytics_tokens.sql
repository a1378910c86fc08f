-- Reading the log as a stream (docs/events.md, "Reading the stream").
--
-- Analytics tokens: a data team reads the event log without an account.
-- An `account` token acts as its actor; an `analytics` token belongs to
-- no actor and may only read the log (GraphQL `events`, the subscription,
-- `/events.ndjson`).
ALTER TABLE api_tokens
    ADD COLUMN scope text NOT NULL DEFAULT 'account'
        CHECK (scope IN ('account', 'analytics')),
    ALTER COLUMN actor_id DROP NOT NULL,
    ALTER COLUMN actor_uri DROP NOT NULL,
    ADD CONSTRAINT api_tokens_owner CHECK (
        CASE scope
            WHEN 'account' THEN actor_id IS NOT NULL AND actor_uri IS NOT NULL
            ELSE actor_id IS NULL AND actor_uri IS NULL
        END
    );

-- The filters of the stream, each served by an index so that a page of a
-- filtered read costs a few index probes, however long the log.

-- By type: one type is read in log order straight from the index.
CREATE INDEX events_type_position ON events (event_type, transaction_id, seq);

-- By time.
CREATE INDEX events_recorded_at ON events (recorded_at);

-- By actor and by host. The actors an event is by or about, each as
-- `a:<actor id>`, and their hosts and the host an inbound payload came from,
-- each as `h:<host>` (lower case, with a port if any). Ids and hosts are
-- among what the erasure keeps, so a rewrite leaves them as they were.
-- Its cost tells the planner that testing it row by row (walking the log
-- in order) is dearer than the index, unless nearly every event matches.
CREATE FUNCTION chorus_event_parties(event_type text, payload jsonb, metadata jsonb)
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE COST 1000 AS $$
    WITH actors AS (
        SELECT DISTINCT uri
        FROM unnest(ARRAY[
            metadata->>'actor',
            payload->>'actor',
            payload->>'author',
            payload->>'follower',
            payload->>'followee',
            payload->>'blocker',
            payload->>'blocked',
            payload->>'post_author',
            payload#>>'{uris,id}',
            CASE WHEN event_type IN ('RemoteActorUpdated', 'RemoteActorDeleted', 'ActorDeleted')
                 THEN payload->>'uri' END
        ]) AS uri
        WHERE uri IS NOT NULL AND uri <> ''
    ), hosts AS (
        SELECT lower(substring(uri FROM '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#]*@)?([^/?#]+)')) AS host
        FROM actors
        UNION
        SELECT lower(metadata->>'remote_host')
    )
    SELECT coalesce(array_agg(entry), '{}')
    FROM (
        SELECT 'a:' || uri AS entry FROM actors
        UNION
        SELECT 'h:' || host FROM hosts WHERE host IS NOT NULL AND host <> ''
    ) AS entries
$$;

COMMENT ON FUNCTION chorus_event_parties(text, jsonb, jsonb) IS
    'The actors (a:<id>) and hosts (h:<host>) an event is by or about, for the stream''s actor and host filters.';

CREATE INDEX events_parties ON events
    USING gin (chorus_event_parties(event_type, payload, metadata));

-- By stream prefix (`post-`): `stream_id LIKE 'post-%'` uses the stream
-- index where the database sorts text bytewise (the C collation, as the
-- private cluster's); elsewhere it needs an index of its own.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_database d
        WHERE d.datname = current_database()
          AND d.datcollate IN ('C', 'POSIX')
          AND coalesce(to_jsonb(d)->>'datlocprovider', 'c') = 'c'
    ) THEN
        CREATE INDEX events_stream_pattern ON events (stream_id text_pattern_ops);
    END IF;
END
$$;
