-- Two writes per event: the sender's INSERT and the ack's DELETE. A row no
-- longer moves to inflight when it is enqueued: every live row stays in
-- outbox, and which of them are enqueued follows from the Dispatchers'
-- position (kept in Redis, beside the tasks) over the sending transactions'
-- IDs, read through snapshots as PgQ reads its ticks: a row whose
-- transaction commits late, after rows with later IDs, is still found.
-- Rows change one by one only off the happy path: a failed enqueue or a
-- repair waits in next_attempt_at, and rows with an ordering key record
-- their enqueue in enqueued_at.
ALTER TABLE {{schema}}.outbox
    ADD COLUMN xid         xid8,        -- the sending transaction's ID
    ADD COLUMN enqueued_at timestamptz, -- a keyed row's last enqueue; NULL for a row without a key
    ADD COLUMN checked_at  timestamptz; -- when repair last found its task alive in Redis

-- Rows from before this migration, pending or in flight, take xid 1: older
-- than every transaction, and the ID a worker assumes for a task whose
-- headers carry none. No Dispatcher position exists yet, so the first one
-- starts before them and enqueues each once more: asynq turns away the
-- tasks it still holds, by task ID.
UPDATE {{schema}}.outbox SET xid = '1';
INSERT INTO {{schema}}.outbox (id, event_id, correlation_id, causation_id, depth, signal, receiver, queue,
    max_retry, timeout_ms, process_at, payload, attempts, last_error, enqueues, generation, headers,
    ordering_key, ordering_seq, xid, enqueued_at, checked_at)
SELECT id, event_id, correlation_id, causation_id, depth, signal, receiver, queue,
    max_retry, timeout_ms, process_at, payload, attempts, last_error, enqueues, generation, headers,
    ordering_key, ordering_seq, '1',
    CASE WHEN ordering_key IS NOT NULL THEN enqueued_at END, checked_at
FROM {{schema}}.inflight;
DROP TABLE {{schema}}.inflight;

ALTER TABLE {{schema}}.outbox
    ALTER COLUMN xid SET DEFAULT pg_current_xact_id(),
    ALTER COLUMN xid SET NOT NULL,
    DROP CONSTRAINT outbox_pkey,
    -- One index for senders to write: the Dispatchers read by xid, acks
    -- find a row by (xid, id), both carried by its task.
    ADD PRIMARY KEY (xid, id);

-- Rows waiting out a failed enqueue or sent back by repair, due in turn.
CREATE INDEX outbox_retry_idx ON {{schema}}.outbox (next_attempt_at)
    WHERE next_attempt_at IS NOT NULL AND ordering_key IS NULL;
-- Keyed rows in flight, for repair and for a Redis that lost their tasks.
CREATE INDEX outbox_keyed_enqueued_idx ON {{schema}}.outbox ((coalesce(checked_at, enqueued_at)))
    WHERE enqueued_at IS NOT NULL;

-- The marker the Dispatchers last set in Redis: a relay that finds the
-- marker gone tells a Redis that lost its data from a first start by it.
ALTER TABLE {{schema}}.ledger ADD COLUMN marker text;
