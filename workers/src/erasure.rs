//! The erasure: a subscriber of the log (checkpoint `erasure`) that, for
//! each deletion of a post or an actor, erases its content from the log and
//! from the tables outside the read models that hold copies of it.
//!
//! For every event it reads, it notes which posts and actors the event
//! carries the content of (`erasure_holdings`, see
//! [`chorus_domain::erasure::subjects`]). At a deletion (`PostDeleted`,
//! `RemotePostDeleted`, `RemoteActorDeleted`, `ActorDeleted`) it rewrites
//! the payloads of the events holding the deleted post (or the actor and
//! every post of it), in one transaction with its checkpoint: the log keeps
//! every event, its id, type, stream, version and position, and the
//! rewritten events are marked `redacted` in their metadata. In that
//! transaction it also redacts the delivery queue's copies of the erased
//! activities (and gives up their pending jobs), forgets a deleted
//! account's tokens, and appends a `ContentErased` that says what it did,
//! with an id derived from the deletion, so that erasing again appends
//! nothing twice. An event that arrives later with erased content (a
//! retried Create of a deleted post) is redacted as soon as it is read.
//!
//! Read models clear themselves: each projection empties its rows at the
//! deletion event, and a rebuild from the redacted log gives the same rows.
//!
//! Two tasks go with it: one destroys a deleted account's private key once
//! its Delete{Person} has been delivered (it must be signed until then),
//! and one VACUUMs the rewritten tables after erasures, so that the old
//! row versions do not wait for autovacuum (see docs/events.md for what
//! remains in WAL and backups).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chorus_domain::erasure::{
    self, ContentErased, ErasedKind, REDACTED, Redaction, erased_event_id, erased_stream,
};
use chorus_domain::{
    DomainEvent, EventId, EventStore, ExpectedVersion, Metadata, Payload, Position, RecordedEvent,
};
use chorus_postgres::PgEventStore;
use chorus_postgres::checkpoints::{self, Progress};
use chrono::Utc;
use futures::StreamExt;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// The erasure's checkpoint.
pub const SUBSCRIBER: &str = "erasure";

/// Events read per batch.
const BATCH: usize = 512;
/// The longest the checkpoint goes unwritten while there is nothing to do.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Why the pending deliveries of an erased activity were given up.
const GIVEN_UP: &str = "erased: its content was deleted";

/// The tables the erasure rewrites, VACUUMed after it (the read models
/// clear theirs at the deletion).
const VACUUMED: &str = "VACUUM events, delivery_activities, api_tokens, actors, posts, post_edits";

/// The subscribers whose tables the erasure clears: it erases a deletion
/// only once they include it (the delivery planner, whose copies of the
/// erased activities must exist to be redacted).
#[async_trait]
pub trait Upstream: Send + Sync + std::fmt::Debug {
    /// Returns once everything up to `position` is in their tables.
    async fn caught_up(&self, position: Position);
}

/// The planner wherever it runs (under its lease, in this process or
/// another), as a progress board hears it.
#[derive(Debug)]
pub struct Planned(pub chorus_postgres::Board);

#[async_trait]
impl Upstream for Planned {
    async fn caught_up(&self, position: Position) {
        let planner = [crate::delivery::plan::SUBSCRIBER];
        while !self
            .0
            .reached(&planner, position, Duration::from_secs(60))
            .await
        {
            tracing::warn!(%position, "erasure waits for delivery planning");
        }
    }
}

#[async_trait]
impl Upstream for crate::delivery::Planner {
    async fn caught_up(&self, position: Position) {
        while !self.reached(position, Duration::from_secs(60)).await {
            tracing::warn!(%position, "erasure waits for delivery planning");
        }
    }
}

/// Timings of the erasure's background tasks.
#[derive(Clone, Debug)]
pub struct ErasureOptions {
    /// How often deleted accounts' keys are checked for destruction.
    pub key_sweep_every: Duration,
    /// The shortest time between two VACUUMs after erasures.
    pub vacuum_every: Duration,
}

impl Default for ErasureOptions {
    fn default() -> Self {
        Self {
            key_sweep_every: Duration::from_secs(5),
            vacuum_every: Duration::from_secs(60),
        }
    }
}

