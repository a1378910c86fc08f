-- Private state of projections: tables a projection keeps for itself so that
-- it never has to read another projection's tables. Like every read model,
-- they are rebuilt from the log alone.

-- Projection `timelines`: which actors are local. Only local actors have a
-- home timeline, so fan-out and `timeline_followers` are limited to them.
CREATE TABLE timeline_local_actors (
    uri text PRIMARY KEY
);

-- Projection `notifications`: which actors are local. Only local actors are
-- notified.
CREATE TABLE notification_local_actors (
    uri text PRIMARY KEY
);
