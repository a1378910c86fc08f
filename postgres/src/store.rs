//! The Postgres event store.
//!
//! Appends go through the `chorus_append` SQL function (one round trip per
//! batch). Reads of the whole log only return events below the visibility
//! horizon (see the migration that creates `events`), so a reader never skips
//! an event that commits late. Subscribers are woken by in-process signals
//! after local appends, by `LISTEN/NOTIFY` for appends from other processes,
//! and by a fallback poll.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chorus_domain::{
    AppendOutcome, AppendedEvent, EventId, EventStore, EventStoreError, EventStream,
    ExpectedVersion, Metadata, MigrationStore, NewEvent, Payload, Position, RecordedEvent,
    StreamId,
};
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgListener, PgPool};
use sqlx::{PgConnection, PgExecutor};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::checkpoints::{from_db, to_db};
use crate::narrowed::{Direction, Narrowed};

/// The Postgres channel on which appends are announced to other processes.
pub const NOTIFY_CHANNEL: &str = "chorus_events";

/// The shortest time between two announcements of appends to other
/// processes: what other processes' subscribers may lag behind this one's,
/// and what keeps notifications a small share of the transactions.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_millis(10);

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
    /// How many recent events the store keeps in memory for subscriptions
    /// at the end of the log (read once for all of them).
    pub tail_capacity: usize,
    /// With an upstream log of record: how long an append waits for the
    /// mirror to copy its events into Postgres before it fails.
    pub mirror_wait: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            page_size: 1000,
            poll_interval: Duration::from_secs(1),
            max_horizon_backoff: Duration::from_millis(5),
            tail_capacity: 10_000,
            mirror_wait: Duration::from_secs(30),
        }
    }
}

/// The default event store. Cheap to clone; clones share their wake-up machinery.
#[derive(Clone, Debug)]
pub struct PgEventStore {
    inner: Arc<Inner>,
}

/// What became of one event of [`PgEventStore::append_new_streams`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewStream {
    /// Appended now, as version 1 of its stream.
    Appended,
    /// An event with the same id was already in the log; nothing was written.
    Repeated,
    /// The stream already had other events; nothing was written.
    Taken,
}

impl NewStream {
    /// Whether the event is in the log now (appended now or before).
    pub fn is_stored(self) -> bool {
        self != Self::Taken
    }
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
    /// The last event readers can see (below the horizon), kept by one
    /// watcher task for every subscription of this store, so that idle
    /// subscriptions do not each poll the database.
    head: watch::Sender<Position>,
    /// The most recent events, read by the head watcher: subscriptions at the
    /// end of the log take them from here instead of each reading them.
    tail: Arc<Mutex<Tail>>,
    /// The log of record, when Postgres only mirrors it (see
    /// [`PgEventStore::with_upstream`]).
    upstream: Option<Upstream>,
    tasks: Vec<JoinHandle<()>>,
}

/// The log of record of a store in upstream mode.
#[derive(Clone)]
pub(crate) struct Upstream(pub(crate) Arc<dyn MigrationStore>);

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Upstream")
    }
}

/// A run of the most recent events of the log, contiguous and in log order:
/// every event after `base` up to the last one held.
#[derive(Debug, Default)]
struct Tail {
    /// `None` until the watcher first reads the head.
    base: Option<Position>,
    events: VecDeque<Arc<RecordedEvent>>,
}

impl Tail {
    /// The position up to which the tail holds every event.
    fn last(&self) -> Option<Position> {
        self.events.back().map(|e| e.position).or(self.base)
    }

    /// Up to `limit` events after `after`, or `None` when the tail does not
    /// reach back that far (the reader must go to the database).
    fn after(&self, after: Position, limit: usize) -> Option<Vec<Arc<RecordedEvent>>> {
        if after < self.base? {
            return None;
        }
        let start = self.events.partition_point(|e| e.position <= after);
        Some(self.events.range(start..).take(limit).cloned().collect())
    }