/// The running erasure. Dropping it stops it.
#[derive(Debug)]
pub struct Erasure {
    progress: Progress,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Erasure {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Erasure {
    /// Starts erasing after the erasure's checkpoint, once `upstream` has
    /// caught up with each deletion.
    pub async fn start(
        store: PgEventStore,
        upstream: Arc<dyn Upstream>,
        options: ErasureOptions,
    ) -> Result<Self, sqlx::Error> {
        let start = checkpoints::load(store.pool(), SUBSCRIBER)
            .await?
            .unwrap_or(Position::START);
        let (progress, receiver) = Progress::starting_at(start);
        let vacuum = Arc::new(Notify::new());
        let pool = store.pool().clone();
        let tasks = vec![
            tokio::spawn(run(store, upstream, vacuum.clone(), start, progress)),
            tokio::spawn(sweep_keys(pool.clone(), options.key_sweep_every)),
            tokio::spawn(vacuum_after_erasures(pool, vacuum, options.vacuum_every)),
        ];
        Ok(Self {
            progress: receiver,
            tasks,
        })
    }

    /// Waits until everything up to `position` is erased.
    pub async fn reached(&self, position: Position, timeout: Duration) -> bool {
        self.progress.reached(position, timeout).await
    }

    /// The last position read.
    pub fn position(&self) -> Position {
        self.progress.position()
    }

    /// Its progress, to follow.
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }
}

/// A deletion read in a batch.
struct Deletion {
    event: EventId,
    position: Position,
    kind: ErasedKind,
    subject: String,
    /// The account, for a local account's deletion.
    account: Option<Uuid>,
}

/// What one batch asks of the erasure.
#[derive(Default)]
struct Work {
    /// (subject, event, its position), in log order.
    holdings: Vec<(String, EventId, Position)>,
    deletions: Vec<Deletion>,
}

impl Work {
    fn of(batch: &[RecordedEvent]) -> Self {
        let mut work = Self::default();
        for event in batch {
            let decoded = match DomainEvent::from_recorded(event) {
                Ok(Some(decoded)) => decoded,
                Ok(None) => continue,
                Err(error) => {
                    tracing::error!(event = %event.id, %error, "unreadable event; not indexed for erasure");
                    continue;
                }
            };
            for subject in erasure::subjects(&decoded) {
                work.holdings
                    .push((subject.to_owned(), event.id, event.position));
            }
            if let Some((kind, subject)) = erasure::deletion(&decoded) {
                let account = match &decoded {
                    DomainEvent::ActorDeleted(e) => Some(e.actor_id),
                    _ => None,
                };
                work.deletions.push(Deletion {
                    event: event.id,
                    position: event.position,
                    kind,
                    subject: subject.to_owned(),
                    account,
                });
            }
        }
        work
    }

