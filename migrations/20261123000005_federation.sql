-- Federation: what other servers send and what Chorus keeps of them.

-- The server's own key pair (the instance actor signs fetches with it).
-- Like actor_keys, never in the log.
CREATE TABLE server_keys (
    name            text PRIMARY KEY,
    private_key_pem text NOT NULL,
    public_key_pem  text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Projection `actors`: remote actors' profiles.
ALTER TABLE actors
    ADD COLUMN kind       text NOT NULL DEFAULT 'Person',
    ADD COLUMN url        text,
    ADD COLUMN icon       text,
    ADD COLUMN updated_at timestamptz;
CREATE INDEX actors_key_id ON actors (key_id);

-- Projection `posts`: remote posts.
ALTER TABLE posts
    ADD COLUMN kind        text NOT NULL DEFAULT 'Note',
    ADD COLUMN domain      text,                     -- host of a remote post's author
    ADD COLUMN url         text,
    ADD COLUMN attachments jsonb NOT NULL DEFAULT '[]';
CREATE INDEX posts_author_uri ON posts (author);

-- Projection `instances`: blocked domains.
CREATE TABLE blocked_instances (
    domain         text PRIMARY KEY,
    reason         text,
    blocked_at     timestamptz NOT NULL,
    position_major bigint NOT NULL,
    position_minor bigint NOT NULL
);

-- Projection `received`: every received activity and what became of it.
CREATE TABLE received_activities (
    activity_id    text PRIMARY KEY,
    activity_type  text NOT NULL,
    actor          text NOT NULL,
    object         text,
    remote_host    text,
    received_at    timestamptz NOT NULL,
    outcome        text CHECK (outcome IN ('unsupported', 'refused', 'ignored')),
    reason         text,
    event_id       uuid NOT NULL,
    position_major bigint NOT NULL,
    position_minor bigint NOT NULL
);
CREATE INDEX received_activities_outcome ON received_activities (outcome, position_major, position_minor)
    WHERE outcome IS NOT NULL;
CREATE INDEX received_activities_position ON received_activities (position_major DESC, position_minor DESC);
