-- Headers travel with an event from SendReliable to its receivers: the
-- middleware's (a trace context, say), carried into the asynq task's headers.
-- NULL when there are none.
ALTER TABLE {{schema}}.outbox ADD COLUMN headers jsonb;
ALTER TABLE {{schema}}.inflight ADD COLUMN headers jsonb;
ALTER TABLE {{schema}}.dead ADD COLUMN headers jsonb;
