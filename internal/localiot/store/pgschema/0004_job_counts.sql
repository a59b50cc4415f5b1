-- A job's execution counters (jobProcessDetails) and the time a device last changed one,
-- kept apart from the job so that device requests served at once (by several replicas, or by
-- one replica's concurrent transactions) never write one hot row: each database connection
-- adds to its own row (shard = its server process's pid, which no two open connections share),
-- and a job's counts are the sum of its rows. Shard 0 holds the counts from before this table.
CREATE TABLE job_counts (
    job_id          text COLLATE "C" NOT NULL,
    shard           integer NOT NULL,
    canceled        bigint NOT NULL DEFAULT 0,
    succeeded       bigint NOT NULL DEFAULT 0,
    failed          bigint NOT NULL DEFAULT 0,
    rejected        bigint NOT NULL DEFAULT 0,
    queued          bigint NOT NULL DEFAULT 0,
    in_progress     bigint NOT NULL DEFAULT 0,
    removed         bigint NOT NULL DEFAULT 0,
    timed_out       bigint NOT NULL DEFAULT 0,
    last_updated_ns bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, shard)
);
INSERT INTO job_counts (job_id, shard, canceled, succeeded, failed, rejected, queued, in_progress, removed, timed_out)
SELECT id, 0,
    coalesce((body->'jobProcessDetails'->>'numberOfCanceledThings')::bigint, 0),
    coalesce((body->'jobProcessDetails'->>'numberOfSucceededThings')::bigint, 0),
    coalesce((body->'jobProcessDetails'->>'numberOfFailedThings')::bigint, 0),
    coalesce((body->'jobProcessDetails'->>'numberOfRejectedThings')::bigint, 0),
    coalesce((body->'jobProcessDetails'->>'numberOfQueuedThings')::bigint, 0),
    coalesce((body->'jobProcessDetails'->>'numberOfInProgressThings')::bigint, 0),
    coalesce((body->'jobProcessDetails'->>'numberOfRemovedThings')::bigint, 0),
    coalesce((body->'jobProcessDetails'->>'numberOfTimedOutThings')::bigint, 0)
FROM jobs;
