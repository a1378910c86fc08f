-- Erasure of deleted content: the one exception to "events are never
-- rewritten in place" (docs/events.md, "Erasure").
--
-- When a post or an actor is deleted, the erasure subscriber (checkpoint
-- `erasure`) rewrites the payloads of the earlier events that carry its
-- content, in a transaction that declares itself the erasure
-- (`SET LOCAL chorus.erasure = 'on'`). Nothing else may change a stored
-- event, and no one may delete one.

-- DELETE and TRUNCATE stay refused, always; UPDATE only inside the erasure.
CREATE OR REPLACE FUNCTION events_are_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND coalesce(current_setting('chorus.erasure', true), '') = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'the event log is append-only: UPDATE on events is not allowed'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'only the erasure of deleted content rewrites payloads';
    END IF;
    RAISE EXCEPTION 'the event log is append-only: % on events is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

-- And what the erasure may change: the payload, and the `redacted` marker it
-- adds to the metadata (which every rewritten event must carry). The id,
-- type, stream, version, schema version, position and time stay.
CREATE FUNCTION events_only_redacted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.transaction_id IS DISTINCT FROM OLD.transaction_id
       OR NEW.seq IS DISTINCT FROM OLD.seq
       OR NEW.event_id IS DISTINCT FROM OLD.event_id
       OR NEW.stream_id IS DISTINCT FROM OLD.stream_id
       OR NEW.stream_version IS DISTINCT FROM OLD.stream_version
       OR NEW.event_type IS DISTINCT FROM OLD.event_type
       OR NEW.schema_version IS DISTINCT FROM OLD.schema_version
       OR NEW.recorded_at IS DISTINCT FROM OLD.recorded_at
       OR (NEW.metadata - 'redacted') IS DISTINCT FROM (OLD.metadata - 'redacted')
       OR NOT (NEW.metadata ? 'redacted') THEN
        RAISE EXCEPTION 'the erasure only rewrites an event''s payload and marks it redacted (event %)',
                        OLD.event_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER events_redaction_only
    BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION events_only_redacted();

COMMENT ON TABLE events IS
    'The event log: append-only, except the erasure of deleted content. Log order is (transaction_id, seq); see docs/events.md.';

-- The erasure subscriber's own index of the log: which events carry the
-- content of which post or actor (a post's creation and edits are held by
-- the post and its author; a received activity by its actor, and by its
-- object when the object is inline). Written as the subscriber reads the
-- log, in the transaction that advances its checkpoint; it holds ids only.
CREATE TABLE erasure_holdings (
    subject  text NOT NULL,   -- a post's or an actor's ActivityPub id
    event_id uuid NOT NULL,
    PRIMARY KEY (subject, event_id)
);

-- Posts and actors whose content was erased: an event after the deletion
-- that carries their content is redacted as soon as the subscriber reads it.
CREATE TABLE erasure_subjects (
    subject        text PRIMARY KEY,
    kind           text NOT NULL CHECK (kind IN ('post', 'actor')),
    deletion       uuid NOT NULL,    -- the event that deleted it (or its author)
    position_major bigint NOT NULL,  -- of that event
    position_minor bigint NOT NULL,
    erased_at      timestamptz NOT NULL DEFAULT now()
);

-- Deleted local accounts whose private key is kept until their
-- Delete{Person} has been delivered (it must be signed with it).
CREATE TABLE erasure_accounts (
    actor_id         uuid PRIMARY KEY,
    uri              text NOT NULL,
    deletion         uuid NOT NULL,  -- the ActorDeleted event (its delivery jobs)
    key_destroyed_at timestamptz
);
CREATE INDEX erasure_accounts_keys_kept ON erasure_accounts (actor_id)
    WHERE key_destroyed_at IS NULL;
