//! The Postgres event store.
//!
//! Appends go through the `chorus_append` SQL function (one round trip per
//! batch). Reads of the whole log only return events below the visibility
//! horizon (see the migration that creates `events`), so a reader never skips
//! an event that commits late. Subscribers are woken by in-process signals
//! after local appends, by `LISTEN/NOTIFY` for appends from other processes,
//! and by a fallback poll.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chorus_domain::{
    AppendOutcome, AppendedEvent, EventId, EventStore, EventStoreError, EventStream,
    ExpectedVersion, Metadata, NewEvent, Position, RecordedEvent, StreamId,
};
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use sqlx::postgres::{PgListener, PgPool};
use sqlx::{PgExecutor, Postgres};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::checkpoints::{from_db, to_db};

/// The Postgres channel on which appends are announced to other processes.
pub const NOTIFY_CHANNEL: &str = "chorus_events";

/// The most events one append may carry.
pub const MAX_BATCH: usize = 10_000;

/// Tuning of the store's reads and subscriptions.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Events fetched per query by subscriptions.
    pub page_size: usize,
    /// How often an idle subscription looks for new events even without a
    /// notification (for writers that cannot notify, and lost connections).
    pub poll_interval: Duration,
    /// The longest wait between re-reads while committed events sit behind a
    /// still-running transaction.
    pub max_horizon_backoff: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            page_size: 1000,
            poll_interval: Duration::from_secs(1),
            max_horizon_backoff: Duration::from_millis(50),
        }
    }
}

/// The default event store. Cheap to clone; clones share their wake-up machinery.
#[derive(Clone, Debug)]
pub struct PgEventStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    options: StoreOptions,
    /// Bumped after every local append and every notification from another
    /// process; each subscription watches it.
    wake: watch::Sender<u64>,
    /// Asks the notifier task to announce appends to other processes.
    announce: Arc<Notify>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl PgEventStore {
    /// A store on `pool` with default options. Must be called inside a Tokio
    /// runtime: it starts the tasks that listen for and announce appends.
    pub fn new(pool: PgPool) -> Self {
        Self::with_options(pool, StoreOptions::default())
    }

    /// A store on `pool` with the given options.
    pub fn with_options(pool: PgPool, options: StoreOptions) -> Self {
        let (wake, _) = watch::channel(0);
        let announce = Arc::new(Notify::new());
        // Our own announcements come back through LISTEN; the instance id lets
        // the listener ignore them (local subscribers were already woken).
        let instance = Uuid::new_v4().to_string();
        let tasks = vec![
            tokio::spawn(listen(pool.clone(), wake.clone(), instance.clone())),
            tokio::spawn(announce_appends(pool.clone(), announce.clone(), instance)),
        ];
        Self {
            inner: Arc::new(Inner {
                pool,
                options,
                wake,
                announce,
                tasks,
            }),
        }
    }

    /// The pool the store uses.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Appends inside the caller's transaction (or on any executor). The
    /// events become visible when that transaction commits; call
    /// [`PgEventStore::appended`] then, so subscribers wake at once.
    pub async fn append_with<'e>(
        executor: impl PgExecutor<'e>,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendOutcome, EventStoreError> {
        validate(events)?;
        let rows = call_append(executor, stream, expected, events)
            .await
            .map_err(append_error)?;
        outcome(stream, expected, events, rows)
    }

    /// Wakes subscribers after events were committed outside [`EventStore::append`].
    pub fn appended(&self) {
        self.inner.wake.send_modify(|n| *n = n.wrapping_add(1));
        self.inner.announce.notify_one();
    }

    /// True when committed events exist that readers cannot see yet because an
    /// older transaction is still running.
    async fn behind_horizon(&self) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM events WHERE transaction_id >=
                 (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint))",
        )
        .fetch_one(&self.inner.pool)
        .await
    }

    async fn run_subscription(
        self,
        mut after: Position,
        out: mpsc::Sender<Result<RecordedEvent, EventStoreError>>,
    ) {
        let options = &self.inner.options;
        let mut wake = self.inner.wake.subscribe();
        let mut backoff = Duration::from_millis(1);
        let mut failures = 0u32;
        loop {
            // Mark the wake-up counter seen before reading, so an append that
            // commits during the read wakes us again.
            wake.borrow_and_update();
            let page = match self.read_all(after, options.page_size).await {
                Ok(page) => {
                    failures = 0;
                    page
                }
                Err(EventStoreError::Backend(error)) => {
                    failures += 1;
                    tracing::warn!(error = %error, failures, "subscription read failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(50)))) => continue,
                        () = out.closed() => return,
                    }
                }
                Err(error) => {
                    // Unreadable stored data: report it and end, rather than skip an event.
                    let _ = out.send(Err(error)).await;
                    return;
                }
            };
            let full = page.len() == options.page_size;
            for event in page {
                after = event.position;
                if out.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            if full {
                continue;
            }
            match self.behind_horizon().await {
                Ok(true) => {
                    // Committed events wait behind a running transaction: look
                    // again soon, whether or not anything notifies us.
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = out.closed() => return,
                    }
                    backoff = (backoff * 2).min(options.max_horizon_backoff);
                }
                Ok(false) | Err(_) => {
                    backoff = Duration::from_millis(1);
                    tokio::select! {
                        _ = wake.changed() => {}
                        () = tokio::time::sleep(options.poll_interval) => {}
                        () = out.closed() => return,
                    }
                }
            }
        }
    }
}

