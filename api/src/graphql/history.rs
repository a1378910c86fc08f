//! Admins' control over history: projections and their rebuilds,
//! reprocessing of inbound activities.

use async_graphql::{Context, Enum, SimpleObject};
use chorus_domain::Position;
use chorus_domain::admin::InboundSelection;
use chorus_projections::rebuild::{self, RebuildError, RebuildState as State, RebuildStatus};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::deliveries::admin_only;
use super::{Result, Services, error, internal};
use crate::federation::interpret::Reinterpreter;
use crate::history::audit;
use crate::history::rebuilds;
use crate::history::redeliver;
use crate::history::replay::{self, ReplayError, ReplayFrom};
use crate::history::reprocess::{self, ReprocessError};

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

/// Which stored inbound activities to reprocess (all when empty).
#[derive(async_graphql::InputObject, Clone, Debug, Default)]
pub struct InboundSelectionInput {
    /// Received strictly after this log position (`<major>.<minor>`).
    pub after: Option<String>,
    /// Received at or before this log position.
    pub until: Option<String>,
    /// Received at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Received before this time.
    pub to: Option<DateTime<Utc>>,
    /// Sent by this remote host.
    pub host: Option<String>,
    /// Of this ActivityStreams type (`Follow`, `Like`, …).
    pub activity_type: Option<String>,
    /// Whose last outcome was this: `unsupported`, `refused`, `ignored` or
    /// `applied`.
    pub outcome: Option<String>,
}

impl InboundSelectionInput {
    fn parse(self) -> Result<InboundSelection> {
        let position = |p: Option<String>| -> Result<Option<Position>> {
            p.map(|p| {
                p.parse::<Position>()
                    .map_err(|e| error("INVALID_INPUT", e.to_string()))
            })
            .transpose()
        };
        Ok(InboundSelection {
            after: position(self.after)?,
            until: position(self.until)?,
            from: self.from,
            to: self.to,
            host: self.host,
            activity_type: self.activity_type,
            outcome: self.outcome,
        })
    }
}

/// How many activities of a type.
#[derive(SimpleObject, Clone, Debug)]
pub struct TypeCount {
    pub activity_type: String,
    pub activities: i64,
}

/// What a reprocessing takes (a dry run), or has taken.
#[derive(SimpleObject, Clone, Debug)]
pub struct ReprocessPreview {
    pub activities: i64,
    pub by_type: Vec<TypeCount>,
}

/// An activity a reprocessing would send, held until released.
#[derive(SimpleObject, Clone, Debug)]
pub struct HeldEffect {
    pub event_id: Uuid,
    pub event_type: String,
    pub activity_id: String,
    pub activity_type: String,
    pub actor: String,
    pub recipients: Vec<String>,
}

impl From<reprocess::HeldEffect> for HeldEffect {
    fn from(e: reprocess::HeldEffect) -> Self {
        Self {
            event_id: e.event_id,
            event_type: e.event_type,
            activity_id: e.activity_id,
            activity_type: e.activity_type,
            actor: e.actor,
            recipients: e.recipients,
        }
    }
}

/// A reprocessing run, as the log records it.
#[derive(SimpleObject, Clone, Debug)]
pub struct ReprocessingRun {
    pub id: Uuid,
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    /// Activities the selection took when it started.
    pub selected: i64,
    pub finished: bool,
    pub finished_at: Option<DateTime<Utc>>,
    /// Activities interpreted again.
    pub activities: u64,
    /// Of those, the ones that now changed something.
    pub applied: u64,
    /// The ones whose meaning was already in the log.
    pub unchanged: u64,
    /// The ones still not applied, now for another kind of reason.
    pub not_applied: u64,
    pub failed: u64,
    /// What it would send, held until released.
    pub held: Vec<HeldEffect>,
    pub released_at: Option<DateTime<Utc>>,
}

fn reprocess_error(e: ReprocessError) -> async_graphql::Error {
    match e {
        ReprocessError::InvalidOutcome(_) => error("INVALID_INPUT", e.to_string()),
        ReprocessError::UnknownRun(_) => error("NOT_FOUND", e.to_string()),
        ReprocessError::Unfinished(_) => error("NOT_FINISHED", e.to_string()),
        ReprocessError::NothingHeld(_) => error("NOTHING_HELD", e.to_string()),
        ReprocessError::AlreadyReleased(_) => error("ALREADY_RELEASED", e.to_string()),
        other => internal(other),
    }
}

