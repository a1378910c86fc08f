-- Where the mirror of an upstream log of record (CHORUS_EVENT_STORE set to a
-- KurrentDB server or another Postgres database) has copied it up to, as the
-- upstream's own position. Kept apart from subscriber_checkpoints: its
-- positions are not positions of this database's log, and nothing that
-- lists subscribers (lags, replays) must read them as such. One row at most.
CREATE TABLE log_mirror (
    one            boolean PRIMARY KEY DEFAULT true CHECK (one),
    position_major bigint NOT NULL CHECK (position_major >= 0),
    position_minor bigint NOT NULL CHECK (position_minor >= 0),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
