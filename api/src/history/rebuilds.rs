//! Rebuilding read models on request, and how far each projection has got.

use chorus_domain::admin::{ProjectionRebuildFinished, ProjectionRebuildRequested, RebuildOutcome};
use chorus_domain::{DomainEvent, Position};
use chorus_postgres::{PgEventStore, checkpoints};
use chorus_projections::rebuild::{self, Rebuild, RebuildError, RebuildState, RebuildStatus};
use chrono::Utc;
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

/// A projection as admins see it.
#[derive(Clone, Debug)]
pub struct ProjectionStatus {
    pub name: &'static str,
    /// The last position applied, if it ever ran.
    pub position: Option<Position>,
    /// Events in the log after it (counted up to [`LAG_CAP`]).
    pub lag_events: i64,
    /// How long the oldest of those has waited; 0 when caught up.
    pub lag_seconds: f64,
    pub last_rebuild: Option<RebuildStatus>,
}

/// Lags are counted up to this many events: beyond, the figure says "at
/// least" and the count stays cheap on a long log.
pub const LAG_CAP: i64 = 1_000_000;

/// Every projection with its position, lag and latest rebuild.
pub async fn statuses(pool: &PgPool) -> Result<Vec<ProjectionStatus>, sqlx::Error> {
    let positions = checkpoints::list(pool).await?;
    let rebuilds = rebuild::latest(pool).await?;
    let mut out = Vec::new();
    for projection in chorus_projections::all() {
        let name = projection.name();
        let position = positions.iter().find(|(n, _)| n == name).map(|(_, p)| *p);
        let (lag_events, lag_seconds) = lag(pool, position.unwrap_or(Position::START)).await?;
        out.push(ProjectionStatus {
            name,
            position,
            lag_events,
            lag_seconds,
            last_rebuild: rebuilds.iter().find(|r| r.projection == name).cloned(),
        });
    }
    Ok(out)
}

/// How many readable events follow `position` (up to [`LAG_CAP`]), and
/// how old the first of them is.
pub async fn lag(pool: &PgPool, position: Position) -> Result<(i64, f64), sqlx::Error> {
    let lag = checkpoints::lag(pool, position, LAG_CAP).await?;
    Ok((lag.events, lag.seconds))
}

/// Rebuilds claimed and recorded, about to run.
#[derive(Debug)]
pub struct Started {
    pub action: Uuid,
    pub rebuild: Rebuild,
    pub requested_by: String,
}

/// Claims rebuilds of the projections called `names` (all when empty) and
/// records the request in the log.
pub async fn start(
    store: &PgEventStore,
    names: &[String],
    requested_by: &str,
) -> Result<Started, RebuildError> {
    let projections = rebuild::select(chorus_projections::all(), names)?;
    let rebuild = Rebuild::begin(store.pool(), projections, requested_by).await?;
    let action = Uuid::now_v7();
    let now = Utc::now();
    let events: Vec<DomainEvent> = rebuild
        .ids()
        .into_iter()
        .map(|(projection, rebuild_id)| {
            DomainEvent::ProjectionRebuildRequested(ProjectionRebuildRequested {
                rebuild_id,
                projection: projection.to_owned(),
                requested_by: requested_by.to_owned(),
                requested_at: now,
            })
        })
        .collect();
    super::record(store, action, requested_by, &events).await?;
    Ok(Started {
        action,
        rebuild,
        requested_by: requested_by.to_owned(),
    })
}

/// Runs claimed rebuilds to the end and records how each ended.
pub async fn run(
    store: &PgEventStore,
    started: Started,
    progress: watch::Sender<(i64, i64)>,
) -> Result<(), RebuildError> {
    let ids: Vec<Uuid> = started
        .rebuild
        .ids()
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    let result = started.rebuild.run(progress).await;
    let mut events = Vec::new();
    for id in ids {
        if let Some(status) = rebuild::status_of(store.pool(), id).await? {
            events.push(DomainEvent::ProjectionRebuildFinished(
                ProjectionRebuildFinished {
                    rebuild_id: id,
                    projection: status.projection.clone(),
                    outcome: if status.state == RebuildState::Swapped {
                        RebuildOutcome::Swapped
                    } else {
                        RebuildOutcome::Failed
                    },
                    events: status.events_done,
                    error: status.error.clone(),
                    finished_at: status.finished_at.unwrap_or_else(Utc::now),
                },
            ));
        }
    }
    if let Err(error) = super::record(store, started.action, &started.requested_by, &events).await {
        tracing::error!(%error, "could not record how a rebuild ended");
    }
    result
}

/// Starts rebuilds in the background (for the GraphQL API); returns their
/// rows as they are at the start.
pub async fn spawn(
    store: &PgEventStore,
    names: &[String],
    requested_by: &str,
) -> Result<Vec<RebuildStatus>, RebuildError> {
    let started = start(store, names, requested_by).await?;
    let ids: Vec<Uuid> = started
        .rebuild
        .ids()
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    let background = store.clone();
    tokio::spawn(async move {
        let (progress, _) = watch::channel((0, 0));
        let _ = run(&background, started, progress).await;
    });
    let mut statuses = Vec::new();
    for id in ids {
        if let Some(status) = rebuild::status_of(store.pool(), id).await? {
            statuses.push(status);
        }
    }
    Ok(statuses)
}

/// The projections' names.
pub fn names() -> Vec<&'static str> {
    chorus_projections::all().iter().map(|p| p.name()).collect()
}
