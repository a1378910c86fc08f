//! Reprocessing inbound history: stored received activities interpreted
//! again with the current code (those stored as unsupported before support
//! was added, say).
//!
//! Reprocessing is idempotent and sends nothing: what it appends has ids
//! derived from the received activity, so nothing already in the log is
//! appended twice, and carries the run's id, which holds its deliveries.
//! The side effects it would have (an Accept that was never sent) are listed
//! for the admin and sent only once released (`ReprocessedEffectsReleased`).
//! Activities whose meaning is already in the log are left as they are:
//! deciding them again against today's state would record misleading
//! outcomes ("already following").

use chorus_domain::admin::{
    InboundReprocessed, InboundReprocessingRequested, InboundSelection, ReprocessedEffectsReleased,
    admin_stream,
};
use chorus_domain::outbound::outbound;
use chorus_domain::remote::{ActivityReceived, ActivityReprocessed, received_stream};
use chorus_domain::{
    DomainEvent, EventId, EventStore, EventStoreError, ExpectedVersion, Metadata, Position,
};
use chorus_postgres::PgEventStore;
use chrono::Utc;
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use crate::app::AppError;
use crate::federation::interpret::{REPROCESS, Reinterpretation, Reinterpreter};

/// Activities read from the selection at a time.
const PAGE: i64 = 500;

/// Why a reprocessing request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ReprocessError {
    #[error("`{0}` is not an outcome (unsupported, refused, ignored or applied)")]
    InvalidOutcome(String),
    #[error("no reprocessing run {0}")]
    UnknownRun(Uuid),
    #[error("reprocessing run {0} has not finished")]
    Unfinished(Uuid),
    #[error("reprocessing run {0} held nothing to send")]
    NothingHeld(Uuid),
    #[error("what reprocessing run {0} held was released already")]
    AlreadyReleased(Uuid),
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("event store error")]
    Store(#[from] EventStoreError),
}

/// What a reprocessing would take: how many activities, by type.
#[derive(Clone, Debug, Default)]
pub struct Preview {
    pub activities: i64,
    pub by_type: Vec<(String, i64)>,
}

/// The selection as SQL conditions on `received_activities` (`$1`…`$8`).
const SELECTED: &str = "
    ($1::bigint IS NULL OR (position_major, position_minor) > ($1, $2))
    AND ($3::bigint IS NULL OR (position_major, position_minor) <= ($3, $4))
    AND ($5::timestamptz IS NULL OR received_at >= $5)
    AND ($6::timestamptz IS NULL OR received_at < $6)
    AND ($7::text IS NULL OR remote_host = $7)
    AND ($8::text IS NULL OR activity_type = $8)
    AND ($9::text IS NULL OR coalesce(outcome, 'applied') = $9)";

fn parts(position: Option<Position>) -> (Option<i64>, Option<i64>) {
    match position {
        Some(p) => (
            Some(i64::try_from(p.major()).unwrap_or(i64::MAX)),
            Some(i64::try_from(p.minor()).unwrap_or(i64::MAX)),
        ),
        None => (None, None),
    }
}

fn check(selection: &InboundSelection) -> Result<(), ReprocessError> {
    match selection.outcome.as_deref() {
        None | Some("unsupported" | "refused" | "ignored" | "applied") => Ok(()),
        Some(other) => Err(ReprocessError::InvalidOutcome(other.to_owned())),
    }
}

fn bind<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    s: &'q InboundSelection,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    let (after_major, after_minor) = parts(s.after);
    let (until_major, until_minor) = parts(s.until);
    query
        .bind(after_major)
        .bind(after_minor)
        .bind(until_major)
        .bind(until_minor)
        .bind(s.from)
        .bind(s.to)
        .bind(s.host.as_deref().map(str::to_ascii_lowercase))
        .bind(s.activity_type.as_deref())
        .bind(s.outcome.as_deref())
}

