-- Events appended by an admin's reprocessing of inbound history carry the
-- run's id in their metadata (`reprocess`): the run finds what it appended,
-- and the side effects it holds, without a scan of the log. Only those
-- events are in the index.
CREATE INDEX events_reprocess ON events ((metadata->>'reprocess'))
    WHERE metadata ? 'reprocess';

-- What an event caused: the events interpreted from a received activity,
-- found without a scan of the log (to tell an activity whose meaning is
-- already in the log when it is interpreted again, and for audits). Only
-- events with a cause are in the index.
CREATE INDEX events_causation ON events ((metadata->>'causation_id'))
    WHERE metadata ? 'causation_id';
