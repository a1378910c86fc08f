//! Rebuilding read models from the log beside the live ones.
//!
//! A rebuild fills copies of a projection's tables, in a schema of its own
//! (`rebuild_<projection>`), from position 0 with today's code, while the
//! live projection keeps serving and advancing. Once the copies have caught
//! up with the end of the log, one transaction swaps them in: it takes the
//! live projection's checkpoint row (which the runner takes first in each of
//! its batches, see `chorus_postgres::checkpoints::advance`), applies whatever the live
//! projection had got to beyond the copies, moves the live tables out and
//! the copies in under the same names (with their indexes, constraints,
//! grants, and the views that depend on them), and sets the checkpoint to
//! the copies' position. Readers see the old tables until that commit and
//! the new ones after it, never a half-built state. The live runner notices
//! that its checkpoint moved and carries on from there.
//!
//! Rebuilding sends nothing: projections only write rows.
//!
//! Several projections rebuilt together share one read of the log. Each
//! rebuild has a row in `projection_rebuilds` (its progress, written with
//! each batch of rows), so any process can show it; a rebuild whose process
//! died stops updating that row and is taken over by the next one asked for.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_domain::{EventStoreError, Position, RecordedEvent};
use chorus_postgres::{Narrowed, PgEventStore};
use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::bulk::MemoryFold;
use crate::{Projection, ProjectionError};

/// Events read from the log per batch.
const PAGE: usize = 10_000;
/// A running rebuild writes its row at least this often.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// A running rebuild whose row has not been written for this long has lost
/// its process; a new rebuild of the same projection takes over.
const ABANDONED_AFTER: Duration = Duration::from_secs(60);
/// How long a swap waits for readers of the live tables before it gives up
/// and tries again (it blocks new readers while it waits).
const SWAP_LOCK_TIMEOUT: &str = "5s";
const SWAP_ATTEMPTS: u32 = 5;

/// Why a rebuild could not start or failed.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("no projection is called `{0}`")]
    UnknownProjection(String),
    #[error("`{0}` is already being rebuilt")]
    AlreadyRunning(String),
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("the log could not be read")]
    Store(#[from] EventStoreError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error("`{projection}` could not be swapped in: {reason}")]
    Swap { projection: String, reason: String },
}

/// Where a rebuild stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RebuildState {
    Running,
    Swapped,
    Failed,
}

impl RebuildState {
    fn parse(state: &str) -> Self {
        match state {
            "running" => Self::Running,
            "swapped" => Self::Swapped,
            _ => Self::Failed,
        }
    }
}

/// A rebuild as its row in `projection_rebuilds` tells it.
#[derive(Clone, Debug)]
pub struct RebuildStatus {
    pub id: Uuid,
    pub projection: String,
    pub state: RebuildState,
    pub requested_by: Option<String>,
    /// Events applied to the copies so far.
    pub events_done: i64,
    /// Events of the types the projection reads, in the log when it started.
    pub events_total: i64,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

impl RebuildStatus {
    /// Events applied per second since the start (until the end, if ended).
    pub fn events_per_second(&self) -> f64 {
        let end = self.finished_at.unwrap_or_else(Utc::now);
        let seconds = (end - self.started_at).num_milliseconds().max(1) as f64 / 1000.0;
        self.events_done as f64 / seconds
    }