#[async_trait]
impl EventStore for PgEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, EventStoreError> {
        validate(&events)?;
        let pool = &self.inner.pool;
        let rows = match call_append(pool, stream, expected, &events).await {
            // A concurrent append of the same ids committed first: run again,
            // which now finds them and answers as a duplicate.
            Err(e) if is_event_id_violation(&e) => {
                call_append(pool, stream, expected, &events).await
            }
            other => other,
        }
        .map_err(append_error)?;
        let outcome = outcome(stream, expected, &events, rows)?;
        if !outcome.deduplicated {
            self.appended();
        }
        Ok(outcome)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE stream_id = $1 AND stream_version >= $2
              ORDER BY stream_version LIMIT $3"
        ))
        .bind(stream.as_str())
        .bind(i64::try_from(from).unwrap_or(i64::MAX))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(backend)?;
        rows.into_iter().map(EventRow::into_event).collect()
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<u64>, EventStoreError> {
        let version: Option<i64> =
            sqlx::query_scalar("SELECT version FROM streams WHERE stream_id = $1")
                .bind(stream.as_str())
                .fetch_optional(&self.inner.pool)
                .await
                .map_err(backend)?;
        Ok(version.map(i64::unsigned_abs))
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        let (major, minor) = to_db(after);
        let rows: Vec<EventRow> = sqlx::query_as(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events
              WHERE (transaction_id, seq) > ($1, $2)
                AND transaction_id < (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint)
              ORDER BY transaction_id, seq
              LIMIT $3"
        ))
        .bind(major)
        .bind(minor)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(backend)?;
        rows.into_iter().map(EventRow::into_event).collect()
    }

    fn subscribe_all(&self, after: Position) -> EventStream {
        let (tx, mut rx) = mpsc::channel(self.inner.options.page_size.max(1));
        tokio::spawn(self.clone().run_subscription(after, tx));
        Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}

macro_rules! event_columns {
    () => {
        "transaction_id, seq, event_id, stream_id, stream_version, event_type, schema_version, \
         payload::text AS payload, metadata::text AS metadata, recorded_at"
    };
}
use event_columns;

#[derive(sqlx::FromRow)]
struct EventRow {
    transaction_id: i64,
    seq: i64,
    event_id: Uuid,
    stream_id: String,
    stream_version: i64,
    event_type: String,
    schema_version: i32,
    payload: String,
    metadata: String,
    recorded_at: DateTime<Utc>,
}

impl EventRow {
    fn into_event(self) -> Result<RecordedEvent, EventStoreError> {
        let position = from_db(self.transaction_id, self.seq);
        let corrupt = |reason: String| EventStoreError::Corrupt { position, reason };
        Ok(RecordedEvent {
            id: EventId(self.event_id),
            stream_id: StreamId::new(self.stream_id).map_err(|e| corrupt(e.to_string()))?,
            stream_version: self.stream_version.unsigned_abs(),
            event_type: self.event_type,
            schema_version: self.schema_version.unsigned_abs(),
            payload: RawValue::from_string(self.payload).map_err(|e| corrupt(e.to_string()))?,
            metadata: serde_json::from_str::<Metadata>(&self.metadata)
                .map_err(|e| corrupt(format!("metadata: {e}")))?,
            recorded_at: self.recorded_at,
            position,
        })
    }
}

#[derive(sqlx::FromRow)]
struct AppendRow {
    status: String,
    event_id: Option<Uuid>,
    stream_version: Option<i64>,
    transaction_id: Option<i64>,
    seq: Option<i64>,
}

fn validate(events: &[NewEvent]) -> Result<(), EventStoreError> {
    let invalid = |why: String| Err(EventStoreError::InvalidAppend(why));
    if events.is_empty() {
        return invalid("an append needs at least one event".into());
    }
    if events.len() > MAX_BATCH {
        return invalid(format!(
            "at most {MAX_BATCH} events per append, got {}",
            events.len()
        ));
    }
    let mut ids = HashSet::with_capacity(events.len());
    for event in events {
        if event.event_type.is_empty() {
            return invalid(format!("event {} has an empty type", event.id));
        }
        if event.schema_version == 0 {
            return invalid(format!(
                "event {} has schema version 0 (versions start at 1)",
                event.id
            ));
        }
        if !ids.insert(event.id) {
            return invalid(format!("event id {} appears twice in one append", event.id));
        }
    }
    Ok(())
}

