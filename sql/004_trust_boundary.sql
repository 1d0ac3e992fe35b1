-- The priority a registrar grants a student. Intake applies it from Redis; this row and the
-- StudentPriorityChanged events are the record it is rebuilt from.
CREATE TABLE student_priorities (
    student_id bigint      PRIMARY KEY CHECK (student_id > 0),
    priority   smallint    NOT NULL CHECK (priority BETWEEN 0 AND 100),
    -- Last stream_version appended to the student's stream.
    version    integer     NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
