-- Schema version 2: what the executions list filters and counts read,
-- and idempotent starts.
--
-- The current step's plugin and the creation time, as columns the
-- record decides (generated, so no writer can let them drift from it).
ALTER TABLE executions
    ADD COLUMN plugin text COLLATE "C" NOT NULL
        GENERATED ALWAYS AS (
            coalesce(record -> 'steps' -> ((record ->> 'step_index')::int) ->> 'plugin', '')
        ) STORED,
    ADD COLUMN created_ms bigint NOT NULL
        GENERATED ALWAYS AS ((record ->> 'created_ms')::bigint) STORED;

-- A page of a workflow's or a plugin's executions in one state is a range
-- of one of these; in any state, one range per state, merged (see
-- executions.rs). Ids are UUIDv7: a creation time range is an id range.
DROP INDEX executions_by_workflow;
CREATE INDEX executions_by_workflow ON executions (workflow, state, id);
CREATE INDEX executions_by_plugin ON executions (plugin, state, id);
-- Both together: without it, a page of one workflow's executions on one
-- plugin read the workflow's range and dropped the others.
CREATE INDEX executions_by_workflow_plugin ON executions (workflow, plugin, state, id);

-- Executions per workflow and state, kept by a trigger on every write of
-- an execution (whichever path writes it: a change, a removal, an
-- import), in shards like `counts`, so concurrent writers seldom wait on
-- one row. Rows are made as workflows appear; a sum of 0 is no execution.
CREATE TABLE workflow_counts (
    workflow text COLLATE "C" NOT NULL,
    state text NOT NULL,
    shard smallint NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (workflow, state, shard)
);
INSERT INTO workflow_counts (workflow, state, shard, n)
SELECT workflow, state, 0, count(*) FROM executions GROUP BY workflow, state;

CREATE FUNCTION stephost_count_workflow_states() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    -- One shard for both rows a transition moves.
    s smallint := floor(random() * 16);
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO workflow_counts AS c (workflow, state, shard, n)
        VALUES (OLD.workflow, OLD.state, s, -1)
        ON CONFLICT (workflow, state, shard) DO UPDATE SET n = c.n - 1;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        INSERT INTO workflow_counts AS c (workflow, state, shard, n)
        VALUES (NEW.workflow, NEW.state, s, 1)
        ON CONFLICT (workflow, state, shard) DO UPDATE SET n = c.n + 1;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER executions_counted AFTER INSERT OR DELETE ON executions
    FOR EACH ROW EXECUTE FUNCTION stephost_count_workflow_states();
CREATE TRIGGER executions_recounted AFTER UPDATE ON executions
    FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.workflow IS DISTINCT FROM NEW.workflow)
    EXECUTE FUNCTION stephost_count_workflow_states();

-- Starts made with an Idempotency-Key (the key scoped by token), written
-- with the execution they started and removed with it.
CREATE TABLE idempotent_starts (
    key text COLLATE "C" PRIMARY KEY,
    execution_id text COLLATE "C" NOT NULL,
    record json NOT NULL
);