    /// Seconds left at the rate so far, while running and once it has a rate.
    pub fn eta_seconds(&self) -> Option<f64> {
        let rate = self.events_per_second();
        (self.state == RebuildState::Running && rate > 0.0)
            .then(|| (self.events_total - self.events_done).max(0) as f64 / rate)
    }
}

type StatusRow = (
    Uuid,
    String,
    String,
    Option<String>,
    i64,
    i64,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<String>,
);

const STATUS_COLUMNS: &str = "rebuild_id, projection, state, requested_by, events_done, \
     events_total, started_at, updated_at, finished_at, error";

fn status(row: StatusRow) -> RebuildStatus {
    let (id, projection, state, requested_by, done, total, started, updated, finished, error) = row;
    RebuildStatus {
        id,
        projection,
        state: RebuildState::parse(&state),
        requested_by,
        events_done: done,
        events_total: total,
        started_at: started,
        updated_at: updated,
        finished_at: finished,
        error,
    }
}

/// One rebuild by its id.
pub async fn status_of(pool: &PgPool, id: Uuid) -> Result<Option<RebuildStatus>, sqlx::Error> {
    let row: Option<StatusRow> = sqlx::query_as(&format!(
        "SELECT {STATUS_COLUMNS} FROM projection_rebuilds WHERE rebuild_id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(status))
}

/// The latest rebuild of each projection that has had one.
pub async fn latest(pool: &PgPool) -> Result<Vec<RebuildStatus>, sqlx::Error> {
    let rows: Vec<StatusRow> = sqlx::query_as(&format!(
        "SELECT DISTINCT ON (projection) {STATUS_COLUMNS} FROM projection_rebuilds
         ORDER BY projection, started_at DESC"
    ))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(status).collect())
}

/// Rebuilds that have been claimed, waiting to [`Rebuild::run`].
pub struct Rebuild {
    pool: PgPool,
    targets: Vec<Target>,
}

impl std::fmt::Debug for Rebuild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rebuild")
            .field("rebuilds", &self.ids())
            .finish_non_exhaustive()
    }
}

struct Target {
    id: Uuid,
    projection: Arc<dyn Projection>,
    /// The whole rebuild folded in memory, for projections that can: the
    /// copies are loaded once, at the end, then indexed.
    memory: Option<Box<dyn MemoryFold>>,
    /// Whether it is rebuilt in memory (its fold is in a task meanwhile).
    folds_in_memory: bool,
    /// The schema of the copies.
    schema: String,
    done: i64,
    total: i64,
    position: Position,
}

/// The projections called `names` among `all`, in the order asked; every
/// projection when `names` is empty.
pub fn select(
    all: Vec<Arc<dyn Projection>>,
    names: &[String],
) -> Result<Vec<Arc<dyn Projection>>, RebuildError> {
    if names.is_empty() {
        return Ok(all);
    }
    names
        .iter()
        .map(|name| {
            all.iter()
                .find(|p| p.name() == name)
                .cloned()
                .ok_or_else(|| RebuildError::UnknownProjection(name.clone()))
        })
        .collect()
}

impl Rebuild {
    /// Claims a rebuild of each of `projections` (refused if one is already
    /// running, unless its process is gone), recording who asked.
    pub async fn begin(
        pool: &PgPool,
        projections: Vec<Arc<dyn Projection>>,
        requested_by: &str,
    ) -> Result<Self, RebuildError> {
        let mut tx = pool.begin().await?;
        let mut targets = Vec::with_capacity(projections.len());
        for projection in projections {
            let name = projection.name();
            // A rebuild whose process died is marked failed, freeing the slot.
            sqlx::query(
                "UPDATE projection_rebuilds
                 SET state = 'failed', finished_at = now(),
                     error = 'abandoned: its process stopped before it finished'
                 WHERE projection = $1 AND state = 'running'
                   AND updated_at < now() - make_interval(secs => $2)",
            )
            .bind(name)
            .bind(ABANDONED_AFTER.as_secs_f64())
            .execute(&mut *tx)
            .await?;
            let id = Uuid::now_v7();
            let claimed = sqlx::query(
                "INSERT INTO projection_rebuilds (rebuild_id, projection, state, requested_by)
                 VALUES ($1, $2, 'running', $3)
                 ON CONFLICT (projection) WHERE state = 'running' DO NOTHING",
            )
            .bind(id)
            .bind(name)
            .bind(requested_by)
            .execute(&mut *tx)
            .await?;
            if claimed.rows_affected() == 0 {
                return Err(RebuildError::AlreadyRunning(name.to_owned()));
            }
            targets.push(Target {
                id,
                schema: format!(
                    "rebuild_{}",
                    name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                ),
                memory: projection.memory_fold(),
                folds_in_memory: false,
                projection,
                done: 0,
                total: 0,
                position: Position::START,
            });
        }
        tx.commit().await?;
        Ok(Self {
            pool: pool.clone(),
            targets,
        })
    }

    /// The claimed rebuilds: projection name and rebuild id.
    pub fn ids(&self) -> Vec<(&'static str, Uuid)> {
        self.targets
            .iter()
            .map(|t| (t.projection.name(), t.id))
            .collect()
    }