/// What a selection would take (admins only).
pub(crate) async fn preview(
    ctx: &Context<'_>,
    selection: InboundSelectionInput,
) -> Result<ReprocessPreview> {
    admin_only(ctx).await?;
    let s = ctx.data::<Services>()?;
    let preview = reprocess::preview(&s.pool, &selection.parse()?)
        .await
        .map_err(reprocess_error)?;
    Ok(ReprocessPreview {
        activities: preview.activities,
        by_type: preview
            .by_type
            .into_iter()
            .map(|(activity_type, activities)| TypeCount {
                activity_type,
                activities,
            })
            .collect(),
    })
}

/// Starts reprocessing in the background (admins only).
pub(crate) async fn reprocess_inbound(
    ctx: &Context<'_>,
    selection: InboundSelectionInput,
) -> Result<ReprocessingRun> {
    let admin = admin_only(ctx).await?;
    let s = ctx.data::<Services>()?;
    let federation = s
        .federation
        .clone()
        .ok_or_else(|| error("UNAVAILABLE", "federation is not running on this server"))?;
    let started = reprocess::start(&s.app.store, selection.parse()?, &admin)
        .await
        .map_err(reprocess_error)?;
    let run_id = started.id;
    tracing::info!(%admin, run = %run_id, activities = started.activities, "reprocessing started");
    let reinterpreter = Reinterpreter::new(s.app.clone(), federation);
    let store = s.app.store.clone();
    tokio::spawn(async move {
        let (progress, _) = tokio::sync::watch::channel((0, 0));
        if let Err(error) = reprocess::run(&reinterpreter, &store, &started, progress).await {
            tracing::error!(run = %started.id, %error, "reprocessing failed");
        }
    });
    run_status(&s.app, run_id)
        .await?
        .ok_or_else(|| internal("run not recorded"))
}

/// A run by its id (admins only).
pub(crate) async fn reprocessing(ctx: &Context<'_>, id: Uuid) -> Result<Option<ReprocessingRun>> {
    admin_only(ctx).await?;
    let s = ctx.data::<Services>()?;
    run_status(&s.app, id).await
}

async fn run_status(app: &crate::app::App, id: Uuid) -> Result<Option<ReprocessingRun>> {
    let store = &app.store;
    let Some(status) = reprocess::status(store, id)
        .await
        .map_err(reprocess_error)?
    else {
        return Ok(None);
    };
    let held = match &status.finished {
        Some(_) => reprocess::effects(store, &app.base_url, id)
            .await
            .map_err(reprocess_error)?
            .into_iter()
            .map(HeldEffect::from)
            .collect(),
        None => Vec::new(),
    };
    let f = status.finished.as_ref();
    Ok(Some(ReprocessingRun {
        id,
        requested_by: status.requested.requested_by.clone(),
        requested_at: status.requested.requested_at,
        selected: status.requested.selected,
        finished: f.is_some(),
        finished_at: f.map(|f| f.finished_at),
        activities: f.map_or(0, |f| f.activities),
        applied: f.map_or(0, |f| f.applied),
        unchanged: f.map_or(0, |f| f.unchanged),
        not_applied: f.map_or(0, |f| f.not_applied),
        failed: f.map_or(0, |f| f.failed),
        held,
        released_at: status.released.map(|r| r.released_at),
    }))
}

/// Sends what a finished run holds (admins only).
pub(crate) async fn release(ctx: &Context<'_>, id: Uuid) -> Result<ReprocessingRun> {
    let admin = admin_only(ctx).await?;
    let s = ctx.data::<Services>()?;
    reprocess::release(&s.app.store, id, &admin)
        .await
        .map_err(reprocess_error)?;
    tracing::info!(%admin, run = %id, "held effects released");
    run_status(&s.app, id)
        .await?
        .ok_or_else(|| internal("run not recorded"))
}