    fn is_empty(&self) -> bool {
        self.holdings.is_empty() && self.deletions.is_empty()
    }
}

/// What a batch's transaction did.
#[derive(Default)]
struct Done {
    /// The events rewritten, as they now are.
    redacted: HashMap<EventId, (Payload, Metadata)>,
    appended: bool,
}

async fn run(
    store: PgEventStore,
    upstream: Arc<dyn Upstream>,
    vacuum: Arc<Notify>,
    mut checkpoint: Position,
    progress: watch::Sender<Position>,
) {
    let pool = store.pool().clone();
    let mut last_saved = Instant::now();
    'subscribe: loop {
        if pool.is_closed() {
            return;
        }
        let mut events = store.subscribe_all(checkpoint).ready_chunks(BATCH);
        while let Some(batch) = events.next().await {
            let batch: Vec<RecordedEvent> = match batch.into_iter().collect() {
                Ok(batch) => batch,
                Err(error) => {
                    if pool.is_closed() {
                        return;
                    }
                    tracing::error!(%error, "erasure cannot read the log; paused");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue 'subscribe;
                }
            };
            let Some(last) = batch.last().map(|e| e.position) else {
                continue;
            };
            let work = Work::of(&batch);
            if work.is_empty() && last_saved.elapsed() < CHECKPOINT_EVERY {
                checkpoint = last;
                progress.send_replace(last);
                continue;
            }
            if !work.deletions.is_empty() {
                upstream.caught_up(last).await;
            }
            let done = loop {
                match write(&store, &work, last).await {
                    Ok(done) => break done,
                    Err(error) => {
                        if pool.is_closed() {
                            return;
                        }
                        tracing::error!(%error, "erasure could not write; will retry");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            };
            if !done.redacted.is_empty() {
                store.redacted(&done.redacted);
                vacuum.notify_one();
            }
            if done.appended {
                store.appended();
            }
            last_saved = Instant::now();
            checkpoint = last;
            progress.send_replace(last);
        }
        if pool.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Errors of one batch's transaction.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] chorus_domain::EventStoreError),
    #[error("an event could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Indexes the batch, erases its deletions and saves the checkpoint, in one
/// transaction.
async fn write(
    store: &PgEventStore,
    work: &Work,
    checkpoint: Position,
) -> Result<Done, WriteError> {
    let mut tx = store.pool().begin().await?;
    let mut done = Done::default();
    if !work.holdings.is_empty() {
        let subjects: Vec<&str> = work.holdings.iter().map(|(s, _, _)| s.as_str()).collect();
        let events: Vec<Uuid> = work.holdings.iter().map(|(_, e, _)| e.0).collect();
        sqlx::query(
            "INSERT INTO erasure_holdings (subject, event_id)
             SELECT * FROM unnest($1::text[], $2::uuid[])
             ON CONFLICT DO NOTHING",
        )
        .bind(&subjects)
        .bind(&events)
        .execute(&mut *tx)
        .await?;
        late_arrivals(store, &mut tx, work, &mut done).await?;
    }
    for deletion in &work.deletions {
        erase(store, &mut tx, deletion, &mut done).await?;
    }
    checkpoints::save(&mut *tx, SUBSCRIBER, checkpoint).await?;
    tx.commit().await?;
    Ok(done)
}

/// Redacts the batch's events that carry content erased before: a post or
/// an actor deleted in an earlier batch, whose content came again after
/// its deletion.
async fn late_arrivals(
    store: &PgEventStore,
    conn: &mut PgConnection,
    work: &Work,
    done: &mut Done,
) -> Result<(), WriteError> {
    let subjects: Vec<&str> = work
        .holdings
        .iter()
        .map(|(s, _, _)| s.as_str())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let erased: Vec<(String, Uuid, String, i64, i64)> = sqlx::query_as(
        "SELECT subject, deletion, kind, position_major, position_minor
         FROM erasure_subjects WHERE subject = ANY($1)",
    )
    .bind(&subjects)
    .fetch_all(&mut *conn)
    .await?;
    if erased.is_empty() {
        return Ok(());
    }
    let erased: HashMap<&str, (Uuid, &str, Position)> = erased
        .iter()
        .map(|(subject, deletion, kind, major, minor)| {
            let position = checkpoints::from_db(*major, *minor);
            (subject.as_str(), (*deletion, kind.as_str(), position))
        })
        .collect();
    let mut seen = HashSet::new();
    for (subject, event, position) in &work.holdings {
        let Some((deletion, kind, deleted_at)) = erased.get(subject.as_str()) else {
            continue;
        };
        // What came before the deletion was erased with it.
        if position <= deleted_at {
            continue;
        }
        if !seen.insert(*event) {
            continue;
        }
        let record = erased_event_id(*event);
        let redacted = redact_events(conn, &[*event], record, done).await?;
        if redacted.is_empty() {
            continue;
        }
        let erased = ContentErased {
            subject: subject.clone(),
            kind: if *kind == "actor" {
                ErasedKind::Actor
            } else {
                ErasedKind::Post
            },
            deletion: EventId(*deletion),
            posts: Vec::new(),
            redacted,
            erased_at: Utc::now(),
        };
        record_erasure(store, conn, *event, record, erased).await?;
        done.appended = true;
    }
    Ok(())
}

/// Erases what `deletion` deleted.
async fn erase(
    store: &PgEventStore,
    conn: &mut PgConnection,
    deletion: &Deletion,
    done: &mut Done,
) -> Result<(), WriteError> {
    let subject = deletion.subject.as_str();
    // An actor's posts are those it held the creation of as their author.
    let posts: Vec<String> = match deletion.kind {
        ErasedKind::Post => Vec::new(),
        ErasedKind::Actor => {
            sqlx::query_scalar(
                "SELECT DISTINCT e.payload->>'uri' FROM erasure_holdings h
                 JOIN events e ON e.event_id = h.event_id
                 WHERE h.subject = $1
                   AND e.event_type IN ('PostCreated', 'RemotePostCreated')
                   AND e.payload->>'author' = $1
                   AND e.payload->>'uri' IS NOT NULL
                 ORDER BY 1",
            )
            .bind(subject)
            .fetch_all(&mut *conn)
            .await?
        }
    };
    let mut subjects = vec![subject.to_owned()];
    subjects.extend(posts.iter().cloned());
    let held: Vec<Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT event_id FROM erasure_holdings WHERE subject = ANY($1) ORDER BY 1",
    )
    .bind(&subjects)
    .fetch_all(&mut *conn)
    .await?;
    let held: Vec<EventId> = held.into_iter().map(EventId).collect();
    let record = erased_event_id(deletion.event);
    let redacted = redact_events(conn, &held, record, done).await?;
    let kinds: Vec<&str> = std::iter::once(kind_name(deletion.kind))
        .chain(posts.iter().map(|_| "post"))
        .collect();
    let (major, minor) = checkpoints::to_db(deletion.position);
    sqlx::query(
        "INSERT INTO erasure_subjects (subject, deletion, kind, position_major, position_minor)
         SELECT s, $2, k, $4, $5 FROM unnest($1::text[], $3::text[]) AS u (s, k)
         ON CONFLICT (subject) DO NOTHING",
    )
    .bind(&subjects)
    .bind(deletion.event.0)
    .bind(&kinds)
    .bind(major)
    .bind(minor)
    .execute(&mut *conn)
    .await?;
    if let Some(account) = deletion.account {
        forget_account(conn, account, subject, deletion.event).await?;
    }
    let erased = ContentErased {
        subject: subject.to_owned(),
        kind: deletion.kind,
        deletion: deletion.event,
        posts,
        redacted,
        erased_at: Utc::now(),
    };
    record_erasure(store, conn, deletion.event, record, erased).await?;
    done.appended = true;
    Ok(())
}

fn kind_name(kind: ErasedKind) -> &'static str {
    match kind {
        ErasedKind::Post => "post",
        ErasedKind::Actor => "actor",
    }
}

/// A deleted local account: its tokens (already revoked) go, its other
/// pending deliveries are given up (its Delete{Person} stands for them),
/// and its key is kept until the Delete{Person} is delivered.
async fn forget_account(
    conn: &mut PgConnection,
    account: Uuid,
    uri: &str,
    deletion: EventId,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM api_tokens WHERE actor_id = $1")
        .bind(account)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE delivery_jobs
         SET state = 'dead', last_error = $3, leased_until = NULL, finished_at = now(),
             updated_at = now()
         WHERE state = 'pending' AND event_id <> $2
           AND event_id IN (SELECT event_id FROM delivery_activities WHERE actor = $1)",
    )
    .bind(uri)
    .bind(deletion.0)
    .bind(GIVEN_UP)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO erasure_accounts (actor_id, uri, deletion) VALUES ($1, $2, $3)
         ON CONFLICT (actor_id) DO NOTHING",
    )
    .bind(account)
    .bind(uri)
    .bind(deletion.0)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Rewrites the payloads of `events` with their content erased, marks them
/// redacted (by the `ContentErased` with id `record`), and redacts the
/// delivery queue's copies of their activities. Returns the events that
/// carried content (redacted now or before), in order.
async fn redact_events(
    conn: &mut PgConnection,
    events: &[EventId],
    record: EventId,
    done: &mut Done,
) -> Result<Vec<EventId>, WriteError> {
    let ids: Vec<Uuid> = events.iter().map(|e| e.0).collect();
    let rows: Vec<(Uuid, String, String, String)> = sqlx::query_as(
        "SELECT event_id, event_type, payload::text, metadata::text FROM events
         WHERE event_id = ANY($1) ORDER BY event_id",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let marker = serde_json::to_value(Redaction {
        by: record,
        at: Utc::now(),
    })?;
    let mut carrying = Vec::new();
    let mut changed: Vec<(Uuid, String, Metadata)> = Vec::new();
    for (id, event_type, payload, metadata) in rows {
        let payload: Value = serde_json::from_str(&payload)?;
        let Some(redacted) = erasure::redact(&event_type, &payload) else {
            continue;
        };
        let mut metadata: Metadata = serde_json::from_str(&metadata)?;
        // Unchanged: redacted before, or nothing of it was content after
        // all (an activity it received that embeds nothing).
        if redacted == payload {
            if erasure::is_redacted(&metadata) {
                carrying.push(EventId(id));
            }
            continue;
        }
        carrying.push(EventId(id));
        metadata
            .extra
            .entry(REDACTED)
            .or_insert_with(|| marker.clone());
        changed.push((id, redacted.to_string(), metadata));
    }
    if !changed.is_empty() {
        // Declares this transaction the erasure, which the log's guard
        // requires of a rewrite (and which ends with the transaction).
        sqlx::query("SET LOCAL chorus.erasure = 'on'")
            .execute(&mut *conn)
            .await?;
        let ids: Vec<Uuid> = changed.iter().map(|(id, _, _)| *id).collect();
        let payloads: Vec<&str> = changed.iter().map(|(_, p, _)| p.as_str()).collect();
        let markers: Vec<String> = changed
            .iter()
            .map(|(_, _, m)| serde_json::json!({ REDACTED: m.extra.get(REDACTED) }).to_string())
            .collect();
        sqlx::query(
            "UPDATE events e SET payload = u.p::jsonb, metadata = e.metadata || u.m::jsonb
             FROM unnest($1::uuid[], $2::text[], $3::text[]) AS u (id, p, m)
             WHERE e.event_id = u.id",
        )
        .bind(&ids)
        .bind(&payloads)
        .bind(&markers)
        .execute(&mut *conn)
        .await?;
        for (id, payload, metadata) in changed {
            done.redacted
                .insert(EventId(id), (Payload::from_store(payload), metadata));
        }
    }
    redact_deliveries(conn, &carrying).await?;
    Ok(carrying)
}

