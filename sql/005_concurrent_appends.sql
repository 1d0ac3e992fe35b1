-- Appends no longer wait for each other, so positions can become visible out of order. Each event
-- records the transaction that appended it, and readers (courseflow/eventlog.py) follow the log in
-- (txid, position) order, reading only below pg_snapshot_xmin(pg_current_snapshot()): whatever
-- commits later has a higher txid than anything read, so no reader skips an event committed late.
--
-- Events from before this migration were appended one transaction at a time, under a global lock,
-- so their positions are their commit order. They all get txid 0: below every real transaction id
-- (those start at 3), so they sort before every new event and in position order among themselves,
-- and a checkpoint saved before (txid 0, its position) still means exactly what it meant.
ALTER TABLE events ADD COLUMN txid xid8 NOT NULL DEFAULT '0';
ALTER TABLE events ALTER COLUMN txid SET DEFAULT pg_current_xact_id();

-- Log order: the projector, the live feed and rebuilds.
CREATE INDEX events_in_log_order ON events (txid, position);
-- A course's history, a page at a time in log order.
CREATE INDEX events_by_stream ON events (stream, txid, position);
-- A student's history, in log order.
DROP INDEX events_by_student;
CREATE INDEX events_by_student ON events (((data ->> 'student_id')::bigint), txid, position)
    WHERE data ? 'student_id';

-- A read model's place in the log: the last event applied, (txid, position).
ALTER TABLE projection_checkpoints ADD COLUMN txid xid8 NOT NULL DEFAULT '0';
