-- The append-only event log: the single source of truth every number is rebuilt from.
CREATE TABLE events (
    position       bigserial   PRIMARY KEY,
    stream         text        NOT NULL,
    stream_version integer     NOT NULL CHECK (stream_version > 0),
    type           text        NOT NULL,
    data           jsonb       NOT NULL,
    metadata       jsonb       NOT NULL DEFAULT '{}',
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Readers stay below the oldest running transaction, so a late commit is never skipped.
    transaction_id xid8        NOT NULL DEFAULT pg_current_xact_id(),
    UNIQUE (stream, stream_version)
);

CREATE INDEX events_transaction_id ON events (transaction_id, position);

-- Exactly one decision per accepted request, whatever the redeliveries.
CREATE UNIQUE INDEX events_one_decision_per_request ON events ((data ->> 'request_id'))
    WHERE type IN ('EnrollmentGranted', 'Waitlisted', 'EnrollmentRejected');

CREATE UNIQUE INDEX events_one_request_event ON events ((data ->> 'request_id'))
    WHERE type = 'EnrollmentRequested';

CREATE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: % is not allowed', TG_OP;
END $$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();
