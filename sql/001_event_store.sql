-- The append-only event log: the single source of truth every number is rebuilt from.
-- Readers follow it in (transaction id, position) order, below the oldest open transaction, so
-- appends need not wait for each other (005_concurrent_appends.sql, courseflow/eventlog.py).
CREATE TABLE events (
    position       bigserial   PRIMARY KEY,
    stream         text        NOT NULL,
    stream_version integer     NOT NULL CHECK (stream_version > 0),
    type           text        NOT NULL,
    data           jsonb       NOT NULL,
    metadata       jsonb       NOT NULL DEFAULT '{}',
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (stream, stream_version)
);

-- Exactly one decision per accepted request, whatever the redeliveries.
CREATE UNIQUE INDEX events_one_decision_per_request ON events ((data ->> 'request_id'))
    WHERE type IN ('EnrollmentGranted', 'Waitlisted', 'EnrollmentRejected');

CREATE UNIQUE INDEX events_one_request_event ON events ((data ->> 'request_id'))
    WHERE type = 'EnrollmentRequested';

-- A stream entry is dead-lettered once, however often that is retried after a crash.
CREATE UNIQUE INDEX events_one_dead_letter_per_entry ON events ((data ->> 'entry_id'))
    WHERE type = 'RequestDeadLettered';

-- A student's history.
CREATE INDEX events_by_student ON events (((data ->> 'student_id')::bigint), position)
    WHERE data ? 'student_id';

CREATE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: % is not allowed', TG_OP;
END $$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();
