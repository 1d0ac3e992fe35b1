-- Read models, built only from events by the projector (projections/) and rebuilt by replay.
CREATE TABLE projection_checkpoints (
    name     text   PRIMARY KEY,
    position bigint NOT NULL DEFAULT 0
);

INSERT INTO projection_checkpoints (name) VALUES ('course_seats'), ('waitlists'), ('enrollments'), ('counters');

CREATE TABLE course_seats (
    course_id       bigint      PRIMARY KEY,
    title           text        NOT NULL,
    capacity        integer     NOT NULL,
    seats_taken     integer     NOT NULL DEFAULT 0,
    waitlist_length integer     NOT NULL DEFAULT 0,
    opens_at        timestamptz,
    closes_at       timestamptz
);

CREATE TABLE waitlist_entries (
    request_id  uuid     PRIMARY KEY,
    course_id   bigint   NOT NULL,
    student_id  bigint   NOT NULL,
    priority    smallint NOT NULL,
    arrival_ms  bigint   NOT NULL,
    arrival_seq bigint   NOT NULL
);

CREATE INDEX waitlist_entries_order ON waitlist_entries (course_id, priority DESC, arrival_ms, arrival_seq);

CREATE TABLE enrollments (
    request_id   uuid        PRIMARY KEY,
    course_id    bigint      NOT NULL,
    student_id   bigint      NOT NULL,
    priority     smallint    NOT NULL,
    status       text        NOT NULL,
    reason       text,
    requested_at timestamptz NOT NULL,
    decided_at   timestamptz,
    updated_at   timestamptz NOT NULL
);

CREATE INDEX enrollments_by_student ON enrollments (student_id, course_id);

CREATE TABLE enrollment_counters (
    course_id  bigint  PRIMARY KEY,
    requested  integer NOT NULL DEFAULT 0,
    granted    integer NOT NULL DEFAULT 0,
    waitlisted integer NOT NULL DEFAULT 0,
    rejected   integer NOT NULL DEFAULT 0,
    dropped    integer NOT NULL DEFAULT 0,
    left_waitlist integer NOT NULL DEFAULT 0,
    promoted   integer NOT NULL DEFAULT 0
);
