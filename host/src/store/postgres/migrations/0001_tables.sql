-- Schema version 1: the tables of every store trait.
--
-- Keys are compared byte by byte (COLLATE "C"), as sled and the memory
-- store order them, whatever collation the database was created with:
-- listings and their cursors must page the same way on every backend.
-- Whole records are JSON text (see json.rs); the other columns are what
-- is compared, filtered or indexed.

CREATE TABLE executions (
    id text COLLATE "C" PRIMARY KEY,
    version bigint NOT NULL,
    state text NOT NULL,
    workflow text COLLATE "C" NOT NULL,
    updated_ms bigint NOT NULL,
    record json NOT NULL,
    -- The node driving it while it runs (the record's `owner`).
    owner text COLLATE "C"
);
-- Listings by state (recovery reads the running ones) and by workflow.
CREATE INDEX executions_by_state ON executions (state, id);
CREATE INDEX executions_by_workflow ON executions (workflow, id);
-- What retention reads: ended executions by end time (an ended
-- execution's last write is its end).
CREATE INDEX executions_ended ON executions (state, updated_ms, id)
    WHERE state IN ('completed', 'failed');

CREATE TABLE callbacks (
    correlation_id text COLLATE "C" PRIMARY KEY,
    execution_id text COLLATE "C" NOT NULL,
    version bigint NOT NULL,
    record json NOT NULL
);
CREATE INDEX callbacks_by_execution ON callbacks (execution_id);

CREATE TABLE deliveries (
    key text COLLATE "C" PRIMARY KEY,
    execution_id text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    version bigint NOT NULL,
    record json NOT NULL
);
CREATE INDEX deliveries_by_execution ON deliveries (execution_id, seq);

-- Timers by the key every store gives them (Timer::key: the due time,
-- big-endian, then the execution), and by due time for the timer loop.
-- due_ms is the due time capped at the largest bigint: a timer later
-- than that is never due anyway, and the key keeps the exact order.
-- claimed_until: the timer was handed to a node, which fires it; until
-- then no other node is given it (NULL: unclaimed).
CREATE TABLE timers (
    key bytea PRIMARY KEY,
    due_ms bigint NOT NULL,
    record json NOT NULL,
    claimed_until timestamptz
);
CREATE INDEX timers_by_due ON timers (due_ms, key);

-- Timer records that did not decode, moved aside so that the timers
-- behind them still fire; kept for an operator to inspect.
CREATE TABLE timers_quarantine (
    key bytea PRIMARY KEY,
    record json NOT NULL,
    moved_at timestamptz NOT NULL DEFAULT now()
);

-- Executions per state and the number of timers, moved by the same
-- transaction as the records they count, so reading them is no scan.
-- Each count is split over 16 shards (a transaction moves the rows of one
-- shard, chosen at random): with one row per count every transition of
-- every node would queue on the same row lock. A count is the sum of its
-- shards.
CREATE TABLE counts (
    name text NOT NULL,
    shard smallint NOT NULL,
    n bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (name, shard)
);
INSERT INTO counts (name, shard)
SELECT name, shard
FROM unnest(ARRAY['running', 'suspended', 'completed', 'failed', 'timers']) AS name,
     generate_series(0, 15) AS shard;

CREATE TABLE tokens (
    sha256 text COLLATE "C" PRIMARY KEY,
    record json NOT NULL
);

CREATE TABLE components (
    hash text COLLATE "C" PRIMARY KEY,
    bytes bytea NOT NULL
);

-- Uploaded plugins: name -> hash of the current version.
CREATE TABLE plugins (
    name text COLLATE "C" PRIMARY KEY,
    hash text COLLATE "C" NOT NULL
);

-- Every version ever uploaded under a name.
CREATE TABLE plugin_versions (
    name text COLLATE "C" NOT NULL,
    hash text COLLATE "C" NOT NULL,
    PRIMARY KEY (name, hash)
);

-- Secrets every node shares (the key callback tickets are derived from):
-- created once, by whichever node asks first.
CREATE TABLE secrets (
    name text COLLATE "C" PRIMARY KEY,
    value bytea NOT NULL
);

-- The daemons sharing this database, by the heartbeat each writes every
-- few seconds (the database's clock): the running executions of a node
-- whose heartbeat is older than the lease are taken over by another.
CREATE TABLE nodes (
    id text COLLATE "C" PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at timestamptz NOT NULL
);
