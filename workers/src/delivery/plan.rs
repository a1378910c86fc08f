//! The delivery planner: a subscriber of the log (checkpoint `deliveries`)
//! that turns each local actor's activity into delivery jobs, in the
//! transaction that advances its checkpoint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chorus_domain::outbound::{body, outbound};
use chorus_domain::{DomainEvent, EventStore, Position, RecordedEvent};
use chorus_postgres::PgEventStore;
use chorus_postgres::checkpoints::{self, Progress};
use futures::StreamExt;
use sqlx::PgPool;
use tokio::sync::{Notify, watch};

/// The planner's checkpoint.
pub const SUBSCRIBER: &str = "deliveries";

/// The metadata key of events an admin's reprocessing appended (its value
/// is the run's id). What they would send is held: they are planned only
/// once a `ReprocessedEffectsReleased` names them.
pub const REPROCESS: &str = "reprocess";

/// Events read per batch.
const BATCH: usize = 512;
/// The longest the checkpoint goes unwritten while nothing is planned.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// The read models a plan reads (followers, actors' inboxes, blocked
/// instances), as far as the log goes: recipients are resolved once they
/// include the planned event.
#[async_trait]
pub trait ReadModels: Send + Sync + std::fmt::Debug {
    /// Returns once the follows, actors and instances read models include
    /// everything up to `position`.
    async fn caught_up(&self, position: Position);
}

/// A running planner (clones watch the same one).
#[derive(Clone, Debug)]
pub struct Planner {
    progress: Progress,
    task: tokio::task::AbortHandle,
}

impl Planner {
    /// Starts planning after the planner's checkpoint. `base_url` tells
    /// local actors (whose activities are delivered) from remote ones;
    /// `planned` is notified whenever jobs were added.
    pub async fn start(
        store: PgEventStore,
        base_url: &str,
        read_models: Arc<dyn ReadModels>,
        planned: Arc<Notify>,
    ) -> Result<Self, sqlx::Error> {
        let start = checkpoints::load(store.pool(), SUBSCRIBER)
            .await?
            .unwrap_or(Position::START);
        let (progress, receiver) = Progress::starting_at(start);
        let local_prefix = format!("{}/", base_url.trim_end_matches('/'));
        let task = tokio::spawn(run(
            store,
            local_prefix,
            read_models,
            planned,
            start,
            progress,
        ))
        .abort_handle();
        Ok(Self {
            progress: receiver,
            task,
        })
    }

    /// Waits until everything up to `position` is planned.
    pub async fn reached(&self, position: Position, timeout: Duration) -> bool {
        self.progress.reached(position, timeout).await
    }

    /// The last position planned.
    pub fn position(&self) -> Position {
        self.progress.position()
    }

