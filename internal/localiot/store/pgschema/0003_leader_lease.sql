-- The lease of the replica that serves device requests (the leader): held while renewed, and
-- free for another replica once expires_at has passed on the database's clock. term counts
-- the leaders: each new holder gets the next one.
CREATE TABLE leader_lease (
    id integer PRIMARY KEY CHECK (id = 1),
    holder text NOT NULL,
    term bigint NOT NULL,
    expires_at timestamptz NOT NULL
);
