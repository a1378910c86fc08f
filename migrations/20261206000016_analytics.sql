-- Analytics: daily counts of the log (projection `activity_stats`) and the
-- `analytics` schema, stable views for analytics consumers over the read
-- models (docs/analytics.md). The views are the contract; the tables under
-- them may change. A rebuild of a projection makes the views over its
-- tables again, with their comments and grants.

-- Projection `activity_stats`: events per UTC day, event type, activity
-- type ('' when the event carries none) and remote host ('' for local
-- events). Each row remembers the last event it counted, so an event
-- applied again (a replay) is not counted twice.
CREATE TABLE activity_stats (
    day            date   NOT NULL,
    event_type     text   NOT NULL,
    activity_type  text   NOT NULL,
    remote_host    text   NOT NULL,
    events         bigint NOT NULL CHECK (events > 0),
    position_major bigint NOT NULL,          -- of the last event counted
    position_minor bigint NOT NULL,
    PRIMARY KEY (day, event_type, activity_type, remote_host)
);
COMMENT ON TABLE activity_stats IS
    'Projection activity_stats: events per day, event type, activity type and remote host.';

-- Projection `activity_stats`: events per type since the start of the log
-- (what /metrics reports without counting the log).
CREATE TABLE activity_stats_totals (
    event_type     text   PRIMARY KEY,
    events         bigint NOT NULL CHECK (events > 0),
    position_major bigint NOT NULL,
    position_minor bigint NOT NULL
);
COMMENT ON TABLE activity_stats_totals IS
    'Projection activity_stats: events per type since the start of the log.';

CREATE SCHEMA analytics;
COMMENT ON SCHEMA analytics IS
    'Stable views for analytics consumers (docs/analytics.md). Read-only; grant USAGE on the schema and SELECT on its views.';

CREATE VIEW analytics.daily_activity AS
    SELECT day,
           event_type,
           nullif(activity_type, '') AS activity_type,
           nullif(remote_host, '') AS remote_host,
           remote_host = '' AS local,
           events
    FROM public.activity_stats;
COMMENT ON VIEW analytics.daily_activity IS
    'Events appended to the log per UTC day, event type, activity type and origin.';
COMMENT ON COLUMN analytics.daily_activity.day IS 'The UTC day the events were recorded.';
COMMENT ON COLUMN analytics.daily_activity.event_type IS 'The event type (docs/events.md), e.g. PostCreated, ActivityReceived.';
COMMENT ON COLUMN analytics.daily_activity.activity_type IS 'The ActivityStreams type of the activity the event carries or received (Create, Follow, Like, ...); null when it carries none.';
COMMENT ON COLUMN analytics.daily_activity.remote_host IS 'The remote host the activity came from; null for local events.';
COMMENT ON COLUMN analytics.daily_activity.local IS 'True for events of this server (local actions, admin actions), false for what came from remote_host.';
COMMENT ON COLUMN analytics.daily_activity.events IS 'How many events.';

CREATE VIEW analytics.event_totals AS
    SELECT event_type, events FROM public.activity_stats_totals;
COMMENT ON VIEW analytics.event_totals IS 'Events appended to the log per event type, since its start.';
COMMENT ON COLUMN analytics.event_totals.event_type IS 'The event type (docs/events.md).';
COMMENT ON COLUMN analytics.event_totals.events IS 'How many events of the type the log holds.';

CREATE VIEW analytics.follows AS
    SELECT follower, followee AS followed, state, updated_at AS since, created_at AS requested_at
    FROM public.follows;
COMMENT ON VIEW analytics.follows IS
    'The follows graph: one row per pair of actors with a follow request, pending, accepted or rejected.';
COMMENT ON COLUMN analytics.follows.follower IS 'The ActivityPub id of the actor who follows (or asked to).';
COMMENT ON COLUMN analytics.follows.followed IS 'The ActivityPub id of the actor followed.';
COMMENT ON COLUMN analytics.follows.state IS 'requested (waiting for approval), accepted or rejected.';
COMMENT ON COLUMN analytics.follows.since IS 'When the follow entered its current state.';
COMMENT ON COLUMN analytics.follows.requested_at IS 'When the follow was first requested.';

-- Public and unlisted posts only: analytics never see followers-only or
-- direct posts, nor deleted ones.
CREATE VIEW analytics.top_posts AS
    WITH favorite_counts AS (
        SELECT post, count(*) AS n FROM public.favorites GROUP BY post
    ), reblog_counts AS (
        SELECT post, count(*) AS n FROM public.reblogs GROUP BY post
    )
    SELECT p.uri AS post,
           p.author,
           p.local,
           p.published,
           coalesce(f.n, 0) AS favorites,
           coalesce(r.n, 0) AS reblogs
    FROM public.posts p
    LEFT JOIN favorite_counts f ON f.post = p.uri
    LEFT JOIN reblog_counts r ON r.post = p.uri
    WHERE p.deleted_at IS NULL
      AND p.visibility IN ('public', 'unlisted')
      AND (f.n IS NOT NULL OR r.n IS NOT NULL)
    ORDER BY coalesce(f.n, 0) + coalesce(r.n, 0) DESC, p.uri;
COMMENT ON VIEW analytics.top_posts IS
    'Public and unlisted posts that were favorited or reblogged, most first (favorites plus reblogs).';
COMMENT ON COLUMN analytics.top_posts.post IS 'The post''s ActivityPub id.';
COMMENT ON COLUMN analytics.top_posts.author IS 'The ActivityPub id of its author.';
COMMENT ON COLUMN analytics.top_posts.local IS 'Whether the post was written on this server.';
COMMENT ON COLUMN analytics.top_posts.published IS 'When it was published.';
COMMENT ON COLUMN analytics.top_posts.favorites IS 'Actors who favorite it now (local and remote).';
COMMENT ON COLUMN analytics.top_posts.reblogs IS 'Actors who reblog it now (local and remote).';

-- A role for analytics consumers: it reads the views and nothing else.
-- Roles belong to the whole cluster, so it may exist already (another
-- database of the cluster); a database user without CREATEROLE skips it,
-- and docs/analytics.md says how to grant access by hand.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chorus_analytics') THEN
        BEGIN
            CREATE ROLE chorus_analytics NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'role chorus_analytics not created (no CREATEROLE); see docs/analytics.md';
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chorus_analytics') THEN
        GRANT USAGE ON SCHEMA analytics TO chorus_analytics;
        GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO chorus_analytics;
    END IF;
END;
$$;
