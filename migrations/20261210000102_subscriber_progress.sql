-- Where each running subscriber has got to, as its process last said
-- (every few milliseconds while it moves): what processes waiting for a
-- subscriber that runs in another process read. Ahead of
-- `subscriber_checkpoints`, which runs of skipped events move lazily.
-- Unlogged: it says where subscribers are now, and is empty after a crash
-- of the database, when readers fall back to the stored checkpoints.
CREATE UNLOGGED TABLE subscriber_progress (
    subscriber     text PRIMARY KEY,
    position_major bigint NOT NULL,
    position_minor bigint NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
