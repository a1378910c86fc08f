-- Claims walk the hosts with pending jobs and take each one's oldest due
-- jobs: one index probe per host, however long the queue (the claim used to
-- rank every due job, and no longer reads `delivery_jobs_due`). The same
-- index finds the next host with pending jobs (a loose index scan).
CREATE INDEX delivery_jobs_pending_host ON delivery_jobs (host, next_attempt_at, job_id)
    WHERE state = 'pending';
DROP INDEX delivery_jobs_due;

-- A claim changes no indexed column, so with room left on the page it is a
-- heap-only update: no new index entries for the jobs it leases.
ALTER TABLE delivery_jobs SET (fillfactor = 60);

-- Pending jobs by host are found through the index above; the one on
-- (host, state) cost two index entries per delivered job for lookups of
-- delivered or dead jobs by host, which only admins make.
DROP INDEX delivery_jobs_host;
