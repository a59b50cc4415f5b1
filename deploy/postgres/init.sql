-- Runs once, when the PostgreSQL volume is new (the postgres image's docker-entrypoint-initdb.d):
-- the jobs service's database. Its schema is the jobs service's own (versioned migrations it
-- applies at start); Temporal's databases are created by the temporal-schema step.
CREATE DATABASE otaflow_jobs;
