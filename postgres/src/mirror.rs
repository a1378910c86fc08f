//! The mirror: the task that copies an upstream log of record into this
//! database's `events` table (see [`PgEventStore::with_upstream`]), event
//! by event in the upstream's order, keeping ids, streams, versions, types,
//! schema versions, payloads, metadata and recorded times
//! ([`PgEventStore::import`]). Where it got to is the upstream's position,
//! in `log_mirror`. It runs in one process at a time (the lease
//! [`LEASE`]); appenders everywhere wait for it.

use std::time::Duration;

use chorus_domain::{EventStoreError, ExpectedVersion, MigrationStore, Position, RecordedEvent};
use futures::{FutureExt as _, StreamExt as _};
use sqlx::{PgExecutor, PgPool};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::PgEventStore;
use crate::checkpoints::{Progress, from_db, to_db};

/// The lease the mirror runs under.
pub const LEASE: &str = "mirror";

/// The most events imported before the position is saved.
const BATCH: usize = 1000;

/// Where the mirror has copied the upstream up to (an upstream position),
/// or `None` if it never ran.
pub async fn position<'e>(executor: impl PgExecutor<'e>) -> Result<Option<Position>, sqlx::Error> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT position_major, position_minor FROM log_mirror")
            .fetch_optional(executor)
            .await?;
    Ok(row.map(|(major, minor)| from_db(major, minor)))
}

/// Records that the mirror has copied the upstream up to `position`.
pub async fn save<'e>(
    executor: impl PgExecutor<'e>,
    position: Position,
) -> Result<(), sqlx::Error> {
    let (major, minor) = to_db(position);
    sqlx::query(
        "INSERT INTO log_mirror (position_major, position_minor) VALUES ($1, $2)
         ON CONFLICT (one) DO UPDATE
         SET position_major = excluded.position_major,
             position_minor = excluded.position_minor,
             updated_at = now()",
    )
    .bind(major)
    .bind(minor)
    .execute(executor)
    .await?;
    Ok(())
}

/// Records where a mirror that never ran starts, unless one has run
/// meanwhile (another process got there first).
pub async fn start_at<'e>(
    executor: impl PgExecutor<'e>,
    position: Position,
) -> Result<(), sqlx::Error> {
    let (major, minor) = to_db(position);
    sqlx::query(
        "INSERT INTO log_mirror (position_major, position_minor) VALUES ($1, $2)
         ON CONFLICT (one) DO NOTHING",
    )
    .bind(major)
    .bind(minor)
    .execute(executor)
    .await?;
    Ok(())
}

/// A running mirror; dropping it stops it.
#[derive(Debug)]
pub struct Mirror {
    task: JoinHandle<()>,
    progress: Progress,
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why the mirror cannot start.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("the store has no upstream log of record to mirror")]
    NoUpstream,
    #[error("cannot read where the mirror got to")]
    Database(#[from] sqlx::Error),
}

impl Mirror {
    /// Starts copying `store`'s upstream into `store`'s database, after the
    /// saved position (from the start if there is none).
    pub async fn start(store: &PgEventStore) -> Result<Self, MirrorError> {
        let upstream = store.upstream().cloned().ok_or(MirrorError::NoUpstream)?;
        let after = position(store.pool()).await?.unwrap_or(Position::START);
        let (reached, progress) = Progress::starting_at(after);
        let task = tokio::spawn(run(store.local(), upstream, after, reached));
        Ok(Self { task, progress })
    }

    /// Waits until the mirror has copied the upstream up to `position` (an
    /// upstream position); false after `timeout`.
    pub async fn reached(&self, position: Position, timeout: Duration) -> bool {
        self.progress.reached(position, timeout).await
    }

    /// The upstream position copied up to.
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }
}

/// Follows the upstream from `after` for good: a failed read subscribes
/// again, a failed import is tried again (an event is never skipped).
async fn run(
    local: PgEventStore,
    upstream: std::sync::Arc<dyn MigrationStore>,
    mut after: Position,
    reached: watch::Sender<Position>,
) {
    let pool = local.pool().clone();
    let mut failures = 0u32;
    while !pool.is_closed() {
        let mut events = upstream.subscribe_all(after);
        loop {
            let mut batch: Vec<RecordedEvent> = Vec::new();
            let mut failed = None;
            match events.next().await {
                Some(Ok(event)) => batch.push(event),
                Some(Err(error)) => failed = Some(error),
                None => failed = Some(EventStoreError::Backend("the subscription ended".into())),
            }
            // What has arrived meanwhile goes in with it.
            while failed.is_none() && batch.len() < BATCH {
                match events.next().now_or_never() {
                    Some(Some(Ok(event))) => batch.push(event),
                    Some(Some(Err(error))) => failed = Some(error),
                    _ => break,
                }
            }
            if let Err(error) = copy(&local, &pool, &batch).await {
                failed = Some(error);
            } else if let Some(last) = batch.last() {
                after = last.position;
                reached.send_replace(after);
                failures = 0;
            }
            if let Some(error) = failed {
                failures += 1;
                tracing::warn!(%error, %after, failures, "the log mirror failed; following the upstream again");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(50)))).await;
                break;
            }
        }
    }
}

/// Imports `batch` (consecutive upstream events), a run of one stream at a
/// time, then saves the position of its last event.
async fn copy(
    local: &PgEventStore,
    pool: &PgPool,
    batch: &[RecordedEvent],
) -> Result<(), EventStoreError> {
    let Some(last) = batch.last() else {
        return Ok(());
    };
    for run in batch.chunk_by(|a, b| a.stream_id == b.stream_id) {
        import(local, run).await?;
    }
    save(pool, last.position)
        .await
        .map_err(|e| EventStoreError::Backend(Box::new(e)))
}

/// Imports one run at the versions the upstream gave it. An import repeated
/// after a crash (before the position was saved) finds its ids stored and
/// writes nothing; a run partly stored is imported event by event.
async fn import(local: &PgEventStore, run: &[RecordedEvent]) -> Result<(), EventStoreError> {
    let Some(first) = run.first() else {
        return Ok(());
    };
    let at = |event: &RecordedEvent| ExpectedVersion::Exact(event.stream_version.saturating_sub(1));
    match local.import(&first.stream_id, at(first), run).await {
        Ok(_) => Ok(()),
        Err(EventStoreError::PartialDuplicate { .. }) => {
            for event in run {
                local
                    .import(&event.stream_id, at(event), std::slice::from_ref(event))
                    .await?;
            }
            Ok(())
        }
        Err(error) => Err(error),
    }
}
