-- 0006: a run gets its row in the run log with its first write, not when it starts, so a run
-- that finds nothing to do leaves no row (issue 11); finished runs are pruned to a retention.
--
-- The store finds a run's row by its rule and start time while the run is open: on each write
-- of the run (to insert it once) and when it finishes (to close it).
CREATE INDEX runs_open ON runs (rule, started_at) WHERE finished_at IS NULL;