/// The delivery queue's copies of erased activities (the Create or Update
/// of a local post) lose their content the way the events did, and their
/// pending deliveries are given up: the post they carry is deleted.
async fn redact_deliveries(conn: &mut PgConnection, events: &[EventId]) -> Result<(), WriteError> {
    let ids: Vec<Uuid> = events.iter().map(|e| e.0).collect();
    let bodies: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT event_id, body FROM delivery_activities WHERE event_id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?;
    for (id, body) in bodies {
        let mut activity: Value = serde_json::from_str(&body)?;
        erasure::redact_activity(&mut activity);
        let redacted = activity.to_string();
        if redacted != body {
            sqlx::query("UPDATE delivery_activities SET body = $2 WHERE event_id = $1")
                .bind(id)
                .bind(&redacted)
                .execute(&mut *conn)
                .await?;
        }
    }
    sqlx::query(
        "UPDATE delivery_jobs
         SET state = 'dead', last_error = $2, leased_until = NULL, finished_at = now(),
             updated_at = now()
         WHERE event_id = ANY($1) AND state = 'pending'",
    )
    .bind(&ids)
    .bind(GIVEN_UP)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Appends the `ContentErased` caused by `cause`, once.
async fn record_erasure(
    store: &PgEventStore,
    conn: &mut PgConnection,
    cause: EventId,
    record: EventId,
    erased: ContentErased,
) -> Result<(), WriteError> {
    let stream = erased_stream(&erased.subject);
    let event = DomainEvent::ContentErased(erased)
        .to_new_event()?
        .with_id(record)
        .with_metadata(Metadata {
            causation_id: Some(cause),
            correlation_id: Some(cause.0),
            ..Metadata::default()
        });
    // With an external log of record, the event goes there first (the
    // rewrites above stay in this database's copy only).
    store
        .append_in(conn, &stream, ExpectedVersion::Any, &[event])
        .await?;
    Ok(())
}

/// Destroys the private keys of deleted accounts whose Delete{Person} has
/// no pending delivery left (delivered, or given up after its retries).
async fn sweep_keys(pool: PgPool, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if pool.is_closed() {
            return;
        }
        match destroy_delivered_keys(&pool).await {
            Ok(0) => {}
            Ok(destroyed) => tracing::info!(destroyed, "deleted accounts' keys destroyed"),
            Err(error) => tracing::warn!(%error, "could not destroy deleted accounts' keys"),
        }
    }
}

