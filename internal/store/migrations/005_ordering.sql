-- Per-key ordering, opt-in: a row with an ordering key waits until no row of
-- the same signal, receiver and key is in flight and none was numbered before
-- it. The number comes from a sequence when SendReliable writes the row, so
-- transactions that serialize on what they change (a lock on the order, the
-- customer) number their events in commit order, whatever the clocks of the
-- processes that sent them. Rows without a key have NULL in both columns.
CREATE SEQUENCE {{schema}}.ordering_seq;

ALTER TABLE {{schema}}.outbox
    ADD COLUMN ordering_key text,
    ADD COLUMN ordering_seq bigint;
ALTER TABLE {{schema}}.inflight
    ADD COLUMN ordering_key text,
    ADD COLUMN ordering_seq bigint;
ALTER TABLE {{schema}}.dead
    ADD COLUMN ordering_key text,
    ADD COLUMN ordering_seq bigint;

-- The relay walks the keys with pending rows and takes each key's first row.
-- Partial: a row without a key costs its sender no index entry.
CREATE INDEX outbox_ordering_idx ON {{schema}}.outbox (signal, receiver, ordering_key, ordering_seq)
    WHERE ordering_key IS NOT NULL;
-- A key with a row in flight is busy.
CREATE INDEX inflight_ordering_idx ON {{schema}}.inflight (signal, receiver, ordering_key)
    WHERE ordering_key IS NOT NULL;