    /// Runs the rebuilds to the end: fills the copies, swaps them in. Each
    /// one's row tells how it went; `progress` is told (events done, events
    /// in all) after each batch. On failure the copies are dropped, the live
    /// tables stay as they were, and the row says why.
    pub fn run(
        self,
        progress: watch::Sender<(i64, i64)>,
    ) -> futures::future::BoxFuture<'static, Result<(), RebuildError>> {
        // Boxed as a `Send` future here, where the borrows inside it are
        // concrete: spawning it unboxed trips the compiler's inference of
        // `Send` through the executors it lends (rust-lang/rust#110338).
        Box::pin(self.run_inner(progress))
    }

    async fn run_inner(self, progress: watch::Sender<(i64, i64)>) -> Result<(), RebuildError> {
        let pool = self.pool.clone();
        let ids: Vec<Uuid> = self.targets.iter().map(|t| t.id).collect();
        let heartbeat = tokio::spawn(heartbeat(pool.clone(), ids.clone()));
        let result = fill_and_swap(&pool, self.targets, &progress).await;
        heartbeat.abort();
        if let Err(error) = &result {
            tracing::error!(%error, source = ?std::error::Error::source(error), "rebuild failed");
            let message = error.to_string();
            if let Err(db) = sqlx::query(
                "UPDATE projection_rebuilds
                 SET state = 'failed', error = $2, finished_at = now(), updated_at = now()
                 WHERE rebuild_id = ANY($1) AND state = 'running'",
            )
            .bind(&ids)
            .bind(&message)
            .execute(&pool)
            .await
            {
                tracing::error!(error = %db, "could not record that a rebuild failed");
            }
        }
        result
    }
}

async fn heartbeat(pool: PgPool, ids: Vec<Uuid>) {
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let _ = sqlx::query(
            "UPDATE projection_rebuilds SET updated_at = now()
             WHERE rebuild_id = ANY($1) AND state = 'running'",
        )
        .bind(&ids)
        .execute(&pool)
        .await;
    }
}