/// A subscriber of the log and how far it has got.
#[derive(SimpleObject, Clone, Debug)]
pub struct SubscriberStatus {
    pub name: String,
    pub position: String,
    pub lag_events: i64,
    pub lag_seconds: f64,
    /// The process running it now, as its lease's session names it
    /// (`chorus ROLE HOST pid N`); none when no process holds its lease.
    pub held_by: Option<String>,
}

/// Every subscriber with a checkpoint: projections, the interpreter, the
/// delivery planner… (admins only).
pub(crate) async fn subscribers(ctx: &Context<'_>) -> Result<Vec<SubscriberStatus>> {
    admin_only(ctx).await?;
    let s = ctx.data::<Services>()?;
    let mut out = Vec::new();
    let positions = chorus_postgres::checkpoints::list(&s.pool)
        .await
        .map_err(internal)?;
    let leases: Vec<String> = positions
        .iter()
        .map(|(name, _)| crate::roles::lease_of(name))
        .collect();
    let holders = chorus_postgres::leases::holders(&s.pool, &leases)
        .await
        .map_err(internal)?;
    for (name, position) in positions {
        let (lag_events, lag_seconds) = rebuilds::lag(&s.pool, position).await.map_err(internal)?;
        let lease = crate::roles::lease_of(&name);
        let held_by = holders
            .iter()
            .find(|(l, _)| *l == lease)
            .and_then(|(_, holder)| holder.as_ref().map(|(holder, _)| holder.clone()));
        out.push(SubscriberStatus {
            name,
            position: position.to_string(),
            lag_events,
            lag_seconds,
            held_by,
        });
    }
    Ok(out)
}

/// What a replay does, or would do.
#[derive(SimpleObject, Clone, Debug)]
pub struct SubscriberReplay {
    pub subscriber: String,
    /// Where it was.
    pub from: Option<String>,
    /// Where it is now (or would be).
    pub to: String,
    /// The events it will see again.
    pub events: u64,
    /// False for a dry run.
    pub applied: bool,
}

/// Moves a subscriber back (admins only).
pub(crate) async fn replay(
    ctx: &Context<'_>,
    name: String,
    to_position: Option<String>,
    to_time: Option<DateTime<Utc>>,
    dry_run: bool,
) -> Result<SubscriberReplay> {
    let admin = admin_only(ctx).await?;
    let s = ctx.data::<Services>()?;
    let from = match (to_position, to_time) {
        (Some(p), None) => ReplayFrom::Position(
            p.parse::<Position>()
                .map_err(|e| error("INVALID_INPUT", e.to_string()))?,
        ),
        (None, Some(t)) => ReplayFrom::Time(t),
        _ => {
            return Err(error(
                "INVALID_INPUT",
                "give exactly one of toPosition and toTime",
            ));
        }
    };
    let replay = replay::replay(&s.app.store, &name, from, dry_run, &admin)
        .await
        .map_err(|e| match e {
            ReplayError::UnknownSubscriber(_) => error("NOT_FOUND", e.to_string()),
            ReplayError::Forward { .. } => error("INVALID_INPUT", e.to_string()),
            ReplayError::Rebuilding(_) => error("ALREADY_RUNNING", e.to_string()),
            other => internal(other),
        })?;
    if replay.applied {
        tracing::info!(%admin, subscriber = %name, to = %replay.to, "subscriber replayed");
    }
    Ok(SubscriberReplay {
        subscriber: replay.subscriber,
        from: replay.from.map(|p| p.to_string()),
        to: replay.to.to_string(),
        events: replay.events,
        applied: replay.applied,
    })
}

/// What a redelivery queued.
#[derive(SimpleObject, Clone, Copy, Debug)]
pub struct Redelivery {
    pub activities: u64,
    pub deliveries: u64,
}

