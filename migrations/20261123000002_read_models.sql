-- Read models: tables built by projections from the event log, and nothing
-- else. Each can be dropped and rebuilt from the log; rows carry the log
-- position of the event that last shaped them (position_major,
-- position_minor), which orders them stably across rebuilds and serves as
-- the pagination cursor. No projection reads another projection's tables.

-- Projection `actors`.
CREATE TABLE actors (
    uri              text PRIMARY KEY,
    actor_id         uuid UNIQUE,            -- local actors only
    handle           text NOT NULL,          -- preferredUsername
    domain           text NOT NULL,          -- host of the actor's id
    local            boolean NOT NULL,
    display_name     text,
    summary          text,
    locked           boolean NOT NULL DEFAULT false,
    admin            boolean NOT NULL DEFAULT false,
    inbox            text NOT NULL,
    outbox           text,
    followers_uri    text,
    following_uri    text,
    shared_inbox     text,
    key_id           text,
    public_key_pem   text,
    registered_at    timestamptz NOT NULL,
    deleted_at       timestamptz,
    position_major   bigint NOT NULL,
    position_minor   bigint NOT NULL
);
CREATE UNIQUE INDEX actors_local_handle ON actors (handle) WHERE local;
CREATE INDEX actors_handle_domain ON actors (lower(handle), domain);

-- Projection `posts`: current state, with edits kept in post_edits.
CREATE TABLE posts (
    uri                text PRIMARY KEY,
    post_id            uuid UNIQUE,          -- local posts only
    author             text NOT NULL,
    local              boolean NOT NULL,
    content            text NOT NULL,        -- sanitised HTML
    source             text,
    summary            text,
    sensitive          boolean NOT NULL DEFAULT false,
    visibility         text NOT NULL CHECK (visibility IN ('public', 'unlisted', 'followers_only', 'direct')),
    in_reply_to        text,
    in_reply_to_author text,
    thread_root        text NOT NULL,
    mentions           text[] NOT NULL DEFAULT '{}',
    hashtags           text[] NOT NULL DEFAULT '{}',
    to_recipients      text[] NOT NULL DEFAULT '{}',
    cc_recipients      text[] NOT NULL DEFAULT '{}',
    published          timestamptz NOT NULL,
    edited_at          timestamptz,
    deleted_at         timestamptz,
    activity           jsonb,                -- the Create as delivered (for the outbox)
    position_major     bigint NOT NULL,      -- of the creating event
    position_minor     bigint NOT NULL
);
CREATE INDEX posts_author ON posts (author, position_major DESC, position_minor DESC);
CREATE INDEX posts_thread ON posts (thread_root, published);
CREATE INDEX posts_in_reply_to ON posts (in_reply_to);
CREATE INDEX posts_position ON posts (position_major DESC, position_minor DESC);

CREATE TABLE post_edits (
    post_uri       text NOT NULL REFERENCES posts (uri),
    version        integer NOT NULL,         -- 1 is the original
    content        text NOT NULL,
    source         text,
    summary        text,
    sensitive      boolean NOT NULL,
    edited_at      timestamptz NOT NULL,
    PRIMARY KEY (post_uri, version)
);

-- Projection `follows`.
CREATE TABLE follows (
    follower       text NOT NULL,
    followee       text NOT NULL,
    state          text NOT NULL CHECK (state IN ('requested', 'accepted', 'rejected')),
    follow_id      text NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    position_major bigint NOT NULL,          -- of the request
    position_minor bigint NOT NULL,
    PRIMARY KEY (follower, followee)
);
CREATE INDEX follows_followee ON follows (followee, state, position_major DESC, position_minor DESC);
CREATE INDEX follows_follower ON follows (follower, state, position_major DESC, position_minor DESC);

-- Projection `favorites`.
CREATE TABLE favorites (
    actor          text NOT NULL,
    post           text NOT NULL,
    post_author    text NOT NULL,
    like_id        text NOT NULL,
    created_at     timestamptz NOT NULL,
    position_major bigint NOT NULL,
    position_minor bigint NOT NULL,
    PRIMARY KEY (actor, post)
);
CREATE INDEX favorites_post ON favorites (post, position_major DESC, position_minor DESC);
CREATE INDEX favorites_actor ON favorites (actor, position_major DESC, position_minor DESC);

-- Projection `reblogs`.
CREATE TABLE reblogs (
    actor          text NOT NULL,
    post           text NOT NULL,
    post_author    text NOT NULL,
    announce_id    text NOT NULL,
    created_at     timestamptz NOT NULL,
    position_major bigint NOT NULL,
    position_minor bigint NOT NULL,
    PRIMARY KEY (actor, post)
);
CREATE INDEX reblogs_post ON reblogs (post, position_major DESC, position_minor DESC);
CREATE INDEX reblogs_actor ON reblogs (actor, position_major DESC, position_minor DESC);

-- Projection `blocks`.
CREATE TABLE blocks (
    blocker        text NOT NULL,
    blocked        text NOT NULL,
    block_id       text NOT NULL,
    created_at     timestamptz NOT NULL,
    position_major bigint NOT NULL,
    position_minor bigint NOT NULL,
    PRIMARY KEY (blocker, blocked)
);
CREATE INDEX blocks_blocked ON blocks (blocked);

-- Projection `timelines`: home timelines are written on fan-out (one entry
-- per local recipient); the projection keeps its own copy of who follows
-- whom (timeline_followers) rather than reading the `follows` projection.
CREATE TABLE timeline_followers (
    followee       text NOT NULL,
    follower       text NOT NULL,            -- local actors only
    PRIMARY KEY (followee, follower)
);
CREATE TABLE timeline_blocks (
    blocker        text NOT NULL,
    blocked        text NOT NULL,
    PRIMARY KEY (blocker, blocked)
);
CREATE TABLE home_timeline (
    owner          text NOT NULL,            -- a local actor
    post           text NOT NULL,
    reblogged_by   text NOT NULL DEFAULT '', -- '' for the post itself
    author         text NOT NULL,
    position_major bigint NOT NULL,
    position_minor bigint NOT NULL,
    PRIMARY KEY (owner, post, reblogged_by)
);
CREATE INDEX home_timeline_order ON home_timeline (owner, position_major DESC, position_minor DESC);
-- Local and public timelines: public posts (and, for public, remote ones).
CREATE TABLE public_timeline (
    post           text PRIMARY KEY,
    author         text NOT NULL,
    local          boolean NOT NULL,
    position_major bigint NOT NULL,
    position_minor bigint NOT NULL
);
CREATE INDEX public_timeline_order ON public_timeline (position_major DESC, position_minor DESC);
CREATE INDEX local_timeline_order ON public_timeline (position_major DESC, position_minor DESC) WHERE local;

-- Projection `notifications`: one per event that concerns a local actor.
CREATE TABLE notifications (
    event_id       uuid NOT NULL,            -- the event that caused it
    recipient      text NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('followed', 'follow_requested', 'favorited', 'reblogged', 'mentioned')),
    actor          text NOT NULL,            -- who did it
    post           text,
    created_at     timestamptz NOT NULL,
    position_major bigint NOT NULL,
    position_minor bigint NOT NULL,
    PRIMARY KEY (event_id, recipient)
);
CREATE INDEX notifications_recipient ON notifications (recipient, position_major DESC, position_minor DESC);