async fn call_append<'e>(
    executor: impl PgExecutor<'e>,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> Result<Vec<AppendRow>, sqlx::Error> {
    let expected = match expected {
        ExpectedVersion::Any => -1,
        ExpectedVersion::NoStream => -2,
        ExpectedVersion::StreamExists => -3,
        ExpectedVersion::Exact(v) => i64::try_from(v).unwrap_or(i64::MAX),
    };
    let ids: Vec<Uuid> = events.iter().map(|e| e.id.0).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let versions: Vec<i32> = events
        .iter()
        .map(|e| i32::try_from(e.schema_version).unwrap_or(i32::MAX))
        .collect();
    let payloads: Vec<&str> = events.iter().map(|e| e.payload.get()).collect();
    let metadata = events
        .iter()
        .map(|e| serde_json::to_string(&e.metadata))
        .collect::<Result<Vec<String>, _>>()
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query_as::<Postgres, AppendRow>("SELECT * FROM chorus_append($1, $2, $3, $4, $5, $6, $7)")
        .bind(stream.as_str())
        .bind(expected)
        .bind(ids)
        .bind(types)
        .bind(versions)
        .bind(payloads)
        .bind(metadata)
        .fetch_all(executor)
        .await
}

fn outcome(
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[NewEvent],
    rows: Vec<AppendRow>,
) -> Result<AppendOutcome, EventStoreError> {
    if let Some(conflict) = rows.iter().find(|r| r.status == "conflict") {
        return Err(EventStoreError::WrongExpectedVersion {
            stream: stream.clone(),
            expected,
            actual: conflict.stream_version.map(i64::unsigned_abs),
        });
    }
    let deduplicated = rows.iter().any(|r| r.status == "duplicate");
    let mut appended = Vec::with_capacity(events.len());
    for event in events {
        let row = rows
            .iter()
            .find(|r| r.event_id == Some(event.id.0))
            .ok_or_else(|| {
                EventStoreError::InvalidAppend(format!("event {} was not stored", event.id))
            })?;
        appended.push(AppendedEvent {
            id: event.id,
            stream_version: row.stream_version.unwrap_or(0).unsigned_abs(),
            position: from_db(row.transaction_id.unwrap_or(0), row.seq.unwrap_or(0)),
        });
    }
    Ok(AppendOutcome {
        events: appended,
        deduplicated,
    })
}

fn is_event_id_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db)
        if db.code().as_deref() == Some("23505") && db.constraint() == Some("events_event_id_key"))
}

fn append_error(error: sqlx::Error) -> EventStoreError {
    if let sqlx::Error::Database(db) = &error
        && db.code().as_deref() == Some("CH001")
    {
        let existing = db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .and_then(|pg| pg.detail())
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        let total = db
            .message()
            .split_whitespace()
            .nth(2)
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        return EventStoreError::PartialDuplicate { existing, total };
    }
    backend(error)
}

fn backend(error: sqlx::Error) -> EventStoreError {
    EventStoreError::Backend(Box::new(error))
}

/// Turns notifications from other processes into wake-ups, reconnecting when
/// the connection drops (and waking everyone then, in case one was missed).
async fn listen(pool: PgPool, wake: watch::Sender<u64>, instance: String) {
    loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => {
                if let Err(error) = listener.listen(NOTIFY_CHANNEL).await {
                    tracing::warn!(%error, "could not LISTEN for appends");
                } else {
                    wake.send_modify(|n| *n = n.wrapping_add(1));
                    loop {
                        match listener.try_recv().await {
                            Ok(Some(notification)) => {
                                if notification.payload() != instance {
                                    wake.send_modify(|n| *n = n.wrapping_add(1));
                                }
                            }
                            // The connection was lost; sqlx reconnects, but
                            // notifications may have been missed meanwhile.
                            Ok(None) => wake.send_modify(|n| *n = n.wrapping_add(1)),
                            Err(error) => {
                                tracing::warn!(%error, "lost the LISTEN connection");
                                break;
                            }
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "could not connect to LISTEN for appends"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Announces local appends to other processes. Runs apart from the appenders
/// because a transaction that notifies takes a cluster-wide lock at commit,
/// which would serialise every append; bursts coalesce into one notification.
async fn announce_appends(pool: PgPool, announce: Arc<Notify>, instance: String) {
    loop {
        announce.notified().await;
        if let Err(error) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(NOTIFY_CHANNEL)
            .bind(&instance)
            .execute(&pool)
            .await
        {
            tracing::debug!(%error, "could not announce appends; other processes will poll");
        }
    }
}
