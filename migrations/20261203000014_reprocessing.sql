-- Events appended by an admin's reprocessing of inbound history carry the
-- run's id in their metadata (`reprocess`): the run finds what it appended,
-- and the side effects it holds, without a scan of the log. Only those
-- events are in the index.
CREATE INDEX events_reprocess ON events ((metadata->>'reprocess'))
    WHERE metadata ? 'reprocess';