/// How many stored activities `selection` takes (a dry run).
pub async fn preview(
    pool: &PgPool,
    selection: &InboundSelection,
) -> Result<Preview, ReprocessError> {
    check(selection)?;
    let by_type: Vec<(String, i64)> = bind(
        sqlx::query_as(&format!(
            "SELECT activity_type, count(*) FROM received_activities WHERE {SELECTED}
             GROUP BY activity_type ORDER BY count(*) DESC, activity_type"
        )),
        selection,
    )
    .fetch_all(pool)
    .await?;
    Ok(Preview {
        activities: by_type.iter().map(|(_, n)| n).sum(),
        by_type,
    })
}

/// The next page of selected activities after `after`: their received
/// events' ids and their outcome so far (`None`: applied).
async fn page(
    pool: &PgPool,
    selection: &InboundSelection,
    after: Option<Position>,
) -> Result<Vec<(Uuid, Option<String>, Position)>, sqlx::Error> {
    let (major, minor) = parts(after);
    let rows: Vec<(Uuid, Option<String>, i64, i64)> = bind(
        sqlx::query_as(&format!(
            "SELECT event_id, outcome, position_major, position_minor FROM received_activities
             WHERE {SELECTED}
               AND ($10::bigint IS NULL OR (position_major, position_minor) > ($10, $11))
             ORDER BY position_major, position_minor
             LIMIT $12"
        )),
        selection,
    )
    .bind(major)
    .bind(minor)
    .bind(PAGE)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, outcome, major, minor)| {
            (
                id,
                outcome,
                Position::new(major.unsigned_abs(), minor.unsigned_abs()),
            )
        })
        .collect())
}

/// A run about to start: recorded, with how many activities it takes.
#[derive(Debug)]
pub struct Run {
    pub id: Uuid,
    pub selection: InboundSelection,
    pub requested_by: String,
    pub activities: i64,
}

/// Records a reprocessing request; [`run`] carries it out.
pub async fn start(
    store: &PgEventStore,
    selection: InboundSelection,
    requested_by: &str,
) -> Result<Run, ReprocessError> {
    let preview = preview(store.pool(), &selection).await?;
    let id = Uuid::now_v7();
    let requested = DomainEvent::InboundReprocessingRequested(InboundReprocessingRequested {
        run_id: id,
        requested_by: requested_by.to_owned(),
        selection: selection.clone(),
        selected: preview.activities,
        requested_at: Utc::now(),
    });
    super::record(store, id, requested_by, &[requested]).await?;
    Ok(Run {
        id,
        selection,
        requested_by: requested_by.to_owned(),
        activities: preview.activities,
    })
}

/// Interprets the selected activities again, one by one in log order, and
/// records what came of it; `progress` is told (done, in all).
pub async fn run(
    reinterpreter: &Reinterpreter,
    store: &PgEventStore,
    run: &Run,
    progress: watch::Sender<(i64, i64)>,
) -> Result<InboundReprocessed, ReprocessError> {
    let pool = store.pool();
    let mut report = InboundReprocessed {
        run_id: run.id,
        activities: 0,
        applied: 0,
        unchanged: 0,
        not_applied: 0,
        failed: 0,
        held: Vec::new(),
        finished_at: Utc::now(),
    };
    let mut after = None;
    loop {
        let rows = page(pool, &run.selection, after).await?;
        let Some(last) = rows.last().map(|r| r.2) else {
            break;
        };
        after = Some(last);
        let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
        let events = PgEventStore::read_ids(pool, &ids).await?;
        for event in events {
            let before = rows
                .iter()
                .find(|r| r.0 == event.id.0)
                .and_then(|r| r.1.clone());
            let Ok(Some(DomainEvent::ActivityReceived(received))) =
                DomainEvent::from_recorded(&event)
            else {
                report.failed += 1;
                continue;
            };
            report.activities += 1;
            match one(
                reinterpreter,
                store,
                run.id,
                &event,
                &received,
                before.as_deref(),
            )
            .await
            {
                Ok(Change::Applied) => report.applied += 1,
                Ok(Change::NotApplied) => report.not_applied += 1,
                Ok(Change::Unchanged) => report.unchanged += 1,
                Err(error) => {
                    tracing::warn!(activity = %received.activity_id, %error, source = ?std::error::Error::source(&error), "reprocessing an activity failed");
                    report.failed += 1;
                }
            }
            progress.send_replace((
                i64::try_from(report.activities + report.failed).unwrap_or(i64::MAX),
                run.activities,
            ));
        }
    }
    report.held = held(pool, reinterpreter.base_url(), run.id).await?;
    report.finished_at = Utc::now();
    super::record(
        store,
        run.id,
        &run.requested_by,
        &[DomainEvent::InboundReprocessed(report.clone())],
    )
    .await?;
    Ok(report)
}

