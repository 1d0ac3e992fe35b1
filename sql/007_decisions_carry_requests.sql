-- A decision event now carries its request (idempotency key, requested_at, arrival; priority for every outcome):
-- the request's first and only event in the log, one row per decision instead of two. The worker no longer
-- appends an EnrollmentRequested event beside each decision (courseflow/events.py: RequestDecision).
--
-- Events are append-only (events_append_only), and nothing here rewrites them. Decisions recorded before this
-- migration keep their EnrollmentRequested event, in the same transaction and stream: both stay valid and are
-- read the old way (the projections, history and `courseflow check` take a decision without requested_at as
-- one whose request is that event), so replaying the whole log still rebuilds the same read models.
--
-- Exactly one decision per request stays enforced by events_one_decision_per_request (sql/001). The unique
-- index below only kept EnrollmentRequested events one per request; none are appended any more, and those
-- already in the log were appended in their decision's transaction, under that index, so they stay one each.
DROP INDEX events_one_request_event;

-- A decided request's course exists: the decision holds that course's row lock (FOR UPDATE) when it records the
-- request, and courses are never deleted. The foreign key re-checked that with a query per decided request (in
-- the hot transaction, about a tenth of its database time), so it goes.
ALTER TABLE enrollment_requests DROP CONSTRAINT enrollment_requests_course_id_fkey;
