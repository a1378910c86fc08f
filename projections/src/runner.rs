//! The loop that keeps one projection up to date.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chorus_domain::{EventStore, Position, RecordedEvent};
use chorus_postgres::{PgEventStore, checkpoints};
use futures::StreamExt;
use sqlx::PgConnection;
use tokio::sync::watch;

/// Why applying an event failed.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// The event's payload does not match its type and schema version.
    #[error("event {event_id} ({event_type}) has a payload this projection cannot read")]
    Payload {
        event_id: chorus_domain::EventId,
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
    /// A rebuild's fold in memory was given a type it does not fold (a
    /// type the projection started handling without its fold following).
    #[error("the in-memory rebuild of this projection does not fold {event_type} events")]
    Unfoldable { event_type: String },
    /// A stored event of a known type that this code cannot read: a newer
    /// schema version, or a payload that does not match its schema. The
    /// runner retries rather than skips it, so the projection waits for a
    /// release that understands it instead of silently diverging.
    #[error("event {event_id} ({event_type}) cannot be decoded")]
    Decode {
        event_id: chorus_domain::EventId,
        event_type: String,
        #[source]
        source: chorus_domain::events::DecodeError,
    },
}

impl ProjectionError {
    /// Wraps a payload decoding error with the event it came from.
    pub fn payload(event: &RecordedEvent, source: serde_json::Error) -> Self {
        Self::Payload {
            event_id: event.id,
            event_type: event.event_type.clone(),
            source,
        }
    }

    /// Wraps a domain decoding error with the event it came from.
    pub fn decode(event: &RecordedEvent, source: chorus_domain::events::DecodeError) -> Self {
        Self::Decode {
            event_id: event.id,
            event_type: event.event_type.clone(),
            source,
        }
    }
}

/// A read model built from the log.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// The stable name; also the name of its checkpoint.
    fn name(&self) -> &'static str;

    /// Whether events of this type concern the projection.
    fn handles(&self, event_type: &str) -> bool;

    /// The types [`Projection::handles`], when it can list them, so that a
    /// rebuild reads only those from the log; `None` reads every event.
    fn event_types(&self) -> Option<&'static [&'static str]> {
        None
    }

    /// Top-level payload fields the projection never reads, which a rebuild
    /// need not read from the log (the embedded activity, mostly).
    fn unread_fields(&self) -> &'static [&'static str] {
        &[]
    }

    /// A fold of a whole rebuild in memory, loaded into the tables at the
    /// end, for projections that have one (much faster than writing batch
    /// after batch); `None` rebuilds batch by batch with `apply_all`.
    fn memory_fold(&self) -> Option<Box<dyn crate::bulk::MemoryFold>> {
        None
    }

    /// Every table the projection writes (its read model and its private
    /// helper tables), unqualified. A rebuild fills copies of exactly these
    /// in a schema of its own and swaps them in; a table missing here makes
    /// the rebuild fail, never write to the live one.
    fn tables(&self) -> &'static [&'static str];

    /// Writes what `event` means for the read model. Runs inside the
    /// transaction that also advances the checkpoint; must be idempotent.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError>;

    /// Writes what a run of handled events means, in order. The default
    /// applies them one by one; a projection may write many events of one
    /// kind with one statement, which is what keeps up with a busy inbox.
    async fn apply_all(
        &self,
        conn: &mut PgConnection,
        events: &[&RecordedEvent],
    ) -> Result<(), ProjectionError> {
        for event in events {
            let span = tracing::debug_span!("apply", projection = self.name(), event_id = %event.id, event_type = %event.event_type);
            let _entered = span.enter();
            self.apply(conn, event).await?;
        }
        Ok(())
    }
}

/// Splits `events` into the longest runs of consecutive events of which
/// `together` holds (written with one statement each) and the others
/// (applied one by one), in order.
pub fn runs<'a>(
    events: &'a [&'a RecordedEvent],
    together: impl Fn(&RecordedEvent) -> bool,
) -> Vec<(bool, &'a [&'a RecordedEvent])> {
    let mut out: Vec<(bool, &'a [&'a RecordedEvent])> = Vec::new();
    let mut start = 0;
    for i in 1..=events.len() {
        if i == events.len() || together(events[i]) != together(events[start]) {
            out.push((together(events[start]), &events[start..i]));
            start = i;
        }
    }
    out
}

/// How far a running projection has got; watch it to wait for a position.
#[derive(Clone, Debug)]
pub struct Progress(pub(crate) watch::Receiver<Position>);

impl Progress {
    /// The last position applied and committed.
    pub fn position(&self) -> Position {
        *self.0.borrow()
    }

    /// Waits until everything up to `position` is applied and committed.
    /// Returns false if the projection stopped first.
    pub async fn reached(&mut self, position: Position) -> bool {
        self.0.wait_for(|p| *p >= position).await.is_ok()
    }
}

/// The longest a projection goes without writing its checkpoint while it
/// skips events it does not handle.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// The most events applied in one transaction.
const BATCH: usize = 500;

/// Starts keeping `projection` up to date from its checkpoint, in a task of
/// its own; returns its progress. The task ends when the store is dropped.
pub async fn run(
    store: PgEventStore,
    projection: Arc<dyn Projection>,
) -> Result<(Progress, tokio::task::JoinHandle<()>), sqlx::Error> {
    let saved = checkpoints::load(store.pool(), projection.name()).await?;
    let (tx, rx) = watch::channel(saved.unwrap_or(Position::START));
    let handle = tokio::spawn(run_from(store, projection, saved, tx));
    Ok((Progress(rx), handle))
}