/// What became of one activity.
enum Change {
    Applied,
    NotApplied,
    Unchanged,
}

async fn one(
    reinterpreter: &Reinterpreter,
    store: &PgEventStore,
    run: Uuid,
    event: &chorus_domain::RecordedEvent,
    received: &ActivityReceived,
    before: Option<&str>,
) -> Result<Change, AppError> {
    let now = match reinterpreter.reinterpret(event, received, run).await {
        Ok(now) => now,
        // Part of what it would append is in the log already: its meaning
        // was recorded before, and must not be recorded again in part.
        Err(AppError::Store(EventStoreError::PartialDuplicate { .. })) => {
            return Ok(Change::Unchanged);
        }
        Err(error) => return Err(error),
    };
    let (outcome, reason) = match now {
        Reinterpretation::Applied => {
            let appended: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM events
                 WHERE metadata ? 'reprocess' AND metadata->>'reprocess' = $1
                   AND metadata->>'causation_id' = $2",
            )
            .bind(run.to_string())
            .bind(event.id.to_string())
            .fetch_one(store.pool())
            .await?;
            if appended == 0 {
                return Ok(Change::Unchanged);
            }
            (None, None)
        }
        Reinterpretation::NotApplied(outcome, reason) => {
            let label = outcome.as_str();
            // Applied before (its meaning is in the log), or not applied
            // for the same kind of reason as before: nothing to say.
            if before.is_none_or(|b| b == label) {
                return Ok(Change::Unchanged);
            }
            (Some(outcome), Some(reason))
        }
    };
    let applied = outcome.is_none();
    let reprocessed = DomainEvent::ActivityReprocessed(ActivityReprocessed {
        activity_id: received.activity_id.clone(),
        activity_type: received.activity_type.clone(),
        run_id: run,
        outcome,
        reason,
    });
    let mut metadata = Metadata {
        actor: Some(received.actor.clone()),
        ..Metadata::caused_by(event)
    };
    metadata.extra.insert(
        REPROCESS.to_owned(),
        serde_json::Value::String(run.to_string()),
    );
    let new_event = reprocessed
        .to_new_event()
        .map_err(|e| AppError::Invalid(e.to_string()))?
        .with_id(EventId::derived(event.id, &format!("reprocess-{run}")))
        .with_metadata(metadata);
    store
        .append(
            &received_stream(&received.activity_id),
            ExpectedVersion::Any,
            vec![new_event],
        )
        .await?;
    Ok(if applied {
        Change::Applied
    } else {
        Change::NotApplied
    })
}

/// The events `run` appended that would send something.
async fn held(pool: &PgPool, base_url: &str, run: Uuid) -> Result<Vec<Uuid>, ReprocessError> {
    Ok(effects_of(pool, base_url, run)
        .await?
        .into_iter()
        .map(|e| e.event_id)
        .collect())
}

/// A side effect a reprocessing holds: an activity it would send.
#[derive(Clone, Debug)]
pub struct HeldEffect {
    pub event_id: Uuid,
    pub event_type: String,
    pub activity_id: String,
    pub activity_type: String,
    pub actor: String,
    /// Whom it is addressed to (followers collections included).
    pub recipients: Vec<String>,
}