/// Delivers again, recording the request (admins only).
pub(crate) async fn redeliver(
    ctx: &Context<'_>,
    what: redeliver::Redelivery,
    inboxes: Vec<String>,
) -> Result<Redelivery> {
    let admin = admin_only(ctx).await?;
    let s = ctx.data::<Services>()?;
    let done = redeliver::redeliver(&s.app.store, what, &inboxes, &admin)
        .await
        .map_err(|e| match e {
            redeliver::RedeliveryError::Admin(e) => super::deliveries::admin_error(e),
            other => internal(other),
        })?;
    tracing::info!(%admin, ?inboxes, activities = done.activities, deliveries = done.deliveries, "redelivery queued");
    Ok(Redelivery {
        activities: done.activities,
        deliveries: done.deliveries,
    })
}

/// What kind of row to account for.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum AuditKind {
    /// `subject`: the post's ActivityPub id (or a local post's id).
    Post,
    /// `subject` follows `object` (actor ids).
    Follow,
    /// `subject` (an actor id) favorited `object` (a post's ActivityPub id).
    Favorite,
    /// `subject` (an actor id) reblogged `object` (a post's ActivityPub id).
    Reblog,
    /// `subject` blocks `object` (actor ids).
    Block,
}

/// An event that shaped a row, or one of its causes.
#[derive(SimpleObject, Clone, Debug)]
pub struct AuditEvent {
    pub position: String,
    pub event_id: Uuid,
    pub event_type: String,
    pub stream_id: String,
    pub recorded_at: DateTime<Utc>,
    /// Who acted: a local actor (a GraphQL mutation or a command) or the
    /// remote actor of an inbound activity.
    pub actor: Option<String>,
    /// The remote host an inbound activity came from.
    pub remote_host: Option<String>,
    /// When an inbound activity arrived.
    pub received_at: Option<DateTime<Utc>>,
    /// How an inbound request's signature was judged (verdict, key id,
    /// signer, scheme).
    pub signature: Option<async_graphql::Json<serde_json::Value>>,
    pub correlation_id: Option<Uuid>,
    pub payload: async_graphql::Json<serde_json::Value>,
}

impl From<&chorus_domain::RecordedEvent> for AuditEvent {
    fn from(e: &chorus_domain::RecordedEvent) -> Self {
        Self {
            position: e.position.to_string(),
            event_id: e.id.0,
            event_type: e.event_type.clone(),
            stream_id: e.stream_id.to_string(),
            recorded_at: e.recorded_at,
            actor: e.metadata.actor.clone(),
            remote_host: e.metadata.remote_host.clone(),
            received_at: e.metadata.received_at,
            signature: e
                .metadata
                .signature
                .as_ref()
                .and_then(|s| serde_json::to_value(s).ok())
                .map(async_graphql::Json),
            correlation_id: e.metadata.correlation_id,
            payload: async_graphql::Json(e.payload.decode().unwrap_or_default()),
        }
    }
}

/// One event of a row's stream, with the chain of events that caused it,
/// nearest first, back to the inbound activity or local command it came from.
#[derive(SimpleObject, Clone, Debug)]
pub struct AuditEntry {
    pub event: AuditEvent,
    pub causes: Vec<AuditEvent>,
}

/// The events that made a row of a read model (admins only).
pub(crate) async fn audit(
    ctx: &Context<'_>,
    kind: AuditKind,
    subject: String,
    object: Option<String>,
) -> Result<Vec<AuditEntry>> {
    admin_only(ctx).await?;
    let s = ctx.data::<Services>()?;
    let object = || {
        object
            .clone()
            .ok_or_else(|| error("INVALID_INPUT", "this kind needs an `object`"))
    };
    let subject = match kind {
        AuditKind::Post => audit::Subject::Post(subject),
        AuditKind::Follow => audit::Subject::Follow {
            follower: subject,
            followee: object()?,
        },
        AuditKind::Favorite => audit::Subject::Favorite {
            actor: subject,
            post: object()?,
        },
        AuditKind::Reblog => audit::Subject::Reblog {
            actor: subject,
            post: object()?,
        },
        AuditKind::Block => audit::Subject::Block {
            blocker: subject,
            blocked: object()?,
        },
    };
    Ok(audit::audit(&s.app.store, &s.app.base_url, &subject)
        .await
        .map_err(internal)?
        .iter()
        .map(|entry| AuditEntry {
            event: AuditEvent::from(&entry.event),
            causes: entry.causes.iter().map(AuditEvent::from).collect(),
        })
        .collect())
}
