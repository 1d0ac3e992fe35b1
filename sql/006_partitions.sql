-- The request queue's partition count, fixed when the deployment is created (`courseflow migrate`
-- records PARTITIONS): a course's requests stay in one partition for the deployment's life.
CREATE TABLE queue_partitions (
    singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    partitions integer     NOT NULL CHECK (partitions BETWEEN 1 AND 1024),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Which worker decides which partition's stream, until when: a lease it renews while alive. A lease
-- is for throughput only; the course row lock stays what keeps decisions correct if two overlap.
CREATE TABLE partition_leases (
    partition  integer     PRIMARY KEY CHECK (partition >= 0),
    owner      text,
    expires_at timestamptz NOT NULL DEFAULT '-infinity'
);

-- Live workers, each renewing its row: the partitions are shared out among these.
CREATE TABLE workers (
    name       text        PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
