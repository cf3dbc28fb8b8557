-- The outbox: one row per (event, receiver), written by SendReliable inside
-- the sender's transaction and deleted by the relay once enqueued.
-- Only the primary key is indexed: IDs are ULIDs, so inserts append to the
-- right edge of the index and the relay claims in ID order through it.
CREATE SCHEMA IF NOT EXISTS {{schema}};

CREATE TABLE {{schema}}.outbox (
    id             uuid        PRIMARY KEY, -- task ULID, also the asynq TaskID
    event_id       uuid        NOT NULL,    -- one per SendReliable call
    correlation_id uuid        NOT NULL,    -- root event of a cascade (itself if none)
    causation_id   uuid,                    -- event whose receiver sent this one
    depth          integer     NOT NULL,    -- cascade depth, 0 for a root event
    signal         text        NOT NULL,
    receiver       text        NOT NULL,
    queue          text        NOT NULL,
    max_retry      integer     NOT NULL,
    timeout_ms     bigint      NOT NULL,
    process_at     timestamptz,             -- deliver no earlier than this; NULL: at once
    payload        bytea       NOT NULL,    -- JSON, validated by the sender
    attempts       integer     NOT NULL DEFAULT 0, -- failed enqueue attempts
    last_error     text
);

-- Rows the relay could not enqueue and set aside for an operator.
-- Requeue moves them back to the outbox.
CREATE TABLE {{schema}}.outbox_failed (
    LIKE {{schema}}.outbox,
    failed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id)
);