async fn run_from(
    store: PgEventStore,
    projection: Arc<dyn Projection>,
    // The checkpoint as stored, which every commit moves on from.
    mut saved: Option<Position>,
    progress: watch::Sender<Position>,
) {
    let name = projection.name();
    // Where reading has got to: ahead of `saved` while batches of events the
    // projection ignores are skipped without a transaction.
    let mut checkpoint = saved.unwrap_or(Position::START);
    let mut last_saved = std::time::Instant::now();
    'subscribe: loop {
        let mut events = store.subscribe_all(checkpoint).ready_chunks(BATCH);
        loop {
            let batch = match tokio::time::timeout(CHECKPOINT_INTERVAL, events.next()).await {
                Ok(Some(batch)) => batch,
                // The subscription ended (its store is shutting down).
                Ok(None) => return,
                // Nothing new for a while: what was skipped is saved, so
                // that the stored checkpoint (and the lag admins see) is
                // where the projection really is.
                Err(_idle) => {
                    match checkpoints::settle(store.pool(), name, &mut saved, checkpoint).await {
                        Ok(None) => last_saved = std::time::Instant::now(),
                        Ok(Some(moved)) => {
                            tracing::info!(projection = name, checkpoint = %moved, "checkpoint moved elsewhere; resuming from it");
                            checkpoint = moved;
                            progress.send_replace(checkpoint);
                            continue 'subscribe;
                        }
                        Err(error) => {
                            tracing::warn!(projection = name, %error, "cannot save the checkpoint")
                        }
                    }
                    continue;
                }
            };
            let batch: Vec<RecordedEvent> = match batch.into_iter().collect() {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::error!(projection = name, %error, "cannot read the log; projection paused");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue 'subscribe;
                }
            };
            let mut failures = 0u32;
            // Batches of events the projection ignores move it on without a
            // transaction; the checkpoint is still written at least once a
            // second, so a restart re-reads little.
            let save_anyway = last_saved.elapsed() >= CHECKPOINT_INTERVAL;
            // A batch either applies whole, with its checkpoint, or not at
            // all; on failure it is retried, never skipped.
            loop {
                match apply_batch(&store, projection.as_ref(), &batch, saved, save_anyway).await {
                    Ok(Some(Applied::Committed(position))) => {
                        checkpoint = position;
                        saved = Some(position);
                        last_saved = std::time::Instant::now();
                        progress.send_replace(position);
                        break;
                    }
                    Ok(Some(Applied::Skipped(position))) => {
                        checkpoint = position;
                        progress.send_replace(position);
                        break;
                    }
                    Ok(Some(Applied::Moved)) => {
                        // A rebuild swapped in new tables, or an admin
                        // replayed the projection: carry on from where the
                        // stored checkpoint now says.
                        match checkpoints::load(store.pool(), name).await {
                            Ok(stored) => {
                                saved = stored;
                                checkpoint = stored.unwrap_or(Position::START);
                                progress.send_replace(checkpoint);
                                tracing::info!(projection = name, %checkpoint, "checkpoint moved elsewhere; resuming from it");
                                continue 'subscribe;
                            }
                            Err(error) => {
                                failures += 1;
                                tracing::error!(projection = name, %error, "cannot read the checkpoint; retrying");
                                tokio::time::sleep(Duration::from_millis(200) * failures.min(50))
                                    .await;
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        failures += 1;
                        tracing::error!(projection = name, failures, error = %error, source = ?std::error::Error::source(&error), "applying events failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200) * failures.min(50)).await;
                    }
                }
            }
        }
    }
}

/// What became of a batch.
enum Applied {
    /// Rows and checkpoint committed together.
    Committed(Position),
    /// Nothing in it concerned the projection: no transaction was needed.
    Skipped(Position),
    /// The stored checkpoint is no longer where this runner left it: nothing
    /// was written.
    Moved,
}

async fn apply_batch(
    store: &PgEventStore,
    projection: &dyn Projection,
    batch: &[RecordedEvent],
    saved: Option<Position>,
    save_checkpoint_anyway: bool,
) -> Result<Option<Applied>, ProjectionError> {
    let Some(last) = batch.last() else {
        return Ok(None);
    };
    if !save_checkpoint_anyway && !batch.iter().any(|e| projection.handles(&e.event_type)) {
        return Ok(Some(Applied::Skipped(last.position)));
    }
    let mut tx = store.pool().begin().await?;
    // Read models are derived: a commit lost in a crash loses its rows and its
    // checkpoint together, and they are applied again from the log. So the
    // commit need not wait for the disk.
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    // The checkpoint first: its row lock orders this batch with a rebuild's
    // swap or an admin's replay, whichever comes first.
    if !checkpoints::advance(&mut *tx, projection.name(), saved, last.position).await? {
        return Ok(Some(Applied::Moved));
    }
    let handled: Vec<&RecordedEvent> = batch
        .iter()
        .filter(|e| projection.handles(&e.event_type))
        .collect();
    projection.apply_all(&mut tx, &handled).await?;
    tx.commit().await?;
    Ok(Some(Applied::Committed(last.position)))
}
