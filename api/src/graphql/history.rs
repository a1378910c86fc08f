//! Admins' control over history: projections and their rebuilds.

use async_graphql::{Context, Enum, SimpleObject};
use chorus_projections::rebuild::{self, RebuildError, RebuildState as State, RebuildStatus};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::deliveries::admin_only;
use super::{Result, Services, error, internal};
use crate::history::rebuilds;

/// Where a rebuild stands.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum RebuildState {
    /// Filling the copies, or swapping them in.
    Running,
    /// The rebuilt tables replaced the live ones.
    Swapped,
    /// The live tables were left as they were; `error` says why.
    Failed,
}

/// A rebuild of a read model from the log.
#[derive(SimpleObject, Clone, Debug)]
pub struct ProjectionRebuild {
    pub id: Uuid,
    pub projection: String,
    pub state: RebuildState,
    /// Who asked: an admin's actor id, or `cli`.
    pub requested_by: Option<String>,
    /// Events applied to the rebuilt tables so far.
    pub events_done: i64,
    /// Events of the types the projection reads, in the log at the start.
    pub events_total: i64,
    pub events_per_second: f64,
    /// Seconds left at the rate so far, while running.
    pub eta_seconds: Option<f64>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

impl From<RebuildStatus> for ProjectionRebuild {
    fn from(s: RebuildStatus) -> Self {
        Self {
            events_per_second: s.events_per_second(),
            eta_seconds: s.eta_seconds(),
            id: s.id,
            projection: s.projection,
            state: match s.state {
                State::Running => RebuildState::Running,
                State::Swapped => RebuildState::Swapped,
                State::Failed => RebuildState::Failed,
            },
            requested_by: s.requested_by,
            events_done: s.events_done,
            events_total: s.events_total.max(s.events_done),
            started_at: s.started_at,
            finished_at: s.finished_at,
            error: s.error,
        }
    }
}

/// A read model and how far it has got.
#[derive(SimpleObject, Clone, Debug)]
pub struct ProjectionStatus {
    pub name: String,
    /// The last log position applied; null if it never ran.
    pub position: Option<String>,
    /// Events in the log after it (counted up to 1,000,000).
    pub lag_events: i64,
    /// How long the oldest of those has waited; 0 when caught up.
    pub lag_seconds: f64,
    pub last_rebuild: Option<ProjectionRebuild>,
}

/// Every projection (admins only).
pub(crate) async fn projections(ctx: &Context<'_>) -> Result<Vec<ProjectionStatus>> {
    admin_only(ctx).await?;
    let s = ctx.data::<Services>()?;
    Ok(rebuilds::statuses(&s.pool)
        .await
        .map_err(internal)?
        .into_iter()
        .map(|p| ProjectionStatus {
            name: p.name.to_owned(),
            position: p.position.map(|p| p.to_string()),
            lag_events: p.lag_events,
            lag_seconds: p.lag_seconds,
            last_rebuild: p.last_rebuild.map(ProjectionRebuild::from),
        })
        .collect())
}

/// One rebuild (admins only).
pub(crate) async fn rebuild(ctx: &Context<'_>, id: Uuid) -> Result<Option<ProjectionRebuild>> {
    admin_only(ctx).await?;
    let s = ctx.data::<Services>()?;
    Ok(rebuild::status_of(&s.pool, id)
        .await
        .map_err(internal)?
        .map(ProjectionRebuild::from))
}

/// Starts rebuilding the projections called `names` (all when empty), in
/// the background (admins only).
pub(crate) async fn start(ctx: &Context<'_>, names: &[String]) -> Result<Vec<ProjectionRebuild>> {
    let admin = admin_only(ctx).await?;
    let s = ctx.data::<Services>()?;
    let started = rebuilds::spawn(&s.app.store, names, &admin)
        .await
        .map_err(rebuild_error)?;
    tracing::info!(%admin, ?names, "rebuild started");
    Ok(started.into_iter().map(ProjectionRebuild::from).collect())
}

fn rebuild_error(e: RebuildError) -> async_graphql::Error {
    match e {
        RebuildError::UnknownProjection(_) => error("NOT_FOUND", e.to_string()),
        RebuildError::AlreadyRunning(_) => error("ALREADY_RUNNING", e.to_string()),
        other => internal(other),
    }
}
