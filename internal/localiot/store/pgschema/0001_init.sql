-- otaflow jobs service, PostgreSQL schema version 1. Bodies are the same JSON records the
-- embedded (bbolt) store keeps; key columns are what the service looks records up by. Text
-- keys use the C collation, so listings come back in byte order, as they do from bbolt.
CREATE TABLE things (
    name text COLLATE "C" PRIMARY KEY,
    body jsonb NOT NULL
);
CREATE TABLE jobs (
    id   text COLLATE "C" PRIMARY KEY,
    body jsonb NOT NULL
);
-- A job's target list is read only by DescribeJob, so device operations never decode it.
CREATE TABLE job_targets (
    job_id  text COLLATE "C" PRIMARY KEY,
    targets jsonb NOT NULL
);
-- deadline_ns (Unix nanoseconds) is set while an execution is IN_PROGRESS with a deadline:
-- the timeout sweep's index.
CREATE TABLE executions (
    job_id      text COLLATE "C" NOT NULL,
    thing       text COLLATE "C" NOT NULL,
    seq         bigint NOT NULL,
    deadline_ns bigint,
    body        jsonb NOT NULL,
    PRIMARY KEY (job_id, thing)
);
CREATE INDEX executions_by_thing ON executions (thing, seq);
CREATE INDEX executions_by_deadline ON executions (deadline_ns) WHERE deadline_ns IS NOT NULL;
CREATE TABLE thing_groups (
    name text COLLATE "C" PRIMARY KEY,
    body jsonb NOT NULL
);
CREATE TABLE group_members (
    group_name text COLLATE "C" NOT NULL,
    thing      text COLLATE "C" NOT NULL,
    PRIMARY KEY (group_name, thing)
);
CREATE INDEX group_members_by_thing ON group_members (thing, group_name);
-- CONTINUOUS jobs of a group.
CREATE TABLE group_jobs (
    group_name text COLLATE "C" NOT NULL,
    job_id     text COLLATE "C" NOT NULL,
    PRIMARY KEY (group_name, job_id)
);
-- Executions waiting for their job's rate limit, in queue order.
CREATE TABLE held (
    job_id text COLLATE "C" NOT NULL,
    seq    bigint NOT NULL,
    thing  text COLLATE "C" NOT NULL,
    PRIMARY KEY (job_id, seq, thing)
);
CREATE TABLE client_tokens (
    token text COLLATE "C" PRIMARY KEY,
    body  jsonb NOT NULL
);
CREATE TABLE secrets (
    name  text COLLATE "C" PRIMARY KEY,
    value bytea NOT NULL
);
CREATE SEQUENCE thing_ids;
CREATE SEQUENCE group_ids;
CREATE SEQUENCE queue_seq;
