-- The write model: rows a worker locks to decide, kept in step with the events it appends.
CREATE TABLE courses (
    course_id       bigint      PRIMARY KEY CHECK (course_id > 0),
    title           text        NOT NULL DEFAULT '',
    capacity        integer     NOT NULL CHECK (capacity >= 0),
    seats_taken     integer     NOT NULL DEFAULT 0 CHECK (seats_taken >= 0),
    waitlist_length integer     NOT NULL DEFAULT 0 CHECK (waitlist_length >= 0),
    -- Last stream_version appended to this course's stream.
    version         integer     NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT seats_within_capacity CHECK (seats_taken <= capacity)
);

CREATE TABLE enrollment_requests (
    request_id        uuid        PRIMARY KEY,
    course_id         bigint      NOT NULL REFERENCES courses,
    student_id        bigint      NOT NULL,
    idempotency_key   text        NOT NULL,
    priority          smallint    NOT NULL,
    stream_id         text        NOT NULL,
    requested_at      timestamptz NOT NULL,
    status            text        NOT NULL CHECK (status IN ('granted', 'waitlisted', 'rejected')),
    reason            text,
    waitlist_position integer,
    decided_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- One seat or one waitlist place per student per course.
CREATE UNIQUE INDEX enrollment_requests_one_place ON enrollment_requests (course_id, student_id)
    WHERE status IN ('granted', 'waitlisted');

CREATE INDEX enrollment_requests_by_student ON enrollment_requests (student_id, idempotency_key);
