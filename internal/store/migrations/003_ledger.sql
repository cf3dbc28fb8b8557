-- The ledger: an outbox row now lives until its receiver has succeeded (the
-- worker deletes it) or it has been recorded as dead, so that whatever Redis
-- loses can be found here and sent again. A row the relay enqueued moves from
-- outbox to inflight: the senders' table keeps its single index, so the
-- ledger costs SendReliable nothing, and the relay's claim never walks past
-- rows already in Redis.
ALTER TABLE {{schema}}.outbox
    ADD COLUMN enqueues        integer NOT NULL DEFAULT 0, -- enqueues so far, repairs included
    ADD COLUMN generation      integer NOT NULL DEFAULT 0, -- bumped by a requeue from dead: a fresh asynq task ID
    ADD COLUMN next_attempt_at timestamptz;                -- after a failed enqueue: not before this

-- Rows whose tasks are in Redis and whose receivers have not succeeded yet.
CREATE TABLE {{schema}}.inflight (
    LIKE {{schema}}.outbox INCLUDING DEFAULTS,
    enqueued_at timestamptz NOT NULL, -- the last enqueue
    checked_at  timestamptz,          -- when repair last found its task alive in Redis
    PRIMARY KEY (id)
);
-- Repair reads rows by the time they were last known to be in Redis.
CREATE INDEX inflight_checked_idx ON {{schema}}.inflight ((coalesce(checked_at, enqueued_at)));

-- Dead letters: every row whose receiver failed for good, or that could not
-- be enqueued, with why. Never trimmed; requeue or discard them.
CREATE TABLE {{schema}}.dead (
    LIKE {{schema}}.outbox INCLUDING DEFAULTS,
    enqueued_at timestamptz,          -- the last enqueue, if it ever was
    reason      text        NOT NULL, -- what kind of failure: see store.Reason*
    dead_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id)
);
CREATE INDEX dead_signal_receiver_idx ON {{schema}}.dead (signal, receiver);

INSERT INTO {{schema}}.dead (id, event_id, correlation_id, causation_id, depth, signal, receiver, queue,
    max_retry, timeout_ms, process_at, payload, attempts, last_error, reason, dead_at)
SELECT id, event_id, correlation_id, causation_id, depth, signal, receiver, queue,
    max_retry, timeout_ms, process_at, payload, attempts, last_error, 'unenqueueable', failed_at
FROM {{schema}}.outbox_failed;
DROP TABLE {{schema}}.outbox_failed;

-- One row naming this ledger, so that what a relay keeps in Redis for it
-- (the marker that tells a Redis that lost its data) is its own even when
-- several applications share one Redis.
CREATE TABLE {{schema}}.ledger (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid()
);
INSERT INTO {{schema}}.ledger DEFAULT VALUES;
