-- The inbox: one row per (event, receiver) whose effects were applied,
-- written by signals.Once inside the receiver's own transaction. The primary
-- key makes a second delivery of the same task find the first one's row.
CREATE TABLE {{schema}}.inbox (
    task_id      uuid        PRIMARY KEY,
    event_id     uuid        NOT NULL,
    signal       text        NOT NULL,
    receiver     text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);
