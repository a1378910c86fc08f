//! Appending events copied from another log (`chorus events migrate`),
//! keeping what an ordinary append would decide afresh: ids, schema
//! versions and the times the first log recorded them.

use chorus_domain::{
    AppendOutcome, EventStoreError, ExpectedVersion, NewEvent, RecordedEvent, StreamId,
};
use serde_json::value::RawValue;
use sqlx::Connection as _;

use crate::PgEventStore;
use crate::store::{Batch, appended, backend, conflict, existing, validate};

const IMPORT: &str = "
INSERT INTO events (transaction_id, event_id, stream_id, stream_version,
                    event_type, schema_version, payload, metadata, recorded_at)
SELECT pg_current_xact_id()::text::bigint, u.id, $1, $2 + u.ord,
       u.t, u.v, u.p::jsonb, u.m::jsonb, u.r
FROM unnest($3::uuid[], $4::text[], $5::integer[], $6::text[], $7::text[], $8::timestamptz[])
     WITH ORDINALITY AS u (id, t, v, p, m, r, ord)
ORDER BY u.ord
RETURNING event_id, stream_version, transaction_id, seq";

impl PgEventStore {
    /// Appends `events`, read from another log, to `stream` if it matches
    /// `expected`, keeping their ids, types, schema versions, payloads,
    /// metadata and recorded times. Idempotent as [`chorus_domain::EventStore::append`]
    /// is: if every id is stored already, nothing is written and the
    /// original positions are returned; if only some are, nothing is written.
    pub async fn import(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[RecordedEvent],
    ) -> Result<AppendOutcome, EventStoreError> {
        let new = events
            .iter()
            .map(|e| {
                let payload =
                    RawValue::from_string(e.payload.get().to_owned()).map_err(|error| {
                        EventStoreError::InvalidAppend(format!("event {}: payload: {error}", e.id))
                    })?;
                Ok(NewEvent {
                    id: e.id,
                    event_type: e.event_type.clone(),
                    schema_version: e.schema_version,
                    payload,
                    metadata: e.metadata.clone(),
                })
            })
            .collect::<Result<Vec<_>, EventStoreError>>()?;
        validate(&new)?;
        let batch = Batch::new(&new)?;
        let recorded: Vec<_> = events.iter().map(|e| e.recorded_at).collect();
        let mut conn = self.pool().acquire().await.map_err(backend)?;
        let mut tx = conn.begin().await.map_err(backend)?;
        // Queued behind other writers in transactions, as `append_with` is.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
            .bind(stream.as_str())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        if let Some(outcome) = existing(&mut *tx, &new).await? {
            return Ok(outcome);
        }
        let head: Option<i64> =
            sqlx::query_scalar("SELECT max(stream_version) FROM events WHERE stream_id = $1")
                .bind(stream.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(backend)?;
        let head = head.map_or(0, i64::unsigned_abs);
        let holds = match expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => head == 0,
            ExpectedVersion::StreamExists => head > 0,
            ExpectedVersion::Exact(v) => head == v,
        };
        if !holds {
            return Err(conflict(&mut *tx, stream, expected).await);
        }
        let rows: Vec<(uuid::Uuid, i64, i64, i64)> = sqlx::query_as(IMPORT)
            .bind(stream.as_str())
            .bind(i64::try_from(head).unwrap_or(i64::MAX))
            .bind(&batch.ids)
            .bind(&batch.types)
            .bind(&batch.schema_versions)
            .bind(&batch.payloads)
            .bind(&batch.metadata)
            .bind(&recorded)
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        self.appended();
        Ok(appended(&new, rows))
    }
}