/// A connection of its own for one projection's copies, whose unqualified
/// table names resolve only in the copies' schema: a table the projection
/// forgot to declare is an error there, never a write to the live one.
async fn shadow_connection(pool: &PgPool, schema: &str) -> Result<PgConnection, sqlx::Error> {
    let mut conn = PgConnection::connect_with(pool.connect_options().as_ref()).await?;
    sqlx::query(&format!("SET search_path TO {}", ident(schema)))
        .execute(&mut conn)
        .await?;
    sqlx::query("SET synchronous_commit = off")
        .execute(&mut conn)
        .await?;
    // Indexes built over whole copies sort in memory.
    sqlx::query("SET maintenance_work_mem = '256MB'")
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

/// A double-quoted SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn fill_and_swap(
    pool: &PgPool,
    mut targets: Vec<Target>,
    progress: &watch::Sender<(i64, i64)>,
) -> Result<(), RebuildError> {
    let mut connections = Vec::with_capacity(targets.len());
    for target in &targets {
        let mut conn = shadow_connection(pool, &target.schema).await?;
        create_copies(&mut conn, target).await?;
        // Rebuilt batch by batch, the copies need their indexes from the
        // start (deleted posts and actors find their rows through them).
        if target.memory.is_none() {
            create_indexes(&mut conn, target).await?;
        }
        connections.push(conn);
    }
    // What to read: the union of the types the projections read, unless one
    // cannot list them, without the payload fields none of them reads.
    let types: Option<Vec<String>> = targets
        .iter()
        .map(|t| t.projection.event_types())
        .collect::<Option<Vec<_>>>()
        .map(|lists| {
            let mut types: Vec<String> = lists
                .into_iter()
                .flatten()
                .map(|t| (*t).to_owned())
                .collect();
            types.sort();
            types.dedup();
            types
        });
    let without_fields: Vec<String> = targets
        .first()
        .map(|first| first.projection.unread_fields())
        .unwrap_or_default()
        .iter()
        .filter(|field| {
            targets
                .iter()
                .all(|t| t.projection.unread_fields().contains(field))
        })
        .map(|f| (*f).to_owned())
        .collect();
    let narrowed = Narrowed {
        types,
        without_fields,
        ..Narrowed::default()
    };
    count_totals(pool, &mut targets).await?;
    publish(pool, &targets, progress).await?;

    let started = Instant::now();
    // The log is read by a task of its own, a page ahead of the writers.
    let (pages, mut receive) = mpsc::channel::<Result<Vec<RecordedEvent>, EventStoreError>>(2);
    let reader = tokio::spawn(read_log(pool.clone(), narrowed, pages));
    let mut last_published = Instant::now();
    // Folds in memory run in tasks of their own, side by side, fed page by
    // page; each gives its fold back when the log is read.
    let mut folding = Vec::with_capacity(targets.len());
    for target in &mut targets {
        folding.push(
            target
                .memory
                .take()
                .map(|memory| fold_in_task(target, memory)),
        );
    }
    while let Some(page) = receive.recv().await {
        let page = Arc::new(page?);
        let Some(end) = page.last().map(|e| e.position) else {
            break;
        };
        for (target, fold) in targets.iter().zip(&folding) {
            if let Some((pages, _)) = fold {
                // A fold that failed has hung up: its error comes below.
                let _ = pages.send((page.clone(), target.projection.clone())).await;
            }
        }
        // Each projection writes on its own connection, side by side.
        let mut applies: Vec<futures::future::BoxFuture<'_, Result<(), RebuildError>>> =
            Vec::with_capacity(targets.len());
        for (target, conn) in targets.iter_mut().zip(connections.iter_mut()) {
            applies.push(Box::pin(apply_page(conn, target, &page, end)));
        }
        futures::future::try_join_all(applies).await?;
        if last_published.elapsed() >= Duration::from_millis(200) {
            last_published = Instant::now();
            progress.send_replace(totals(&targets));
        }
    }
    reader.abort();
    for (target, fold) in targets.iter_mut().zip(folding) {
        if let Some((pages, task)) = fold {
            drop(pages);
            let memory = task.await.map_err(|e| RebuildError::Swap {
                projection: target.projection.name().to_owned(),
                reason: format!("its fold stopped: {e}"),
            })??;
            target.memory = Some(memory);
        }
    }
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        "rebuild: the log is read"
    );
    // Folds loaded into their copies and the copies indexed, side by side.
    let mut loads: Vec<futures::future::BoxFuture<'_, Result<(), RebuildError>>> =
        Vec::with_capacity(targets.len());
    for (target, conn) in targets.iter_mut().zip(connections.iter_mut()) {
        loads.push(Box::pin(load_and_index(conn, target)));
    }
    futures::future::try_join_all(loads).await?;
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        "rebuild: the copies are loaded and indexed"
    );
    for (target, conn) in targets.iter_mut().zip(connections.iter_mut()) {
        swap(pool, conn, target).await?;
    }
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        "rebuild: swapped in"
    );
    progress.send_replace(totals(&targets));
    for conn in connections {
        let _ = conn.close().await;
    }
    Ok(())
}

fn totals(targets: &[Target]) -> (i64, i64) {
    targets.iter().fold((0, 0), |(done, total), t| {
        (done + t.done, total + t.total.max(t.done))
    })
}

async fn publish(
    pool: &PgPool,
    targets: &[Target],
    progress: &watch::Sender<(i64, i64)>,
) -> Result<(), sqlx::Error> {
    for target in targets {
        sqlx::query(
            "UPDATE projection_rebuilds SET events_total = $2, updated_at = now()
             WHERE rebuild_id = $1",
        )
        .bind(target.id)
        .bind(target.total)
        .execute(pool)
        .await?;
    }
    progress.send_replace(totals(targets));
    Ok(())
}

/// Reads the log from the start to its end, in pages.
async fn read_log(
    pool: PgPool,
    narrowed: Narrowed,
    pages: mpsc::Sender<Result<Vec<RecordedEvent>, EventStoreError>>,
) {
    let mut after = Position::START;
    loop {
        let page = PgEventStore::read_after(&pool, after, &narrowed, PAGE).await;
        let full = page.as_ref().is_ok_and(|p| p.len() == PAGE);
        if let Ok(Some(last)) = page.as_ref().map(|p| p.last()) {
            after = last.position;
        }
        let failed = page.is_err();
        if pages.send(page).await.is_err() || failed || !full {
            return;
        }
    }
}