/// The activities of local actors (which deliveries would send) among the
/// events `run` appended.
async fn effects_of(
    pool: &PgPool,
    base_url: &str,
    run: Uuid,
) -> Result<Vec<HeldEffect>, ReprocessError> {
    let local = format!("{}/", base_url.trim_end_matches('/'));
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT event_id FROM events WHERE metadata ? 'reprocess' AND metadata->>'reprocess' = $1
         ORDER BY transaction_id, seq",
    )
    .bind(run.to_string())
    .fetch_all(pool)
    .await?;
    let mut effects = Vec::new();
    for event in PgEventStore::read_ids(pool, &ids).await? {
        let Ok(Some(decoded)) = DomainEvent::from_recorded(&event) else {
            continue;
        };
        let Some(out) = outbound(&decoded).filter(|o| o.actor.starts_with(&local)) else {
            continue;
        };
        let text = |field: &str| {
            out.activity
                .get(field)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        effects.push(HeldEffect {
            event_id: event.id.0,
            event_type: event.event_type.clone(),
            activity_id: text("id"),
            activity_type: text("type"),
            actor: out.actor.to_owned(),
            recipients: out.recipients,
        });
    }
    Ok(effects)
}

/// A run as its admin stream tells it.
#[derive(Clone, Debug)]
pub struct RunStatus {
    pub requested: InboundReprocessingRequested,
    pub finished: Option<InboundReprocessed>,
    pub released: Option<ReprocessedEffectsReleased>,
}

/// A run by its id.
pub async fn status(store: &PgEventStore, run: Uuid) -> Result<Option<RunStatus>, ReprocessError> {
    let events = store.read_stream(&admin_stream(run), 1, 100).await?;
    let mut status: Option<RunStatus> = None;
    for event in &events {
        match DomainEvent::from_recorded(event) {
            Ok(Some(DomainEvent::InboundReprocessingRequested(requested))) => {
                status = Some(RunStatus {
                    requested,
                    finished: None,
                    released: None,
                });
            }
            Ok(Some(DomainEvent::InboundReprocessed(finished))) => {
                if let Some(s) = status.as_mut() {
                    s.finished = Some(finished);
                }
            }
            Ok(Some(DomainEvent::ReprocessedEffectsReleased(released))) => {
                if let Some(s) = status.as_mut() {
                    s.released = Some(released);
                }
            }
            _ => {}
        }
    }
    Ok(status)
}

/// The side effects a finished run holds.
pub async fn effects(
    store: &PgEventStore,
    base_url: &str,
    run: Uuid,
) -> Result<Vec<HeldEffect>, ReprocessError> {
    let status = status(store, run)
        .await?
        .ok_or(ReprocessError::UnknownRun(run))?;
    let finished = status.finished.ok_or(ReprocessError::Unfinished(run))?;
    Ok(effects_of(store.pool(), base_url, run)
        .await?
        .into_iter()
        .filter(|e| finished.held.contains(&e.event_id))
        .collect())
}

/// Releases what a finished run holds: the delivery planner plans it now.
pub async fn release(
    store: &PgEventStore,
    run: Uuid,
    requested_by: &str,
) -> Result<ReprocessedEffectsReleased, ReprocessError> {
    let status = status(store, run)
        .await?
        .ok_or(ReprocessError::UnknownRun(run))?;
    let finished = status.finished.ok_or(ReprocessError::Unfinished(run))?;
    if status.released.is_some() {
        return Err(ReprocessError::AlreadyReleased(run));
    }
    if finished.held.is_empty() {
        return Err(ReprocessError::NothingHeld(run));
    }
    let released = ReprocessedEffectsReleased {
        run_id: run,
        requested_by: requested_by.to_owned(),
        events: finished.held,
        released_at: Utc::now(),
    };
    super::record(
        store,
        run,
        requested_by,
        &[DomainEvent::ReprocessedEffectsReleased(released.clone())],
    )
    .await?;
    Ok(released)
}