    /// Its progress, to follow.
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// Stops planning (its lease was lost); what is committed stays.
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// One activity to plan.
struct Plan {
    event: RecordedEvent,
    actor: String,
    activity_id: String,
    activity_type: String,
    body: String,
    recipients: Vec<String>,
    /// To every remote server known (an account's deletion).
    everyone: bool,
}

async fn run(
    store: PgEventStore,
    local_prefix: String,
    read_models: Arc<dyn ReadModels>,
    planned: Arc<Notify>,
    mut checkpoint: Position,
    progress: watch::Sender<Position>,
) {
    let pool = store.pool().clone();
    let mut last_saved = Instant::now();
    // The checkpoint as stored: each write moves it on from there, and
    // finds out when an admin moved it (a replay).
    let mut saved = checkpoints::load(&pool, SUBSCRIBER).await.ok().flatten();
    'subscribe: loop {
        if pool.is_closed() {
            return;
        }
        let mut events = store.subscribe_all(checkpoint).ready_chunks(BATCH);
        loop {
            let batch = match tokio::time::timeout(CHECKPOINT_EVERY, events.next()).await {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(_idle) => {
                    match checkpoints::settle(&pool, SUBSCRIBER, &mut saved, checkpoint).await {
                        Ok(None) => last_saved = Instant::now(),
                        Ok(Some(moved)) => {
                            tracing::info!(checkpoint = %moved, "the planner's checkpoint was moved; resuming from it");
                            checkpoint = moved;
                            progress.send_replace(moved);
                            continue 'subscribe;
                        }
                        Err(error) => {
                            tracing::warn!(%error, "could not save the planner's checkpoint")
                        }
                    }
                    continue;
                }
            };
            let batch: Vec<RecordedEvent> = match batch.into_iter().collect() {
                Ok(batch) => batch,
                Err(error) => {
                    if pool.is_closed() {
                        return;
                    }
                    tracing::error!(%error, "delivery planner cannot read the log; paused");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue 'subscribe;
                }
            };
            let Some(last) = batch.last().map(|e| e.position) else {
                continue;
            };
            let plans = match plans(&pool, batch, &local_prefix).await {
                Ok(plans) => plans,
                Err(error) => {
                    if pool.is_closed() {
                        return;
                    }
                    tracing::error!(%error, "delivery planner cannot read released events; will retry");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue 'subscribe;
                }
            };
            if plans.is_empty() && last_saved.elapsed() < CHECKPOINT_EVERY {
                checkpoint = last;
                progress.send_replace(last);
                continue;
            }
            if !plans.is_empty() {
                read_models.caught_up(last).await;
            }
            loop {
                match write(&pool, &plans, saved, last).await {
                    Ok(true) => break,
                    Ok(false) => {
                        // Moved by an admin: nothing was written.
                        match checkpoints::load(&pool, SUBSCRIBER).await {
                            Ok(stored) => {
                                saved = stored;
                                checkpoint = stored.unwrap_or(Position::START);
                                progress.send_replace(checkpoint);
                                continue 'subscribe;
                            }
                            Err(error) => {
                                tracing::error!(%error, "delivery planner cannot read its checkpoint; will retry");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    }
                    Err(error) => {
                        if pool.is_closed() {
                            return;
                        }
                        tracing::error!(%error, "delivery planner could not write its jobs; will retry");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            last_saved = Instant::now();
            saved = Some(last);
            checkpoint = last;
            progress.send_replace(last);
            if !plans.is_empty() {
                planned.notify_waiters();
                planned.notify_one();
            }
        }
        // The store closed the subscription (shutdown or a lost connection).
        if pool.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The plans for a batch: each local activity to deliver, except those a
/// reprocessing appended, which wait until an admin releases them.
async fn plans(
    pool: &PgPool,
    batch: Vec<RecordedEvent>,
    local_prefix: &str,
) -> Result<Vec<Plan>, chorus_domain::EventStoreError> {
    let mut plans = Vec::new();
    for event in batch {
        if event.event_type == "ReprocessedEffectsReleased" {
            let Ok(Some(DomainEvent::ReprocessedEffectsReleased(released))) =
                DomainEvent::from_recorded(&event)
            else {
                tracing::error!(event = %event.id, "unreadable release of held effects");
                continue;
            };
            let held = PgEventStore::read_ids(pool, &released.events).await?;
            plans.extend(held.into_iter().filter_map(|e| plan(e, local_prefix)));
        } else if !event.metadata.extra.contains_key(REPROCESS) {
            plans.extend(plan(event, local_prefix));
        }
    }
    Ok(plans)
}

/// The plan for `event`, if it is a local actor's activity to deliver.
fn plan(event: RecordedEvent, local_prefix: &str) -> Option<Plan> {
    // Its content was erased after a deletion (the erasure runs behind the
    // planner, so only a planner that reads the log again sees one): an
    // emptied activity is not sent.
    if chorus_domain::erasure::is_redacted(&event.metadata) {
        return None;
    }
    let decoded = match DomainEvent::from_recorded(&event) {
        Ok(Some(decoded)) => decoded,
        Ok(None) => return None,
        Err(error) => {
            tracing::error!(event = %event.id, %error, "unreadable event; not delivered");
            return None;
        }
    };
    let outbound = outbound(&decoded)?;
    if !outbound.actor.starts_with(local_prefix) {
        return None;
    }
    let text = |field: &str| {
        outbound
            .activity
            .get(field)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    Some(Plan {
        actor: outbound.actor.to_owned(),
        activity_id: text("id"),
        activity_type: text("type"),
        body: body(outbound.activity).to_string(),
        recipients: outbound.recipients,
        everyone: outbound.everyone,
        event,
    })
}

/// Writes the jobs of `plans` and the checkpoint (from `saved` to
/// `checkpoint`), in one transaction; false, writing nothing, when the
/// checkpoint is no longer at `saved`.
async fn write(
    pool: &PgPool,
    plans: &[Plan],
    saved: Option<Position>,
    checkpoint: Position,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if !checkpoints::advance(&mut *tx, SUBSCRIBER, saved, checkpoint).await? {
        return Ok(false);
    }
    for plan in plans {
        let (major, minor) = db_position(plan.event.position);
        sqlx::query(
            "INSERT INTO delivery_activities
                 (event_id, activity_id, activity_type, actor, body, position_major, position_minor)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(plan.event.id.0)
        .bind(&plan.activity_id)
        .bind(&plan.activity_type)
        .bind(&plan.actor)
        .bind(&plan.body)
        .bind(major)
        .bind(minor)
        .execute(&mut *tx)
        .await?;
        // The recipients: the sender's followers when the activity is
        // addressed to them, and every remote actor it names; one job per
        // inbox (an instance's shared inbox stands for all its actors).
        // Local actors, deleted actors and blocked instances get nothing.
        // Followers are those of the activity's position: whoever asked to
        // follow after it (before it was planned) does not get it, and
        // whoever stopped following since does not either. An account's
        // deletion goes to every remote actor known.
        sqlx::query(
            "WITH sender AS (
                 SELECT followers_uri FROM actors WHERE uri = $2 AND local
             ), recipients AS (
                 SELECT a.* FROM follows f JOIN actors a ON a.uri = f.follower
                 WHERE f.followee = $2 AND f.state = 'accepted'
                   AND (f.position_major, f.position_minor) < ($4, $5)
                   AND (SELECT followers_uri FROM sender) = ANY($3)
                 UNION
                 SELECT a.* FROM actors a WHERE a.uri = ANY($3)
                 UNION
                 SELECT a.* FROM actors a WHERE $6 AND NOT a.local
             ), inboxes AS (
                 SELECT DISTINCT ON (coalesce(shared_inbox, inbox))
                        coalesce(shared_inbox, inbox) AS inbox,
                        shared_inbox IS NULL AS personal
                 FROM recipients r
                 WHERE NOT r.local AND r.deleted_at IS NULL
                   AND r.domain NOT IN (SELECT domain FROM blocked_instances)
                 ORDER BY coalesce(shared_inbox, inbox), shared_inbox IS NULL
             )
             INSERT INTO delivery_jobs (event_id, inbox, host, personal)
             SELECT $1, inbox, lower(substring(inbox FROM '^[A-Za-z]+://([^/?#]+)')), personal
             FROM inboxes
             WHERE inbox ~ '^[A-Za-z]+://[^/?#]+'
             ON CONFLICT (event_id, inbox) DO NOTHING",
        )
        .bind(plan.event.id.0)
        .bind(&plan.actor)
        .bind(&plan.recipients)
        .bind(major)
        .bind(minor)
        .bind(plan.everyone)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

fn db_position(position: Position) -> (i64, i64) {
    (
        i64::try_from(position.major()).unwrap_or(i64::MAX),
        i64::try_from(position.minor()).unwrap_or(i64::MAX),
    )
}
