-- Projection `servers`: servers (communities that federate as ActivityPub
-- Groups), their channels and moderators, and the messages they announced.
-- A server's members are its followers (`follows`, followee = the server),
-- its bans its blocks (`blocks`, blocker = the server); its actor row is in
-- `actors` (kind 'Group').

CREATE TABLE servers (
    uri            text PRIMARY KEY,
    server_id      uuid NOT NULL UNIQUE,
    name           text NOT NULL UNIQUE,
    display_name   text,
    description    text,
    membership     text NOT NULL CHECK (membership IN ('open', 'approval')),
    open_replies   boolean NOT NULL DEFAULT false,  -- non-members may reply
    owner          text NOT NULL,
    created_at     timestamptz NOT NULL,
    position_major bigint NOT NULL,
    position_minor bigint NOT NULL
);
COMMENT ON TABLE servers IS 'Servers (ActivityPub Groups) created on this instance; members are their followers in follows.';

CREATE TABLE server_channels (
    server         text NOT NULL,
    slug           text NOT NULL,
    topic          text,
    created_at     timestamptz NOT NULL,
    position_major bigint NOT NULL,
    position_minor bigint NOT NULL,
    PRIMARY KEY (server, slug)
);
COMMENT ON TABLE server_channels IS 'The channels of each server.';

CREATE TABLE server_moderators (
    server         text NOT NULL,
    member         text NOT NULL,
    appointed_by   text NOT NULL,
    appointed_at   timestamptz NOT NULL,
    PRIMARY KEY (server, member)
);
COMMENT ON TABLE server_moderators IS 'Moderators of each server (the owner is in servers.owner).';

CREATE TABLE channel_messages (
    server         text NOT NULL,
    post           text NOT NULL,
    channel        text NOT NULL,
    author         text NOT NULL,
    in_reply_to    text,
    announce_id    text NOT NULL,
    announced_at   timestamptz NOT NULL,
    removed_at     timestamptz,
    removed_by     text,
    position_major bigint NOT NULL,
    position_minor bigint NOT NULL,
    PRIMARY KEY (server, post)
);
CREATE INDEX channel_messages_channel
    ON channel_messages (server, channel, position_major DESC, position_minor DESC)
    WHERE removed_at IS NULL;
CREATE INDEX channel_messages_announced
    ON channel_messages (server, position_major DESC, position_minor DESC);
COMMENT ON TABLE channel_messages IS 'Messages each server announced to its members, by channel; removed ones keep their row with removed_at.';
