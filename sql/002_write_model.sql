-- The write model: rows a decision locks, kept in step with the events it appends.
CREATE TABLE courses (
    course_id       bigint      PRIMARY KEY CHECK (course_id > 0),
    title           text        NOT NULL DEFAULT '',
    -- Seats may exceed capacity only after capacity was lowered: seats are never revoked.
    capacity        integer     NOT NULL CHECK (capacity >= 0),
    seats_taken     integer     NOT NULL DEFAULT 0 CHECK (seats_taken >= 0),
    waitlist_length integer     NOT NULL DEFAULT 0 CHECK (waitlist_length >= 0),
    opens_at        timestamptz,
    closes_at       timestamptz CHECK (closes_at > opens_at),
    -- Requests were accepted before opening: decide the priority set the moment it opens.
    backlog         boolean     NOT NULL DEFAULT false,
    -- Last stream_version appended to this course's stream.
    version         integer     NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX courses_with_backlog ON courses (opens_at) WHERE backlog;

CREATE TABLE enrollment_requests (
    request_id      uuid        PRIMARY KEY,
    course_id       bigint      NOT NULL REFERENCES courses,
    student_id      bigint      NOT NULL,
    idempotency_key text        NOT NULL,
    priority        smallint    NOT NULL,
    -- The Redis stream id `arrival_ms-arrival_seq`: arrival order.
    arrival_ms      bigint      NOT NULL,
    arrival_seq     bigint      NOT NULL,
    requested_at    timestamptz NOT NULL,
    status          text        NOT NULL
        CHECK (status IN ('granted', 'waitlisted', 'rejected', 'dropped', 'left')),
    reason          text,
    decided_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- One seat or one waitlist place per student per course.
CREATE UNIQUE INDEX enrollment_requests_one_place ON enrollment_requests (course_id, student_id)
    WHERE status IN ('granted', 'waitlisted');

-- The head of a waitlist: priority, then arrival.
CREATE INDEX enrollment_requests_waitlist ON enrollment_requests
    (course_id, priority DESC, arrival_ms, arrival_seq) WHERE status = 'waitlisted';

-- The capacity invariant in the database itself: seats may only grow up to capacity. Lowering
-- capacity below the seats taken stays possible (seats are never revoked).
CREATE FUNCTION courses_seats_within_capacity() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.seats_taken > OLD.seats_taken AND NEW.seats_taken > NEW.capacity THEN
        RAISE EXCEPTION 'course %: % seats would exceed capacity %', NEW.course_id, NEW.seats_taken, NEW.capacity
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER courses_seats_within_capacity BEFORE UPDATE ON courses
    FOR EACH ROW EXECUTE FUNCTION courses_seats_within_capacity();