/// One sweep of [`sweep_keys`]; returns how many keys it destroyed.
pub async fn destroy_delivered_keys(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let done: Vec<Uuid> = sqlx::query_scalar(
        "SELECT ea.actor_id FROM erasure_accounts ea
         WHERE ea.key_destroyed_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM delivery_jobs j
                           WHERE j.event_id = ea.deletion AND j.state = 'pending')
         FOR UPDATE SKIP LOCKED",
    )
    .fetch_all(&mut *tx)
    .await?;
    if done.is_empty() {
        return Ok(0);
    }
    let destroyed = sqlx::query("DELETE FROM actor_keys WHERE actor_id = ANY($1)")
        .bind(&done)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("UPDATE erasure_accounts SET key_destroyed_at = now() WHERE actor_id = ANY($1)")
        .bind(&done)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(destroyed)
}

/// VACUUMs the rewritten tables after erasures (at most once per `every`),
/// so that the erased row versions are not left for autovacuum to find.
async fn vacuum_after_erasures(pool: PgPool, wake: Arc<Notify>, every: Duration) {
    loop {
        wake.notified().await;
        if pool.is_closed() {
            return;
        }
        if let Err(error) = sqlx::raw_sql(VACUUMED).execute(&pool).await {
            tracing::warn!(%error, "could not VACUUM after an erasure");
        }
        tokio::time::sleep(every).await;
    }
}