/// How many events of the types each projection reads the log holds now.
async fn count_totals(pool: &PgPool, targets: &mut [Target]) -> Result<(), sqlx::Error> {
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT event_type, count(*) FROM events GROUP BY event_type")
            .fetch_all(pool)
            .await?;
    for target in targets {
        target.total = counts
            .iter()
            .filter(|(t, _)| target.projection.handles(t))
            .map(|(_, n)| n)
            .sum();
    }
    Ok(())
}

/// Creates the copies of a projection's tables, empty, with their columns,
/// defaults, checks, storage settings and the constraints backed by an
/// index (primary keys, unique constraints), under the live ones' names.
async fn create_copies(conn: &mut PgConnection, target: &Target) -> Result<(), sqlx::Error> {
    let schema = ident(&target.schema);
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&mut *conn)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut *conn)
        .await?;
    for table in target.projection.tables() {
        let table = ident(table);
        sqlx::query(&format!(
            "CREATE TABLE {schema}.{table} (LIKE public.{table}
                 INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED
                 INCLUDING IDENTITY INCLUDING STORAGE INCLUDING COMMENTS)"
        ))
        .execute(&mut *conn)
        .await?;
        // A fold loaded at the end gets its constraints after the load
        // (an index built from sorted rows, not row by row).
        if target.memory.is_none() {
            add_constraints(conn, &schema, &table).await?;
        }
        let options: Option<Vec<String>> = sqlx::query_scalar(
            "SELECT reloptions FROM pg_class WHERE oid = ('public.' || $1)::regclass",
        )
        .bind(&table)
        .fetch_one(&mut *conn)
        .await?;
        if let Some(options) = options.filter(|o| !o.is_empty()) {
            sqlx::query(&format!(
                "ALTER TABLE {schema}.{table} SET ({})",
                options.join(", ")
            ))
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

/// The live table's constraints backed by an index (primary keys, unique
/// constraints), on its copy, under their own names.
async fn add_constraints(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
) -> Result<(), sqlx::Error> {
    let constraints: Vec<(String, String)> = sqlx::query_as(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
         WHERE conrelid = ('public.' || $1)::regclass AND contype IN ('p', 'u', 'x')",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await?;
    for (name, definition) in constraints {
        sqlx::query(&format!(
            "ALTER TABLE {schema}.{table} ADD CONSTRAINT {} {definition}",
            ident(&name)
        ))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The live tables' other indexes, on the copies, under the same names.
/// They are made before the copies are filled: the events that remove
/// every row of a deleted post or actor find those rows through them.
async fn create_indexes(conn: &mut PgConnection, target: &Target) -> Result<(), sqlx::Error> {
    let schema = ident(&target.schema);
    for table in target.projection.tables() {
        let table = ident(table);
        let indexes: Vec<(String, String)> = sqlx::query_as(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i
             JOIN pg_class c ON c.oid = i.indexrelid
             WHERE i.indrelid = ('public.' || $1)::regclass
               AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)",
        )
        .bind(&table)
        .fetch_all(&mut *conn)
        .await?;
        for (name, definition) in indexes {
            // `CREATE [UNIQUE] INDEX name ON public.table USING ...`: the
            // same index, on the copy.
            let on_live = format!(" ON public.{table} ");
            let on_live_bare = format!(" ON public.{} ", table.trim_matches('"'));
            let on_copy = format!(" ON {schema}.{table} ");
            let definition =
                definition
                    .replacen(&on_live, &on_copy, 1)
                    .replacen(&on_live_bare, &on_copy, 1);
            if !definition.contains(&on_copy) {
                tracing::warn!(index = %name, %definition, "index definition not understood; skipped");
                continue;
            }
            sqlx::query(&definition).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

/// A fold loaded into its copies, which are then indexed; statistics for
/// the filled copies either way, before they serve.
async fn load_and_index(conn: &mut PgConnection, target: &mut Target) -> Result<(), RebuildError> {
    if let Some(mut memory) = target.memory.take() {
        memory.load(conn).await?;
        let schema = ident(&target.schema);
        for table in target.projection.tables() {
            add_constraints(conn, &schema, &ident(table)).await?;
        }
        create_indexes(conn, target).await?;
    }
    analyze(conn, target).await?;
    Ok(())
}

/// Planner statistics for the filled copies, before they serve.
async fn analyze(conn: &mut PgConnection, target: &Target) -> Result<(), sqlx::Error> {
    let schema = ident(&target.schema);
    for table in target.projection.tables() {
        sqlx::query(&format!("ANALYZE {schema}.{}", ident(table)))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Pages of the log to a fold in memory, and the task that folds them.
type Folding = (
    mpsc::Sender<(Arc<Vec<RecordedEvent>>, Arc<dyn Projection>)>,
    tokio::task::JoinHandle<Result<Box<dyn MemoryFold>, ProjectionError>>,
);

/// Starts folding pages into `memory` in a task of its own.
fn fold_in_task(target: &mut Target, mut memory: Box<dyn MemoryFold>) -> Folding {
    target.folds_in_memory = true;
    let (pages, mut receive) = mpsc::channel::<(Arc<Vec<RecordedEvent>>, Arc<dyn Projection>)>(2);
    let task = tokio::spawn(async move {
        while let Some((page, projection)) = receive.recv().await {
            for event in page.iter().filter(|e| projection.handles(&e.event_type)) {
                memory.apply(event)?;
            }
        }
        Ok(memory)
    });
    (pages, task)
}

/// Applies one page of the log to a projection's copies, with the
/// rebuild's progress, in one transaction.
async fn apply_page(
    conn: &mut PgConnection,
    target: &mut Target,
    page: &[RecordedEvent],
    end: Position,
) -> Result<(), RebuildError> {
    let handled: Vec<&RecordedEvent> = page
        .iter()
        .filter(|e| target.projection.handles(&e.event_type))
        .collect();
    if target.folds_in_memory {
        // The fold's task applies them.
        target.done += i64::try_from(handled.len()).unwrap_or(i64::MAX);
        target.position = end;
        sqlx::query(
            "UPDATE public.projection_rebuilds SET events_done = $2, updated_at = now()
             WHERE rebuild_id = $1",
        )
        .bind(target.id)
        .bind(target.done)
        .execute(&mut *conn)
        .await?;
        return Ok(());
    }
    let mut tx = conn.begin().await?;
    if !handled.is_empty() {
        target.projection.apply_all(&mut tx, &handled).await?;
    }
    let done = target.done + i64::try_from(handled.len()).unwrap_or(i64::MAX);
    sqlx::query(
        "UPDATE public.projection_rebuilds SET events_done = $2, updated_at = now()
         WHERE rebuild_id = $1",
    )
    .bind(target.id)
    .bind(done)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    target.done = done;
    target.position = end;
    Ok(())
}

/// Swaps the filled copies in for the live tables (see the module's
/// documentation), trying again when readers hold the live tables too long.
async fn swap(
    pool: &PgPool,
    conn: &mut PgConnection,
    target: &mut Target,
) -> Result<(), RebuildError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match try_swap(pool, conn, target).await {
            Ok(()) => return Ok(()),
            // 55P03: lock_not_available (the lock timeout).
            Err(RebuildError::Database(sqlx::Error::Database(db)))
                if db.code().as_deref() == Some("55P03") && attempt < SWAP_ATTEMPTS =>
            {
                tracing::info!(
                    projection = target.projection.name(),
                    attempt,
                    "the live tables are busy; swapping again shortly"
                );
                tokio::time::sleep(Duration::from_millis(200) * attempt).await;
            }
            Err(error) => return Err(error),
        }
    }
}

async fn try_swap(
    pool: &PgPool,
    conn: &mut PgConnection,
    target: &mut Target,
) -> Result<(), RebuildError> {
    let name = target.projection.name();
    let mut tx = conn.begin().await?;
    sqlx::query(&format!("SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'"))
        .execute(&mut *tx)
        .await?;
    // The live projection's checkpoint, locked: the live runner takes it
    // first in every batch, so from here on it writes nothing.
    sqlx::query(
        "INSERT INTO public.subscriber_checkpoints (subscriber, position_major, position_minor)
         VALUES ($1, 0, 0) ON CONFLICT (subscriber) DO NOTHING",
    )
    .bind(name)
    .execute(&mut *tx)
    .await?;
    let (major, minor): (i64, i64) = sqlx::query_as(
        "SELECT position_major, position_minor FROM public.subscriber_checkpoints
         WHERE subscriber = $1 FOR UPDATE",
    )
    .bind(name)
    .fetch_one(&mut *tx)
    .await?;
    let live = Position::new(major.unsigned_abs(), minor.unsigned_abs());
    let (position, caught_up) = catch_up(pool, &mut tx, target, live).await?;
    sqlx::query("SET LOCAL search_path TO public")
        .execute(&mut *tx)
        .await?;
    swap_tables(&mut tx, target).await?;
    let (major, minor) = (
        i64::try_from(position.major()).unwrap_or(i64::MAX),
        i64::try_from(position.minor()).unwrap_or(i64::MAX),
    );
    sqlx::query(
        "UPDATE subscriber_checkpoints
         SET position_major = $2, position_minor = $3, updated_at = now()
         WHERE subscriber = $1",
    )
    .bind(name)
    .bind(major)
    .bind(minor)
    .execute(&mut *tx)
    .await?;
    let done = target.done + caught_up;
    sqlx::query(
        "UPDATE projection_rebuilds
         SET state = 'swapped', events_done = $2, finished_at = now(), updated_at = now()
         WHERE rebuild_id = $1",
    )
    .bind(target.id)
    .bind(done)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    target.done = done;
    target.position = position;
    tracing::info!(projection = name, %position, events = done, "rebuilt read model swapped in");
    Ok(())
}

/// Applies to the copies whatever the live projection applied beyond them
/// (up to `live`); returns the copies' position and how many events that was.
async fn catch_up(
    pool: &PgPool,
    conn: &mut PgConnection,
    target: &Target,
    live: Position,
) -> Result<(Position, i64), RebuildError> {
    let mut at = target.position;
    let mut applied = 0i64;
    while at < live {
        // The log is immutable up to `live`: any connection reads it alike.
        let page = read_between(pool, at, live).await?;
        let Some(end) = page.last().map(|e| e.position) else {
            break;
        };
        let handled: Vec<&RecordedEvent> = page
            .iter()
            .filter(|e| target.projection.handles(&e.event_type))
            .collect();
        if !handled.is_empty() {
            target.projection.apply_all(&mut *conn, &handled).await?;
        }
        applied += i64::try_from(handled.len()).unwrap_or(i64::MAX);
        at = end;
    }
    Ok((at.max(live), applied))
}

/// A view over a table being swapped, to be made again.
#[derive(sqlx::FromRow)]
struct DependentView {
    name: String,
    definition: String,
    options: Option<Vec<String>>,
    comment: Option<String>,
    /// `COMMENT ON COLUMN` statements giving its columns' comments again
    /// (analytics consumers read them as documentation).
    column_comments: Vec<String>,
}

/// Views over `tables` (and views over those), deepest first.
async fn dependent_views(
    conn: &mut PgConnection,
    tables: &[String],
) -> Result<Vec<DependentView>, sqlx::Error> {
    sqlx::query_as(
        "WITH RECURSIVE dependent (oid, depth) AS (
             SELECT DISTINCT r.ev_class, 1
             FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
             WHERE d.classid = 'pg_rewrite'::regclass
               AND d.refobjid = ANY($1::text[]::regclass[]) AND r.ev_class <> d.refobjid
             UNION
             SELECT r.ev_class, dependent.depth + 1
             FROM dependent JOIN pg_depend d ON d.refobjid = dependent.oid
             JOIN pg_rewrite r ON r.oid = d.objid
             WHERE d.classid = 'pg_rewrite'::regclass AND r.ev_class <> d.refobjid
         ), deepest AS (
             SELECT oid, max(depth) AS depth FROM dependent GROUP BY oid
         )
         SELECT c.oid::regclass::text AS name, pg_get_viewdef(c.oid) AS definition,
                c.reloptions AS options, obj_description(c.oid, 'pg_class') AS comment,
                ARRAY(
                    SELECT format('COMMENT ON COLUMN %s.%I IS %L', c.oid::regclass, a.attname,
                                  col_description(c.oid, a.attnum))
                    FROM pg_attribute a
                    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                      AND col_description(c.oid, a.attnum) IS NOT NULL
                    ORDER BY a.attnum
                ) AS column_comments
         FROM deepest d JOIN pg_class c ON c.oid = d.oid
         WHERE c.relkind = 'v'
         ORDER BY d.depth DESC",
    )
    .bind(tables)
    .fetch_all(conn)
    .await
}

/// Moves the live tables out and the copies in under the same names, with
/// the live ones' comments and grants, and makes the views over them again.
async fn swap_tables(conn: &mut PgConnection, target: &Target) -> Result<(), sqlx::Error> {
    let schema = ident(&target.schema);
    let retired = ident(&format!("retired_{}", target.schema));
    let tables: Vec<String> = target
        .projection
        .tables()
        .iter()
        .map(|t| format!("public.{}", ident(t)))
        .collect();
    let views = dependent_views(&mut *conn, &tables).await?;
    let mut regrants = Vec::new();
    for view in &views {
        regrants.extend(grants(&mut *conn, &view.name).await?);
    }
    for view in &views {
        sqlx::query(&format!("DROP VIEW {}", view.name))
            .execute(&mut *conn)
            .await?;
    }
    for table in &tables {
        regrants.extend(grants(&mut *conn, table).await?);
        sqlx::query(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {retired} CASCADE"))
        .execute(&mut *conn)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {retired}"))
        .execute(&mut *conn)
        .await?;
    for table in target.projection.tables() {
        let table = ident(table);
        let comment: Option<String> =
            sqlx::query_scalar("SELECT obj_description(('public.' || $1)::regclass, 'pg_class')")
                .bind(&table)
                .fetch_one(&mut *conn)
                .await?;
        sqlx::query(&format!("ALTER TABLE public.{table} SET SCHEMA {retired}"))
            .execute(&mut *conn)
            .await?;
        sqlx::query(&format!("ALTER TABLE {schema}.{table} SET SCHEMA public"))
            .execute(&mut *conn)
            .await?;
        if let Some(comment) = comment {
            sqlx::query(&format!(
                "COMMENT ON TABLE public.{table} IS {}",
                literal(&comment)
            ))
            .execute(&mut *conn)
            .await?;
        }
    }
    for view in views.iter().rev() {
        let with = view
            .options
            .as_ref()
            .filter(|o| !o.is_empty())
            .map(|o| format!(" WITH ({})", o.join(", ")))
            .unwrap_or_default();
        sqlx::query(&format!(
            "CREATE VIEW {}{with} AS {}",
            view.name, view.definition
        ))
        .execute(&mut *conn)
        .await?;
        if let Some(comment) = &view.comment {
            sqlx::query(&format!(
                "COMMENT ON VIEW {} IS {}",
                view.name,
                literal(comment)
            ))
            .execute(&mut *conn)
            .await?;
        }
        for statement in &view.column_comments {
            sqlx::query(statement).execute(&mut *conn).await?;
        }
    }
    for grant in &regrants {
        sqlx::query(grant).execute(&mut *conn).await?;
    }
    sqlx::query(&format!("DROP SCHEMA {retired} CASCADE"))
        .execute(&mut *conn)
        .await?;
    sqlx::query(&format!("DROP SCHEMA {schema}"))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The log between two positions (after `after`, up to `until`), a page.
async fn read_between(
    pool: &PgPool,
    after: Position,
    until: Position,
) -> Result<Vec<RecordedEvent>, EventStoreError> {
    let page = PgEventStore::read_after(pool, after, &Narrowed::default(), PAGE).await?;
    Ok(page
        .into_iter()
        .take_while(|e| e.position <= until)
        .collect())
}

/// The statements that give `relation`'s current grants again (to roles
/// other than its owner, who keeps every right anyway).
async fn grants(conn: &mut PgConnection, relation: &str) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT a.privilege_type,
                CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END
         FROM pg_class c, aclexplode(c.relacl) a
         LEFT JOIN pg_roles r ON r.oid = a.grantee
         WHERE c.oid = $1::regclass AND a.grantee <> c.relowner",
    )
    .bind(relation)
    .fetch_all(&mut *conn)
    .await?;
    let mut by_grantee: HashMap<String, Vec<String>> = HashMap::new();
    for (privilege, grantee) in rows {
        by_grantee.entry(grantee).or_default().push(privilege);
    }
    Ok(by_grantee
        .into_iter()
        .map(|(grantee, privileges)| {
            format!("GRANT {} ON {relation} TO {grantee}", privileges.join(", "))
        })
        .collect())
}

/// A single-quoted SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