    /// Adds events read after [`Tail::last`], dropping the oldest beyond `capacity`.
    fn extend(&mut self, page: Vec<RecordedEvent>, capacity: usize) {
        self.events.extend(page.into_iter().map(Arc::new));
        while self.events.len() > capacity {
            if let Some(dropped) = self.events.pop_front() {
                self.base = Some(dropped.position);
            }
        }
    }
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
        Self::build(pool, options, None)
    }

    /// A store whose log of record is `upstream` (a KurrentDB server,
    /// another Postgres database): every append goes there first, and
    /// returns once the mirror ([`crate::mirror::Mirror`], running in this
    /// process or another on the same database) has copied its events into
    /// this database's `events` table, with their positions here. Reads
    /// and subscriptions read the Postgres copy.
    pub fn with_upstream(pool: PgPool, upstream: Arc<dyn MigrationStore>) -> Self {
        Self::with_upstream_options(pool, upstream, StoreOptions::default())
    }

    /// [`PgEventStore::with_upstream`] with the given options.
    pub fn with_upstream_options(
        pool: PgPool,
        upstream: Arc<dyn MigrationStore>,
        options: StoreOptions,
    ) -> Self {
        Self::build(pool, options, Some(Upstream(upstream)))
    }

    fn build(pool: PgPool, options: StoreOptions, upstream: Option<Upstream>) -> Self {
        let (wake, _) = watch::channel(0);
        let announce = Arc::new(Notify::new());
        // Our own announcements come back through LISTEN; the instance id lets
        // the listener ignore them (local subscribers were already woken).
        let instance = Uuid::new_v4().to_string();
        let (head, _) = watch::channel(Position::START);
        let tail = Arc::new(Mutex::new(Tail::default()));
        let tasks = vec![
            tokio::spawn(listen(pool.clone(), wake.clone(), instance.clone())),
            tokio::spawn(announce_appends(pool.clone(), announce.clone(), instance)),
            tokio::spawn(watch_head(
                pool.clone(),
                wake.clone(),
                head.clone(),
                tail.clone(),
                options.clone(),
            )),
        ];
        Self {
            inner: Arc::new(Inner {
                pool,
                options,
                wake,
                announce,
                head,
                tail,
                upstream,
                tasks,
            }),
        }
    }

    /// The same store (its subscribers woken by its appends, and the other
    /// way round) appending through `pool`: e.g. connections that commit
    /// without waiting for the disk, for writers whose events can be derived
    /// again from durable ones.
    pub fn with_pool(&self, pool: PgPool) -> Self {
        self.sharing(pool, self.inner.upstream.clone())
    }

    /// The same store writing to Postgres only, even in upstream mode: what
    /// the mirror imports with.
    pub fn local(&self) -> Self {
        self.sharing(self.inner.pool.clone(), None)
    }

    /// The log of record, in upstream mode.
    pub fn upstream(&self) -> Option<&Arc<dyn MigrationStore>> {
        self.inner.upstream.as_ref().map(|u| &u.0)
    }

    fn sharing(&self, pool: PgPool, upstream: Option<Upstream>) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                options: self.inner.options.clone(),
                wake: self.inner.wake.clone(),
                announce: self.inner.announce.clone(),
                head: self.inner.head.clone(),
                tail: self.inner.tail.clone(),
                upstream,
                // The background tasks stay with the original.
                tasks: Vec::new(),
            }),
        }
    }

    /// The pool the store uses.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The events with these ids, in log order (those not in the log are
    /// left out).
    pub async fn read_ids(
        pool: &PgPool,
        ids: &[Uuid],
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(concat!(
            "SELECT ",
            event_columns!(),
            " FROM public.events WHERE event_id = ANY($1) ORDER BY transaction_id, seq"
        ))
        .bind(ids)
        .fetch_all(pool)
        .await
        .map_err(backend)?;
        rows.into_iter().map(into_event).collect()
    }

    /// Like [`EventStore::read_all`], through any pool on the store's
    /// database: up to `limit` events strictly after `after`, in log order,
    /// all below the visibility horizon, narrowed by `read`. Readers that
    /// only care about a few types and fields (a rebuild of a read model)
    /// need not carry the rest over the wire.
    pub async fn read_after(
        pool: &PgPool,
        after: Position,
        read: &Narrowed,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        read_narrowed(pool, read, after, Direction::After, limit).await
    }

    /// Up to `limit` events strictly before `before`, the newest first, all
    /// below the visibility horizon, narrowed by `read`: the end of the log
    /// (`before` = [`Position::END`]) or pages backwards through it.
    pub async fn read_before(
        pool: &PgPool,
        before: Position,
        read: &Narrowed,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        read_narrowed(pool, read, before, Direction::Before, limit).await
    }

    /// How Postgres runs a page of [`PgEventStore::read_after`] (or, with
    /// `newest_first`, of [`PgEventStore::read_before`]), as
    /// `EXPLAIN ANALYZE` prints it: to see which index serves a filter.
    pub async fn explain(
        pool: &PgPool,
        bound: Position,
        read: &Narrowed,
        newest_first: bool,
        limit: usize,
    ) -> Result<Vec<String>, EventStoreError> {
        let direction = if newest_first {
            Direction::Before
        } else {
            Direction::After
        };
        read.query("EXPLAIN (ANALYZE, COSTS OFF) ", bound, direction, limit)
            .build_query_scalar()
            .fetch_all(pool)
            .await
            .map_err(backend)
    }

    /// How many events [`PgEventStore::read_after`] would read after
    /// `after` (for progress bars).
    pub async fn count_after(
        pool: &PgPool,
        after: Position,
        read: &Narrowed,
    ) -> Result<u64, EventStoreError> {
        let mut query = sqlx::QueryBuilder::new("SELECT count(*) FROM public.events WHERE ");
        read.conditions(&mut query, after, Direction::Count);
        let count: i64 = query
            .build_query_scalar()
            .fetch_one(pool)
            .await
            .map_err(backend)?;
        Ok(count.unsigned_abs())
    }

    /// Appends inside the caller's transaction. The events become visible
    /// when that transaction commits; call [`PgEventStore::appended`] then, so
    /// subscribers wake at once. Writers in transactions queue behind each
    /// other (a per-stream advisory lock), and an append that loses a race
    /// with a single-statement [`EventStore::append`] is rolled back to a
    /// savepoint and, for `Any`, tried again, so `Any` never conflicts and
    /// the caller's transaction stays usable after a version conflict. After
    /// any other error, roll the transaction back.
    ///
    /// Unlike [`EventStore::append`], this cannot promise that the stream's
    /// versions follow log order: the transaction's id may have been taken
    /// before it read the stream (by an earlier write, or by an attempt
    /// rolled back to the savepoint), so a version appended here may stand
    /// before an earlier version in the log.
    pub async fn append_with(
        conn: &mut PgConnection,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendOutcome, EventStoreError> {
        validate(events)?;
        let batch = Batch::new(events)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
            .bind(stream.as_str())
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
        loop {
            if let Some(outcome) = existing(&mut *conn, events).await? {
                return Ok(outcome);
            }
            execute(&mut *conn, "SAVEPOINT chorus_append").await?;
            let result = batch.insert(&mut *conn, stream, expected).await;
            if result.is_err() {
                execute(&mut *conn, "ROLLBACK TO SAVEPOINT chorus_append").await?;
            }
            execute(&mut *conn, "RELEASE SAVEPOINT chorus_append").await?;
            match result {
                Ok(rows) if rows.is_empty() => {
                    return Err(conflict(&mut *conn, stream, expected).await);
                }
                Ok(rows) => return Ok(appended(events, rows)),
                // A concurrent append of the same ids: `existing` finds them.
                Err(error) if violated(&error) == Some(EVENT_ID_KEY) => {}
                // A concurrent single-statement append took the version.
                Err(error) if violated(&error) == Some(STREAM_VERSION_KEY) => {
                    if expected != ExpectedVersion::Any {
                        return Err(conflict(&mut *conn, stream, expected).await);
                    }
                }
                Err(error) => return Err(backend(error)),
            }
        }
    }

    /// [`PgEventStore::append_with`] for a store that may have an upstream
    /// log of record. Without one, the events are appended in `conn`'s
    /// transaction. With one, they cannot be: they are appended to the
    /// upstream first (which decides the expected version and idempotence)
    /// and this returns once the mirror has copied them, before the caller
    /// writes its own rows and commits. If the caller's transaction then
    /// fails, the events stay in the log of record without those rows.
    pub async fn append_in(
        &self,
        conn: &mut PgConnection,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendOutcome, EventStoreError> {
        match &self.inner.upstream {
            None => Self::append_with(conn, stream, expected, events).await,
            Some(upstream) => {
                validate(events)?;
                self.append_upstream(upstream.0.as_ref(), stream, expected, events.to_vec())
                    .await
            }
        }
    }

    /// Appends one event to each of many streams that must not exist yet,
    /// in one statement and one transaction. Returns, in order, what became
    /// of each event: appended now, already in the log (same id), or not
    /// written because its stream already had events.
    pub async fn append_new_streams(
        &self,
        items: &[(StreamId, NewEvent)],
    ) -> Result<Vec<NewStream>, EventStoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let events: Vec<NewEvent> = items.iter().map(|(_, e)| e.clone()).collect();
        validate(&events)?;
        if let Some(upstream) = &self.inner.upstream {
            return self
                .append_new_streams_upstream(upstream.0.as_ref(), items)
                .await;
        }
        let batch = Batch::new(&events)?;
        let streams: Vec<&str> = items.iter().map(|(s, _)| s.as_str()).collect();
        // A stream that exists has a version 1 already: the row is skipped
        // (`ON CONFLICT DO NOTHING`), as is an event whose id is stored.
        let inserted: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO events (transaction_id, event_id, stream_id, stream_version,
                                 event_type, schema_version, payload, metadata)
             SELECT (SELECT pg_current_xact_id()::text::bigint), u.id, u.s, 1, u.t, u.v,
                    u.p::jsonb, u.m::jsonb
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::integer[], $5::text[], $6::text[])
                  WITH ORDINALITY AS u (id, s, t, v, p, m, ord)
             ORDER BY u.ord
             ON CONFLICT DO NOTHING
             RETURNING event_id",
        )
        .bind(&batch.ids)
        .bind(&streams)
        .bind(&batch.types)
        .bind(&batch.schema_versions)
        .bind(&batch.payloads)
        .bind(&batch.metadata)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(backend)?;
        if !inserted.is_empty() {
            self.appended();
        }
        let inserted: HashSet<Uuid> = inserted.into_iter().collect();
        let missing: Vec<Uuid> = batch
            .ids
            .iter()
            .filter(|id| !inserted.contains(id))
            .copied()
            .collect();
        // Of those skipped, the ones already stored (a repeat) count as in.
        let stored: HashSet<Uuid> = if missing.is_empty() {
            HashSet::new()
        } else {
            sqlx::query_scalar::<_, Uuid>("SELECT event_id FROM events WHERE event_id = ANY($1)")
                .bind(&missing)
                .fetch_all(&self.inner.pool)
                .await
                .map_err(backend)?
                .into_iter()
                .collect()
        };
        Ok(batch
            .ids
            .iter()
            .map(|id| {
                if inserted.contains(id) {
                    NewStream::Appended
                } else if stored.contains(id) {
                    NewStream::Repeated
                } else {
                    NewStream::Taken
                }
            })
            .collect())
    }

    /// Replaces the payload and metadata of events held in memory for
    /// subscriptions, after the erasure rewrote them in the database (the
    /// only rewrite of stored events), so that no subscriber of this
    /// process is handed the erased content afterwards.
    pub fn redacted(&self, events: &HashMap<EventId, (Payload, Metadata)>) {
        if events.is_empty() {
            return;
        }
        let Ok(mut tail) = self.inner.tail.lock() else {
            return;
        };
        for cached in tail.events.iter_mut() {
            if let Some((payload, metadata)) = events.get(&cached.id) {
                let mut event = RecordedEvent::clone(cached);
                event.payload = payload.clone();
                event.metadata = metadata.clone();
                *cached = Arc::new(event);
            }
        }
    }

    pub(crate) fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    pub(crate) fn woken(&self) -> watch::Receiver<u64> {
        self.inner.wake.subscribe()
    }

    /// Wakes subscribers after events were committed outside [`EventStore::append`].
    pub fn appended(&self) {
        self.inner.wake.send_modify(|n| *n = n.wrapping_add(1));
        self.inner.announce.notify_one();
    }

    async fn run_subscription(
        self,
        mut after: Position,
        out: mpsc::Sender<Result<RecordedEvent, EventStoreError>>,
    ) {
        let options = &self.inner.options;
        let mut head = self.inner.head.subscribe();
        // The head watcher idles while no one listens: have it look now.
        self.inner.wake.send_modify(|n| *n = n.wrapping_add(1));
        let mut failures = 0u32;
        loop {
            // From the tail when it holds what comes next; from the database
            // when the reader is further back, or the tail fell behind the head
            // (it could not be read: the database then says why).
            let cached = self
                .inner
                .tail
                .lock()
                .ok()
                .and_then(|tail| tail.after(after, options.page_size))
                .filter(|page| !page.is_empty() || *head.borrow() <= after);
            let from_tail = cached.is_some();
            let page = match cached {
                Some(page) => Ok(page.iter().map(|e| RecordedEvent::clone(e)).collect()),
                None => self.read_all(after, options.page_size).await,
            };
            let page: Vec<RecordedEvent> = match page {
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
            let any = !page.is_empty();
            for event in page {
                after = event.position;
                if out.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            // More may be waiting: a full page, or a tail that grew while
            // these were being sent.
            if full || (from_tail && any) {
                continue;
            }
            // Wait until the head watcher sees readable events past ours (or
            // the fallback poll, should the watcher itself be stuck).
            tokio::select! {
                moved = head.wait_for(|h| *h > after) => {
                    if moved.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep(options.poll_interval) => {}
                () = out.closed() => return,
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
        if let Some(upstream) = &self.inner.upstream {
            return self
                .append_upstream(upstream.0.as_ref(), stream, expected, events)
                .await;
        }
        let batch = Batch::new(&events)?;
        let pool = &self.inner.pool;
        // One statement, checked by the unique indexes. Only a writer racing
        // us on the same stream makes `Any` try again.
        // Every attempt is a statement of its own, in a transaction of its
        // own: that is what keeps a stream's versions in log order (see
        // `APPEND`). A writer racing others on a hot stream backs off a
        // little, more each time; each lost race means another won.
        for attempt in 0..HOT_STREAM_ATTEMPTS {
            match batch.insert(pool, stream, expected).await {
                Ok(rows) if rows.is_empty() => {
                    // The expected version did not match, or this is a retry
                    // of an append that already happened.
                    if let Some(outcome) = existing(pool, &events).await? {
                        return Ok(outcome);
                    }
                    return Err(conflict(pool, stream, expected).await);
                }
                Ok(rows) => {
                    self.appended();
                    return Ok(appended(&events, rows));
                }
                Err(error) => match violated(&error) {
                    Some(EVENT_ID_KEY) => {
                        if let Some(outcome) = existing(pool, &events).await? {
                            return Ok(outcome);
                        }
                    }
                    Some(STREAM_VERSION_KEY) if expected != ExpectedVersion::Any => {
                        return Err(conflict(pool, stream, expected).await);
                    }
                    Some(STREAM_VERSION_KEY) => {
                        if attempt >= 2 {
                            tokio::time::sleep(backoff(attempt)).await;
                        }
                    }
                    _ => return Err(backend(error)),
                },
            }
        }
        Err(EventStoreError::Backend(
            format!(
                "{stream}: lost the race to append {HOT_STREAM_ATTEMPTS} times in a row; try again"
            )
            .into(),
        ))
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
        rows.into_iter().map(into_event).collect()
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<u64>, EventStoreError> {
        let version: Option<i64> =
            sqlx::query_scalar("SELECT max(stream_version) FROM events WHERE stream_id = $1")
                .bind(stream.as_str())
                .fetch_one(&self.inner.pool)
                .await
                .map_err(backend)?;
        Ok(version.map(i64::unsigned_abs))
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        read_page(&self.inner.pool, after, limit).await
    }

    fn subscribe_all(&self, after: Position) -> EventStream {
        let (tx, mut rx) = mpsc::channel(self.inner.options.page_size.max(1));
        tokio::spawn(self.clone().run_subscription(after, tx));
        Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}

/// Up to `limit` events from `bound` in `direction`, narrowed by `read`.
async fn read_narrowed(
    pool: &PgPool,
    read: &Narrowed,
    bound: Position,
    direction: Direction,
    limit: usize,
) -> Result<Vec<RecordedEvent>, EventStoreError> {
    let rows: Vec<EventRow> = read
        .query("", bound, direction, limit)
        .build_query_as()
        .fetch_all(pool)
        .await
        .map_err(backend)?;
    rows.into_iter().map(into_event).collect()
}

macro_rules! event_columns {
    () => {
        "transaction_id, seq, event_id, stream_id, stream_version, event_type, schema_version, \
         payload::text, metadata::text, recorded_at"
    };
}
use event_columns;

/// The columns of [`event_columns!`], in order (decoded by position: by name
/// costs a lookup per column per row, which shows when reading the log).
type EventRow = (
    i64,
    i64,
    Uuid,
    String,
    i64,
    String,
    i32,
    String,
    String,
    DateTime<Utc>,
);

fn into_event(row: EventRow) -> Result<RecordedEvent, EventStoreError> {
    let (
        transaction_id,
        seq,
        event_id,
        stream_id,
        stream_version,
        event_type,
        schema_version,
        payload,
        metadata,
        recorded_at,
    ) = row;
    let position = from_db(transaction_id, seq);
    let corrupt = |reason: String| EventStoreError::Corrupt { position, reason };
    Ok(RecordedEvent {
        id: EventId(event_id),
        stream_id: StreamId::new(stream_id).map_err(|e| corrupt(e.to_string()))?,
        stream_version: stream_version.unsigned_abs(),
        event_type,
        schema_version: schema_version.unsigned_abs(),
        // The column is jsonb: Postgres has already checked it is JSON.
        payload: Payload::from_store(payload),
        metadata: serde_json::from_str::<Metadata>(&metadata)
            .map_err(|e| corrupt(format!("metadata: {e}")))?,
        recorded_at,
        position,
    })
}

pub(crate) fn validate(events: &[NewEvent]) -> Result<(), EventStoreError> {
    chorus_domain::validate_append(events, MAX_BATCH)
}

const EVENT_ID_KEY: &str = "events_event_id_key";

/// How many times an `Any` append to a hot stream is tried before it gives up.
const HOT_STREAM_ATTEMPTS: u32 = 100;

/// A growing, jittered pause between attempts on a hot stream (up to ~10 ms).
fn backoff(attempt: u32) -> Duration {
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() % 1000);
    Duration::from_micros(u64::from(attempt.min(10)) * 1000 + u64::from(jitter))
}
const STREAM_VERSION_KEY: &str = "events_stream_version_key";

/// Appends in one statement: the stream's head version is read, the expected
/// version checked against it, and the rows inserted after it.
///
/// `events_stream_version_key` arbitrates between writers of one stream: a
/// writer whose head is stale (another append committed after its snapshot)
/// fails on it, and an `Any` append is retried. No lock is needed for the
/// order either: an append's transaction id is assigned after its snapshot,
/// so a writer that saw a version committed has a later transaction id than
/// the writer of that version, and a stream's versions ascend with positions.
/// (Inside a caller's transaction, [`PgEventStore::append_with`] takes a
/// per-stream advisory lock first, so that long transactions queue instead of
/// failing each other.) A repeated event id fails on `events_event_id_key`.
/// The expected-version check of an append: `$2` is -1 (any), -2 (no
/// stream), -3 (stream exists) or the exact version.
macro_rules! expected_version_holds {
    () => {
        "WHERE CASE $2::bigint
          WHEN -1 THEN true
          WHEN -2 THEN head.version = 0
          WHEN -3 THEN head.version > 0
          ELSE head.version = $2::bigint
      END
"
    };
}

const APPEND: &str = concat!(
    "
WITH head AS (
    -- A scalar subquery, so that `max` is one probe of the end of the
    -- stream's index (a join would read the whole stream).
    SELECT coalesce((SELECT max(stream_version) FROM events WHERE stream_id = $1), 0) AS version
)
INSERT INTO events (transaction_id, event_id, stream_id, stream_version,
                    event_type, schema_version, payload, metadata)
SELECT (SELECT pg_current_xact_id()::text::bigint), u.id, $1, head.version + u.ord,
       u.t, u.v, u.p::jsonb, u.m::jsonb
FROM head,
     unnest($3::uuid[], $4::text[], $5::integer[], $6::text[], $7::text[])
         WITH ORDINALITY AS u (id, t, v, p, m, ord)
",
    expected_version_holds!(),
    "ORDER BY u.ord
RETURNING event_id, stream_version, transaction_id, seq"
);

/// [`APPEND`] for the commonest case, one event: no arrays to unnest and no
/// sort, which a single-event append from many writers is bound by.
const APPEND_ONE: &str = concat!(
    "
INSERT INTO events (transaction_id, event_id, stream_id, stream_version,
                    event_type, schema_version, payload, metadata)
SELECT pg_current_xact_id()::text::bigint, $3, $1, head.version + 1,
       $4, $5, $6::jsonb, $7::jsonb
FROM (SELECT coalesce(max(stream_version), 0) AS version
      FROM events WHERE stream_id = $1) AS head
",
    expected_version_holds!(),
    "RETURNING event_id, stream_version, transaction_id, seq"
);

/// The columns of an append, ready to bind.
pub(crate) struct Batch<'a> {
    pub(crate) ids: Vec<Uuid>,
    pub(crate) types: Vec<&'a str>,
    pub(crate) schema_versions: Vec<i32>,
    pub(crate) payloads: Vec<&'a str>,
    pub(crate) metadata: Vec<String>,
}

impl<'a> Batch<'a> {
    pub(crate) fn new(events: &'a [NewEvent]) -> Result<Self, EventStoreError> {
        Ok(Self {
            ids: events.iter().map(|e| e.id.0).collect(),
            types: events.iter().map(|e| e.event_type.as_str()).collect(),
            schema_versions: events
                .iter()
                .map(|e| i32::try_from(e.schema_version).unwrap_or(i32::MAX))
                .collect(),
            payloads: events.iter().map(|e| e.payload.get()).collect(),
            metadata: events
                .iter()
                .map(|e| serde_json::to_string(&e.metadata))
                .collect::<Result<_, _>>()
                .map_err(|e| EventStoreError::InvalidAppend(format!("metadata: {e}")))?,
        })
    }

    async fn insert<'e>(
        &self,
        executor: impl PgExecutor<'e>,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<Vec<(Uuid, i64, i64, i64)>, sqlx::Error> {
        let expected = match expected {
            ExpectedVersion::Any => -1,
            ExpectedVersion::NoStream => -2,
            ExpectedVersion::StreamExists => -3,
            ExpectedVersion::Exact(v) => i64::try_from(v).unwrap_or(i64::MAX),
        };
        if let ([id], [event_type], [schema_version], [payload], [metadata]) = (
            &self.ids[..],
            &self.types[..],
            &self.schema_versions[..],
            &self.payloads[..],
            &self.metadata[..],
        ) {
            return sqlx::query_as(APPEND_ONE)
                .bind(stream.as_str())
                .bind(expected)
                .bind(id)
                .bind(event_type)
                .bind(schema_version)
                .bind(payload)
                .bind(metadata)
                .fetch_all(executor)
                .await;
        }
        sqlx::query_as(APPEND)
            .bind(stream.as_str())
            .bind(expected)
            .bind(&self.ids)
            .bind(&self.types)
            .bind(&self.schema_versions)
            .bind(&self.payloads)
            .bind(&self.metadata)
            .fetch_all(executor)
            .await
    }
}

/// The outcome of a fresh append, in the order the events were given.
pub(crate) fn appended(events: &[NewEvent], rows: Vec<(Uuid, i64, i64, i64)>) -> AppendOutcome {
    outcome_from(events, rows, false)
}

fn outcome_from(
    events: &[NewEvent],
    rows: Vec<(Uuid, i64, i64, i64)>,
    deduplicated: bool,
) -> AppendOutcome {
    let by_id: HashMap<Uuid, (i64, i64, i64)> = rows
        .into_iter()
        .map(|(id, v, tx, seq)| (id, (v, tx, seq)))
        .collect();
    AppendOutcome {
        events: events
            .iter()
            .filter_map(|e| {
                by_id.get(&e.id.0).map(|&(version, tx, seq)| AppendedEvent {
                    id: e.id,
                    stream_version: version.unsigned_abs(),
                    position: from_db(tx, seq),
                })
            })
            .collect(),
        deduplicated,
    }
}

/// If the batch's ids are already stored: the original outcome when all of
/// them are, a refusal when only some are, `None` when none is.
pub(crate) async fn existing<'e>(
    executor: impl PgExecutor<'e>,
    events: &[NewEvent],
) -> Result<Option<AppendOutcome>, EventStoreError> {
    let ids: Vec<Uuid> = events.iter().map(|e| e.id.0).collect();
    let rows: Vec<(Uuid, i64, i64, i64)> = sqlx::query_as(
        "SELECT event_id, stream_version, transaction_id, seq FROM events WHERE event_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(executor)
    .await
    .map_err(backend)?;
    match rows.len() {
        0 => Ok(None),
        n if n == events.len() => Ok(Some(outcome_from(events, rows, true))),
        n => Err(EventStoreError::PartialDuplicate {
            existing: n,
            total: events.len(),
        }),
    }
}

/// The version conflict, with the stream's actual version.
pub(crate) async fn conflict<'e>(
    executor: impl PgExecutor<'e>,
    stream: &StreamId,
    expected: ExpectedVersion,
) -> EventStoreError {
    let actual: Result<Option<i64>, _> =
        sqlx::query_scalar("SELECT max(stream_version) FROM events WHERE stream_id = $1")
            .bind(stream.as_str())
            .fetch_one(executor)
            .await;
    match actual {
        Ok(actual) => EventStoreError::WrongExpectedVersion {
            stream: stream.clone(),
            expected,
            actual: actual.map(i64::unsigned_abs),
        },
        Err(error) => backend(error),
    }
}

/// The unique constraint an insert violated, if that is why it failed.
async fn execute(conn: &mut PgConnection, sql: &str) -> Result<(), EventStoreError> {
    sqlx::query(sql)
        .execute(conn)
        .await
        .map(drop)
        .map_err(backend)
}

fn violated(error: &sqlx::Error) -> Option<&str> {
    match error {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => db.constraint(),
        _ => None,
    }
}

pub(crate) fn backend(error: sqlx::Error) -> EventStoreError {
    EventStoreError::Backend(Box::new(error))
}

/// The readable head of the log and whether committed events wait behind a
/// running transaction. Both are index probes: `max` and `ORDER BY … LIMIT 1`
/// read the end of the primary key (a plain `EXISTS (… >= xmin)` would be
/// planned as a scan of the whole table, the bound being unknown at planning).
const HEAD: &str = "
WITH horizon AS (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin)
SELECT last.transaction_id, last.seq,
       coalesce((SELECT max(transaction_id) FROM events) >= horizon.xmin, false)
FROM horizon
LEFT JOIN LATERAL (
    SELECT transaction_id, seq FROM events WHERE transaction_id < horizon.xmin
    ORDER BY transaction_id DESC, seq DESC LIMIT 1
) AS last ON true";

/// Keeps `head` at the last readable event: after every wake-up (local
/// append, notification from another process), every few milliseconds while
/// events wait behind a running transaction, and at the poll interval.
async fn watch_head(
    pool: PgPool,
    wake: watch::Sender<u64>,
    head: watch::Sender<Position>,
    tail: Arc<Mutex<Tail>>,
    options: StoreOptions,
) {
    let mut wake = wake.subscribe();
    let mut backoff = Duration::from_millis(1);
    while !pool.is_closed() {
        // Seen before querying, so a wake-up during the query counts.
        wake.borrow_and_update();
        if head.receiver_count() == 0 {
            // No subscription is listening: appends cost no reads. A new
            // subscription wakes us.
            if wake.changed().await.is_err() {
                return;
            }
            continue;
        }
        let wait = match sqlx::query_as::<_, (Option<i64>, Option<i64>, bool)>(HEAD)
            .fetch_one(&pool)
            .await
        {
            Ok((major, minor, pending)) => {
                if let (Some(major), Some(minor)) = (major, minor) {
                    let readable = from_db(major, minor);
                    // The new events are read once, into the tail, before
                    // subscriptions learn that the head moved.
                    let held = match fill_tail(&pool, &tail, readable, &options).await {
                        Ok(held) => held,
                        Err(error) => {
                            // Subscriptions read the database themselves
                            // meanwhile (and meet the error, if it lasts).
                            tracing::debug!(%error, "could not read the end of the log");
                            Some(readable)
                        }
                    };
                    if let Some(held) = held {
                        head.send_if_modified(|h| {
                            let moved = held > *h;
                            if moved {
                                *h = held;
                            }
                            moved
                        });
                    }
                }
                if pending {
                    let wait = backoff;
                    backoff = (backoff * 2).min(options.max_horizon_backoff);
                    wait
                } else {
                    backoff = Duration::from_millis(1);
                    options.poll_interval
                }
            }
            Err(error) => {
                tracing::debug!(%error, "could not read the head of the log; retrying");
                Duration::from_millis(200)
            }
        };
        tokio::select! {
            _ = wake.changed() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Up to `limit` events after `after`, in log order, all below the horizon.
async fn read_page(
    pool: &PgPool,
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
    .fetch_all(pool)
    .await
    .map_err(backend)?;
    rows.into_iter().map(into_event).collect()
}

/// Reads the events up to `readable` into the tail; returns the position up
/// to which the tail then holds every event. The first time, the tail starts
/// at `readable` (subscriptions further back read the database).
async fn fill_tail(
    pool: &PgPool,
    tail: &Mutex<Tail>,
    readable: Position,
    options: &StoreOptions,
) -> Result<Option<Position>, EventStoreError> {
    let mut last = {
        let Ok(mut tail) = tail.lock() else {
            return Ok(None);
        };
        match tail.last() {
            Some(last) => last,
            None => {
                tail.base = Some(readable);
                return Ok(Some(readable));
            }
        }
    };
    while last < readable {
        let page = read_page(pool, last, options.page_size).await?;
        let Some(end) = page.last().map(|e| e.position) else {
            break;
        };
        let full = page.len() == options.page_size;
        if let Ok(mut tail) = tail.lock() {
            tail.extend(page, options.tail_capacity.max(options.page_size));
        }
        last = end;
        if !full {
            break;
        }
    }
    Ok(Some(last))
}

/// Turns notifications from other processes into wake-ups, reconnecting when
/// the connection drops (and waking everyone then, in case one was missed).
async fn listen(pool: PgPool, wake: watch::Sender<u64>, instance: String) {
    // Each background task ends quietly once its pool is closed (shutdown).
    while !pool.is_closed() {
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
                            Err(_) if pool.is_closed() => return,
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
/// which would serialise every append. Bursts coalesce into one notification,
/// at most one per [`ANNOUNCE_INTERVAL`], committed without waiting for a disk
/// flush (a lost notification costs a poll interval, never an event).
async fn announce_appends(pool: PgPool, announce: Arc<Notify>, instance: String) {
    while !pool.is_closed() {
        announce.notified().await;
        if let Err(error) =
            sqlx::query("SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(&instance)
                .execute(&pool)
                .await
        {
            tracing::debug!(%error, "could not announce appends; other processes will poll");
        }
        tokio::time::sleep(ANNOUNCE_INTERVAL).await;
    }
}
