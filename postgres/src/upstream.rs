//! Upstream mode: the log of record is another store (a KurrentDB server,
//! another Postgres database) and this database's `events` table its local
//! mirror. Appends go to the upstream, which decides expected versions and
//! idempotence; they return once the mirror ([`crate::mirror`]) has copied
//! their events here, with their positions here, so that every position the
//! server hands out is a Postgres one and waits for read models work as
//! they do without an upstream.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chorus_domain::{
    AppendOutcome, AppendedEvent, EventId, EventStoreError, ExpectedVersion, MigrationStore,
    NewEvent, Position, RecordedEvent, StreamId,
};
use uuid::Uuid;

use crate::Narrowed;
use crate::checkpoints::from_db;
use crate::store::{NewStream, PgEventStore, backend};

#[async_trait]
impl MigrationStore for PgEventStore {
    async fn last_event(&self) -> Result<Option<RecordedEvent>, EventStoreError> {
        Ok(
            PgEventStore::read_before(self.pool(), Position::END, &Narrowed::default(), 1)
                .await?
                .pop(),
        )
    }

    async fn count_after(&self, after: Position) -> Result<Option<u64>, EventStoreError> {
        PgEventStore::count_after(self.pool(), after, &Narrowed::default())
            .await
            .map(Some)
    }

    async fn import(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[RecordedEvent],
    ) -> Result<AppendOutcome, EventStoreError> {
        PgEventStore::import(self, stream, expected, events).await
    }
}

impl PgEventStore {
    /// Appends to the upstream, then waits for the mirror.
    pub(crate) async fn append_upstream(
        &self,
        upstream: &dyn MigrationStore,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, EventStoreError> {
        let ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
        let outcome = upstream.append(stream, expected, events).await?;
        Ok(AppendOutcome {
            events: self.mirrored(&ids).await?,
            deduplicated: outcome.deduplicated,
        })
    }

    /// [`PgEventStore::append_new_streams`] through the upstream: one
    /// append per event, in the order given (so that the log keeps that
    /// order, as one statement here would), then one wait for the mirror.
    pub(crate) async fn append_new_streams_upstream(
        &self,
        upstream: &dyn MigrationStore,
        items: &[(StreamId, NewEvent)],
    ) -> Result<Vec<NewStream>, EventStoreError> {
        let mut outcomes = Vec::with_capacity(items.len());
        for (stream, event) in items {
            outcomes.push(
                match upstream
                    .append(stream, ExpectedVersion::NoStream, vec![event.clone()])
                    .await
                {
                    Ok(outcome) if outcome.deduplicated => NewStream::Repeated,
                    Ok(_) => NewStream::Appended,
                    Err(EventStoreError::WrongExpectedVersion { .. }) => NewStream::Taken,
                    Err(error) => return Err(error),
                },
            );
        }
        let stored: Vec<EventId> = items
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| outcome.is_stored())
            .map(|((_, event), _)| event.id)
            .collect();
        if !stored.is_empty() {
            self.mirrored(&stored).await?;
        }
        Ok(outcomes)
    }

    /// Waits until every one of `ids` is in this database's log (copied by
    /// the mirror of this process or of another one: either wakes this
    /// store), and returns where, in the order given.
    pub(crate) async fn mirrored(
        &self,
        ids: &[EventId],
    ) -> Result<Vec<AppendedEvent>, EventStoreError> {
        let wait = self.options().mirror_wait;
        let deadline = tokio::time::Instant::now() + wait;
        let poll = self.options().poll_interval.min(Duration::from_millis(200));
        let mut woken = self.woken();
        let keys: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
        loop {
            woken.borrow_and_update();
            let rows: Vec<(Uuid, i64, i64, i64)> = sqlx::query_as(
                "SELECT event_id, stream_version, transaction_id, seq
                 FROM events WHERE event_id = ANY($1)",
            )
            .bind(&keys)
            .fetch_all(self.pool())
            .await
            .map_err(backend)?;
            if rows.len() == ids.len() {
                let by_id: HashMap<Uuid, (i64, i64, i64)> = rows
                    .into_iter()
                    .map(|(id, version, tx, seq)| (id, (version, tx, seq)))
                    .collect();
                return Ok(ids
                    .iter()
                    .filter_map(|id| {
                        by_id.get(&id.0).map(|&(version, tx, seq)| AppendedEvent {
                            id: *id,
                            stream_version: version.unsigned_abs(),
                            position: from_db(tx, seq),
                        })
                    })
                    .collect());
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(EventStoreError::Backend(
                    format!(
                        "appended to the log of record, but the local mirror has not copied it \
                         within {} s (is a `chorus serve` process running against this database?)",
                        wait.as_secs()
                    )
                    .into(),
                ));
            }
            tokio::select! {
                _ = woken.changed() => {}
                () = tokio::time::sleep(poll.min(deadline - now)) => {}
            }
        }
    }
}
