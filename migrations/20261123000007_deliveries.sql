-- Delivery: the durable queue of outbound requests. Written by the delivery
-- planner (a subscriber of the log, checkpoint `deliveries`) in the
-- transaction that advances its checkpoint, so a crash can neither lose nor
-- duplicate a job; worked by the delivery workers. Not a read model: it is
-- never rebuilt, and rebuilding projections never touches it.

-- One row per outbound activity: the exact body sent (`bto`/`bcc` removed)
-- and who signs it.
CREATE TABLE delivery_activities (
    event_id       uuid PRIMARY KEY,   -- the event that decided the activity
    activity_id    text NOT NULL,
    activity_type  text NOT NULL,
    actor          text NOT NULL,      -- the local actor who signs
    body           text NOT NULL,
    position_major bigint NOT NULL,
    position_minor bigint NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX delivery_activities_activity ON delivery_activities (activity_id);

-- One row per (activity, inbox): the idempotency key of a delivery.
CREATE TABLE delivery_jobs (
    job_id          bigserial PRIMARY KEY,
    event_id        uuid NOT NULL REFERENCES delivery_activities (event_id) ON DELETE CASCADE,
    inbox           text NOT NULL,
    host            text NOT NULL,
    -- Whether `inbox` is an actor's own inbox (a 410 there means the actor is gone).
    personal        boolean NOT NULL,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- Claimed by a worker until then; an expired lease (a crashed worker)
    -- makes the job claimable again.
    leased_until    timestamptz,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    UNIQUE (event_id, inbox)
);
CREATE INDEX delivery_jobs_due ON delivery_jobs (next_attempt_at) WHERE state = 'pending';
CREATE INDEX delivery_jobs_host ON delivery_jobs (host, state);

-- What the workers know of each remote host.
CREATE TABLE delivery_hosts (
    host                 text PRIMARY KEY,
    -- Served first (an admin setting).
    trusted              boolean NOT NULL DEFAULT false,
    -- The signature the host last accepted: 'cavage' or 'rfc9421'.
    signature            text NOT NULL DEFAULT 'cavage'
                         CHECK (signature IN ('cavage', 'rfc9421')),
    consecutive_failures integer NOT NULL DEFAULT 0,
    -- Circuit breaker: while open, no job for the host is claimed; after,
    -- one probe goes first.
    open_until           timestamptz,
    failing_since        timestamptz,
    -- Unreachable for days: probed rarely until it answers again.
    unavailable_since    timestamptz,
    last_success_at      timestamptz,
    last_error           text,
    updated_at           timestamptz NOT NULL DEFAULT now()
);
