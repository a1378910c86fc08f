//! The interpreter: a subscriber of the log that turns each stored
//! [`ActivityReceived`] into the events of what it means (a remote post, a
//! follow, a favorite, ...), or records why it changed nothing.
//!
//! Every event it appends is caused by the received event, with an id
//! derived from it, so interpreting an activity again (after a crash, or
//! when an admin reprocesses history) appends nothing twice. Its side
//! effect on the world, the automatic Accept of a follow, is such an event
//! too; delivering it is the delivery workers' business.
//!
//! It runs activities of different actors concurrently and those of one
//! actor in order (a Follow before its Undo), and checkpoints after each
//! batch it finished whole.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chorus_domain::inbound::{
    ActivityKind, InboundActivity, InnerActivity, Interpretation, RemoteNote,
};
use chorus_domain::interactions::{self, InteractionState, favorite_stream, reblog_stream};
use chorus_domain::posts::Visibility;
use chorus_domain::relationships::{self, Followee, RelationshipState, relationship_stream};
use chorus_domain::remote::{
    self, ActivityNotApplied, ActivityReceived, NotApplied, RemoteActorDeleted, RemoteActorState,
    RemotePostCreated, RemotePostEdited, RemotePostState, remote_actor_stream, remote_post_stream,
};
use chorus_domain::servers;
use chorus_domain::{DomainEvent, EventStore, Metadata, Position, RecordedEvent};
use chorus_postgres::NewStream;
use chorus_postgres::checkpoints::{self, Progress};
use futures::StreamExt;
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::watch;

use super::Federation;
use super::remote_keys::{domain_of, remote_actor_updated};
use crate::app::{App, AppError, Stamp};

/// The interpreter's checkpoint name.
pub const SUBSCRIBER: &str = "interpreter";

/// Events read per batch.
const BATCH: usize = 256;
/// Activities interpreted at once (of different actors).
const CONCURRENCY: usize = 16;

/// What became of one activity.
#[derive(Debug)]
enum Outcome {
    Applied,
    NotApplied(NotApplied, String),
}

fn unsupported(reason: impl Into<String>) -> Outcome {
    Outcome::NotApplied(NotApplied::Unsupported, reason.into())
}

fn refused(reason: impl Into<String>) -> Outcome {
    Outcome::NotApplied(NotApplied::Refused, reason.into())
}

fn ignored(reason: impl Into<String>) -> Outcome {
    Outcome::NotApplied(NotApplied::Ignored, reason.into())
}

/// The running interpreter: its progress, to wait on.
#[derive(Clone, Debug)]
pub struct Interpreter {
    progress: Progress,
    task: tokio::task::AbortHandle,
}

impl Interpreter {
    /// Starts interpreting from the checkpoint, in a task of its own.
    pub async fn start(app: App, federation: Arc<Federation>) -> Result<Self, sqlx::Error> {
        let start = checkpoints::load(&app.pool, SUBSCRIBER)
            .await?
            .unwrap_or(Position::START);
        // What the interpreter appends can be derived again from the received
        // events, which are durable: its commits need not wait for the disk.
        // (Its checkpoint is written after them, and WAL is flushed in order,
        // so a checkpoint that survives a crash never points past lost
        // events.)
        let main_pool = app.pool.clone();
        let relaxed = PgPoolOptions::new()
            .max_connections(CONCURRENCY as u32 + 2)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("SET synchronous_commit = off")
                        .execute(conn)
                        .await
                        .map(drop)
                })
            })
            .connect_lazy_with(app.pool.connect_options().as_ref().clone());
        let app = App::new(app.store.with_pool(relaxed), &app.base_url);
        let (tx, progress) = Progress::starting_at(start);
        let worker = Worker {
            app,
            federation,
            known_actors: Arc::default(),
        };
        let task = tokio::spawn(run(worker, main_pool, start, tx)).abort_handle();
        Ok(Self { progress, task })
    }

    /// Its progress, to follow.
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// Stops interpreting (its lease was lost); what is committed stays.
    pub fn stop(&self) {
        self.task.abort();
    }

    /// Waits until everything up to `position` is interpreted.
    pub async fn reached(&self, position: Position, timeout: Duration) -> bool {
        self.progress.reached(position, timeout).await
    }

    /// The last position interpreted.
    pub fn position(&self) -> Position {
        self.progress.position()
    }
}

/// What a stored received activity means when interpreted again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reinterpretation {
    /// It acted (its events may all have been in the log already).
    Applied,
    /// It changed nothing, for this reason.
    NotApplied(NotApplied, String),
}

/// Interprets stored received activities again with the current code, for
/// an admin's reprocessing. Its events are those the interpreter would
/// append (caused by the received activity, ids derived from it, so nothing
/// already in the log is appended twice), and carry the run's id in their
/// metadata (`reprocess`), which holds their deliveries until an admin
/// releases them.
#[derive(Clone, Debug)]
pub struct Reinterpreter {
    worker: Worker,
}

/// The metadata key that marks events appended by a reprocessing run.
pub const REPROCESS: &str = chorus_workers::delivery::REPROCESS;

impl Reinterpreter {
    pub fn new(app: App, federation: Arc<Federation>) -> Self {
        Self {
            worker: Worker {
                app,
                federation,
                known_actors: Arc::default(),
            },
        }
    }

    /// This server's public origin.
    pub fn base_url(&self) -> &str {
        &self.worker.app.base_url
    }

    /// Interprets `event` (an `ActivityReceived`) again, as part of `run`.
    pub async fn reinterpret(
        &self,
        event: &RecordedEvent,
        received: &ActivityReceived,
        run: uuid::Uuid,
    ) -> Result<Reinterpretation, AppError> {
        let mut stamp = stamp(event, received);
        stamp
            .metadata
            .extra
            .insert(REPROCESS.to_owned(), Value::String(run.to_string()));
        Ok(match self.worker.outcome(event, &stamp, received).await? {
            Outcome::Applied => Reinterpretation::Applied,
            Outcome::NotApplied(outcome, reason) => Reinterpretation::NotApplied(outcome, reason),
        })
    }
}

#[derive(Clone, Debug)]
struct Worker {
    app: App,
    federation: Arc<Federation>,
    /// Actors known to be in the actors read model (or recorded), so that
    /// most posts need no lookup of their author.
    known_actors: Arc<std::sync::RwLock<std::collections::HashSet<String>>>,
}

/// How the events interpreted from `event` are stamped: caused by it, ids
/// derived from it, the activity's actor as actor, and the host it came
/// from as theirs (what analytics count them by).
fn stamp(event: &RecordedEvent, received: &ActivityReceived) -> Stamp {
    Stamp {
        metadata: Metadata {
            actor: Some(received.actor.clone()),
            remote_host: event.metadata.remote_host.clone(),
            ..Metadata::caused_by(event)
        },
        cause: Some(event.id),
    }
}

/// The received activities of one actor in a batch, in log order.
type Lane = Vec<(RecordedEvent, ActivityReceived)>;

/// A plain new remote post, ready to be written with others.
struct Prepared {
    received_event: RecordedEvent,
    received: ActivityReceived,
    stream: chorus_domain::StreamId,
    event: chorus_domain::NewEvent,
}

/// Interprets until `main_pool` (the server's) is closed at shutdown.
async fn run(
    worker: Worker,
    main_pool: sqlx::PgPool,
    mut checkpoint: Position,
    progress: watch::Sender<Position>,
) {
    let mut last_saved = std::time::Instant::now();
    // The checkpoint as stored: saves move it on from there, and find out
    // when an admin moved it (a replay).
    let mut saved = checkpoints::load(&worker.app.pool, SUBSCRIBER)
        .await
        .ok()
        .flatten();
    'subscribe: loop {
        if main_pool.is_closed() {
            return;
        }
        let mut events = worker
            .app
            .store
            .subscribe_all(checkpoint)
            .ready_chunks(BATCH);
        loop {
            let batch = match tokio::time::timeout(Duration::from_secs(1), events.next()).await {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                // Idle: what was interpreted is saved, and a move noticed.
                Err(_) => {
                    if let Some(moved) = save(&worker.app.pool, &mut saved, checkpoint).await {
                        checkpoint = moved;
                        progress.send_replace(moved);
                        continue 'subscribe;
                    }
                    last_saved = std::time::Instant::now();
                    continue;
                }
            };
            let batch: Vec<RecordedEvent> = match batch.into_iter().collect() {
                Ok(batch) => batch,
                Err(error) => {
                    if main_pool.is_closed() {
                        return;
                    }
                    tracing::error!(%error, "interpreter cannot read the log; paused");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue 'subscribe;
                }
            };
            let Some(last) = batch.last().map(|e| e.position) else {
                continue;
            };
            // Received activities, one lane per actor: in order within a
            // lane, lanes side by side.
            let mut lanes: HashMap<String, Lane> = HashMap::new();
            for event in batch {
                if event.event_type != "ActivityReceived" {
                    continue;
                }
                match DomainEvent::from_recorded(&event) {
                    Ok(Some(DomainEvent::ActivityReceived(received))) => lanes
                        .entry(received.actor.clone())
                        .or_default()
                        .push((event, received)),
                    Ok(_) => {}
                    Err(error) => {
                        tracing::error!(event = %event.id, %error, "unreadable received activity");
                    }
                }
            }
            // The plain new remote posts at the start of each lane are read
            // side by side and written with one statement for the batch;
            // the rest (and any post whose stream existed) go one by one.
            let prepared: Vec<(Vec<Prepared>, Lane)> = futures::stream::iter(lanes.into_values())
                .map(|lane| {
                    let worker = worker.clone();
                    async move { worker.split_new_posts(lane) }
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            let items: Vec<(chorus_domain::StreamId, chorus_domain::NewEvent)> = prepared
                .iter()
                .flat_map(|(posts, _)| posts.iter().map(|p| (p.stream.clone(), p.event.clone())))
                .collect();
            let written = match worker.app.store.append_new_streams(&items).await {
                Ok(written) => written,
                Err(error) => {
                    tracing::error!(%error, "interpreter could not append; will retry");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue 'subscribe;
                }
            };
            let mut written = written.into_iter();
            let lanes: Vec<Lane> = prepared
                .into_iter()
                .map(|(posts, rest)| {
                    let mut lane: Lane = posts
                        .into_iter()
                        .filter(|_| !written.next().is_some_and(NewStream::is_stored))
                        .map(|p| (p.received_event, p.received))
                        .collect();
                    lane.extend(rest);
                    lane
                })
                .collect();
            let failed = futures::stream::iter(lanes)
                .map(|lane| {
                    let worker = worker.clone();
                    async move {
                        let mut failed = false;
                        for (event, received) in lane {
                            if let Err(error) = worker.interpret(&event, &received).await {
                                tracing::error!(
                                    activity = %received.activity_id,
                                    %error,
                                    "interpreting failed; will retry"
                                );
                                failed = true;
                                break;
                            }
                        }
                        failed
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .any(|failed| async move { failed })
                .await;
            if failed {
                // Nothing is skipped: the whole batch runs again (what was
                // done is not done twice: every append has a derived id).
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue 'subscribe;
            }
            checkpoint = last;
            progress.send_replace(last);
            if last_saved.elapsed() >= Duration::from_millis(200) {
                if let Some(moved) = save(&worker.app.pool, &mut saved, last).await {
                    checkpoint = moved;
                    progress.send_replace(moved);
                    continue 'subscribe;
                }
                last_saved = std::time::Instant::now();
            }
        }
        if main_pool.is_closed() {
            return;
        }
    }
}

/// Saves the interpreter's checkpoint at `to`, unless an admin moved it
/// since it was last saved: then returns where it is now, to resume from.
async fn save(pool: &sqlx::PgPool, saved: &mut Option<Position>, to: Position) -> Option<Position> {
    match checkpoints::settle(pool, SUBSCRIBER, saved, to).await {
        Ok(None) => None,
        Ok(Some(moved)) => {
            tracing::info!(checkpoint = %moved, "the interpreter's checkpoint was moved; resuming from it");
            Some(moved)
        }
        Err(error) => {
            tracing::warn!(%error, "could not save the interpreter's checkpoint");
            None
        }
    }
}

impl Worker {
    /// Splits a lane into its leading plain new remote posts (a Create of a
    /// post by the actor, on its server, from an actor already known), ready
    /// to be written in bulk, and the rest, to be interpreted one by one.
    /// The bulk path writes exactly the event the one-by-one path would.
    fn split_new_posts(&self, lane: Lane) -> (Vec<Prepared>, Lane) {
        let mut posts = Vec::new();
        let mut lane = lane.into_iter();
        let mut rest = Vec::new();
        for (event, received) in lane.by_ref() {
            match self.new_post(&event, &received) {
                Some((stream, new_event)) => posts.push(Prepared {
                    received_event: event,
                    received,
                    stream,
                    event: new_event,
                }),
                None => {
                    rest.push((event, received));
                    break;
                }
            }
        }
        rest.extend(lane);
        (posts, rest)
    }

    fn new_post(
        &self,
        event: &RecordedEvent,
        received: &ActivityReceived,
    ) -> Option<(chorus_domain::StreamId, chorus_domain::NewEvent)> {
        let actor = received.actor.as_str();
        if self.is_local(actor)
            || !self
                .known_actors
                .read()
                .is_ok_and(|known| known.contains(actor))
        {
            return None;
        }
        let document: Value = serde_json::from_str(&received.raw).ok()?;
        let activity = chorus_domain::inbound::read_activity(&document).ok()?;
        let Ok(Interpretation::CreateNote { note, .. }) =
            chorus_domain::inbound::interpret(&activity)
        else {
            return None;
        };
        // A message to a server here is checked and announced: the full path.
        let servers = format!("{}/servers/", self.app.base_url);
        if activity.actor != actor
            || note.attributed_to != actor
            || domain_of(&note.id) != domain_of(actor)
            || note
                .audience
                .iter()
                .chain(&note.to)
                .chain(&note.cc)
                .any(|a| a.starts_with(&servers))
        {
            return None;
        }
        let post = remote_post_created(note);
        let stream = remote_post_stream(&post.uri);
        let new_event = stamp(event, received)
            .event(
                &DomainEvent::RemotePostCreated(post),
                &format!("{stream}#0"),
            )
            .ok()?;
        Some((stream, new_event))
    }

    /// What a received activity means, its effects appended with `stamp`
    /// (a not-applied outcome is returned, not recorded).
    async fn outcome(
        &self,
        event: &RecordedEvent,
        stamp: &Stamp,
        received: &ActivityReceived,
    ) -> Result<Outcome, AppError> {
        Ok(match serde_json::from_str::<Value>(&received.raw) {
            // Its content was erased after a deletion: nothing comes back.
            _ if chorus_domain::erasure::is_redacted(&event.metadata) => {
                ignored(chorus_domain::erasure::ERASED_REASON)
            }
            Err(error) => refused(format!("the stored body is not JSON: {error}")),
            Ok(document) => match chorus_domain::inbound::read_activity(&document) {
                Err(error) => refused(error.to_string()),
                Ok(activity) => self.apply(stamp, &activity, &document).await?,
            },
        })
    }

    /// Interprets one received activity and records the outcome.
    async fn interpret(
        &self,
        event: &RecordedEvent,
        received: &ActivityReceived,
    ) -> Result<(), AppError> {
        let stamp = stamp(event, received);
        // Read before: what this reading appends (a post an Announce names,
        // say) does not make it a second reading.
        let read_before = self.caused_anything(event).await?;
        let outcome = self.outcome(event, &stamp, received).await?;
        if let Outcome::NotApplied(outcome, reason) = outcome {
            // Interpreted again (a replay) after its meaning was recorded:
            // deciding it against today's state ("already following") says
            // nothing about the activity.
            if read_before {
                tracing::debug!(activity = %received.activity_id, "already applied; outcome of a second reading not recorded");
                return Ok(());
            }
            tracing::debug!(activity = %received.activity_id, ?outcome, %reason, "activity not applied");
            let not_applied = DomainEvent::ActivityNotApplied(ActivityNotApplied {
                activity_id: received.activity_id.clone(),
                activity_type: received.activity_type.clone(),
                outcome,
                reason,
            });
            self.append_one(
                &remote::received_stream(&received.activity_id),
                &stamp,
                not_applied,
            )
            .await?;
        }
        Ok(())
    }

    /// Whether the log holds events caused by `event` other than an outcome.
    async fn caused_anything(&self, event: &RecordedEvent) -> Result<bool, AppError> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (
                 SELECT 1 FROM events
                 WHERE metadata ? 'causation_id' AND metadata->>'causation_id' = $1
                   AND event_type NOT IN ('ActivityNotApplied', 'ActivityReprocessed')
             )",
        )
        .bind(event.id.to_string())
        .fetch_one(&self.app.pool)
        .await?)
    }

    /// Appends one event caused by the received one, once.
    async fn append_one(
        &self,
        stream: &chorus_domain::StreamId,
        stamp: &Stamp,
        event: DomainEvent,
    ) -> Result<(), AppError> {
        let new_event = stamp.event(&event, &format!("{stream}#outcome"))?;
        self.app
            .store
            .append(stream, chorus_domain::ExpectedVersion::Any, vec![new_event])
            .await?;
        Ok(())
    }

    async fn apply(
        &self,
        stamp: &Stamp,
        activity: &InboundActivity,
        document: &Value,
    ) -> Result<Outcome, AppError> {
        let actor = activity.actor.as_str();
        if self.is_local(actor) {
            return Ok(refused("the actor claims to be local"));
        }
        let interpretation = match chorus_domain::inbound::interpret(activity) {
            Ok(interpretation) => interpretation,
            Err(error) => return Ok(refused(error.to_string())),
        };
        match interpretation {
            Interpretation::CreateNote { note, .. } => {
                self.create_message(stamp, actor, note, document).await
            }
            Interpretation::UpdateNote { note, .. } => {
                let post = note.id.clone();
                let outcome = self.update_note(stamp, actor, note).await?;
                if matches!(outcome, Outcome::Applied) {
                    // An edited message: its server passes the edit on.
                    self.app
                        .announce_activity(&post, actor, &strip_context(document), stamp)
                        .await?;
                }
                Ok(outcome)
            }
            Interpretation::NeedsFetch {
                kind, object_id, ..
            } => {
                // Only the object's own server is believed about it.
                if domain_of(&object_id) != domain_of(actor) {
                    return Ok(refused("the object is not on the actor's server"));
                }
                let note = match self.fetch_note(&object_id).await {
                    Ok(note) => note,
                    Err(outcome) => return Ok(outcome),
                };
                match kind {
                    ActivityKind::Update => self.update_note(stamp, actor, note).await,
                    _ => self.create_message(stamp, actor, note, document).await,
                }
            }
            Interpretation::UpdateActor { profile, .. } => {
                if profile.id != actor {
                    return Ok(refused("an actor may only update itself"));
                }
                self.federation.keys.forget_owner(actor);
                let event = DomainEvent::RemoteActorUpdated(remote_actor_updated(&profile));
                self.decide::<RemoteActorState>(&remote_actor_stream(actor), stamp, |state| {
                    if state.deleted {
                        vec![]
                    } else {
                        vec![event.clone()]
                    }
                })
                .await
            }
            Interpretation::DeleteActor { .. } => {
                self.federation.keys.forget_owner(actor);
                let event = DomainEvent::RemoteActorDeleted(RemoteActorDeleted {
                    uri: actor.to_owned(),
                    deleted_at: activity.published.unwrap_or_else(chrono::Utc::now),
                });
                self.decide::<RemoteActorState>(&remote_actor_stream(actor), stamp, |state| {
                    if state.deleted {
                        vec![]
                    } else {
                        vec![event.clone()]
                    }
                })
                .await
            }
            Interpretation::DeleteObject { object_id, .. } => {
                let at = activity.published.unwrap_or_else(chrono::Utc::now);
                let outcome = self
                    .try_decide::<RemotePostState, _>(&remote_post_stream(&object_id), stamp, |s| {
                        remote::delete_post(s, actor, at).map_err(|e| e.to_string())
                    })
                    .await?;
                if matches!(outcome, Outcome::Applied) {
                    // A message in a server here leaves it, announced.
                    self.app
                        .message_deleted(&object_id, actor, &strip_context(document), stamp)
                        .await?;
                }
                Ok(outcome)
            }
            Interpretation::Follow { object_id, .. } => {
                self.follow(stamp, activity, document, &object_id).await
            }
            Interpretation::AcceptFollow { follow, .. } => {
                self.answer_follow(stamp, activity, document, follow, true)
                    .await
            }
            Interpretation::RejectFollow { follow, .. } => {
                self.answer_follow(stamp, activity, document, follow, false)
                    .await
            }
            Interpretation::Like { object_id, .. } => {
                // A like of a message of a server here: the server passes
                // it on to its members, whatever else becomes of it.
                let passed_on = self
                    .app
                    .announce_activity(&object_id, actor, &strip_context(document), stamp)
                    .await?;
                match self.like(stamp, activity, document, &object_id).await? {
                    Outcome::NotApplied(..) if passed_on.is_some() => Ok(Outcome::Applied),
                    outcome => Ok(outcome),
                }
            }
            Interpretation::Announce {
                object_type,
                inline: true,
                ..
            } if matches!(object_type.as_deref(), Some("Create" | "Update")) => {
                // A group announcing a member's post or its edit (FEP-1b12,
                // Lemmy): the group shares the post the activity carries.
                let create = activity.object.inline().cloned().unwrap_or_default();
                let Some(object_id) = create.get("object").and_then(|o| match o {
                    Value::String(id) => Some(id.clone()),
                    other => other.get("id").and_then(Value::as_str).map(str::to_owned),
                }) else {
                    return Ok(refused("the announced activity names no object"));
                };
                let inline = create
                    .get("object")
                    .filter(|o| o.is_object())
                    .and_then(|o| chorus_domain::inbound::read_note(o).ok());
                self.announce(stamp, activity, document, &object_id, inline)
                    .await
            }
            Interpretation::Announce {
                object_id, inline, ..
            } => {
                let inline = if inline {
                    activity
                        .object
                        .inline()
                        .and_then(|o| chorus_domain::inbound::read_note(o).ok())
                } else {
                    None
                };
                self.announce(stamp, activity, document, &object_id, inline)
                    .await
            }
            Interpretation::Block { object_id, .. } => {
                if !self.is_local(&object_id) {
                    return Ok(ignored("the blocked actor is not local"));
                }
                let block_id = activity.id.clone();
                let received = strip_context(document);
                self.decide_received::<RelationshipState, _, _>(
                    &relationship_stream(actor, &object_id),
                    stamp,
                    &received,
                    |state| relationships::block(state, actor, &object_id, &block_id),
                )
                .await
            }
            Interpretation::Undo { inner, .. } => self.undo(stamp, activity, document, inner).await,
            Interpretation::Unsupported { reason, .. } => Ok(unsupported(reason)),
        }
    }

    /// Makes sure the actors read model knows `uri` (the author of a post
    /// that arrived through someone else), fetching it if need be. Best
    /// effort: a post whose author cannot be fetched is still kept.
    async fn ensure_actor(&self, uri: &str) -> Result<(), AppError> {
        if self
            .known_actors
            .read()
            .is_ok_and(|known| known.contains(uri))
        {
            return Ok(());
        }
        let known: Option<i32> = sqlx::query_scalar("SELECT 1 FROM actors WHERE uri = $1")
            .bind(uri)
            .fetch_optional(&self.app.pool)
            .await?;
        if known.is_some() {
            if let Ok(mut set) = self.known_actors.write() {
                if set.len() > 100_000 {
                    set.clear();
                }
                set.insert(uri.to_owned());
            }
            return Ok(());
        }
        let profile = match self.federation.fetcher.get_activity(uri).await {
            Ok(fetched) if domain_of(fetched.url.as_str()) == domain_of(uri) => {
                chorus_domain::inbound::read_actor(&fetched.document).ok()
            }
            Ok(_) => None,
            Err(error) => {
                tracing::info!(actor = uri, %error, "could not fetch a post's author");
                None
            }
        };
        if let Some(profile) = profile.filter(|p| p.id == uri)
            && let Err(error) = self.federation.keys.record(&profile).await
        {
            tracing::warn!(actor = uri, %error, "could not record a fetched actor");
        }
        Ok(())
    }

    /// A post fetched from its origin (the caller checked the origin).
    async fn fetch_note(&self, object_id: &str) -> Result<RemoteNote, Outcome> {
        let fetched = self
            .federation
            .fetcher
            .get_activity(object_id)
            .await
            .map_err(|e| ignored(format!("the object could not be fetched: {e}")))?;
        if domain_of(fetched.url.as_str()) != domain_of(object_id) {
            return Err(refused("the object was served by another server"));
        }
        let note = chorus_domain::inbound::read_note(&fetched.document)
            .map_err(|e| ignored(format!("the fetched object is unusable: {e}")))?;
        if note.id != object_id {
            // E.g. a group's Announce of an activity, whose id leads to the
            // object it is about: not a post Chorus can take as it is.
            return Err(ignored("the fetched object has another id"));
        }
        Ok(note)
    }

    fn is_local(&self, uri: &str) -> bool {
        uri.strip_prefix(&self.app.base_url)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// Decides on `stream` with events that cannot be refused; no events
    /// means there was nothing to do.
    async fn decide<S: crate::app::Fold>(
        &self,
        stream: &chorus_domain::StreamId,
        stamp: &Stamp,
        decide: impl Fn(&S) -> Vec<DomainEvent>,
    ) -> Result<Outcome, AppError> {
        self.try_decide::<S, _>(stream, stamp, |s| Ok(decide(s)))
            .await
    }

    /// Decides on `stream`; a refusal becomes an `ignored` outcome with its
    /// reason, an empty decision an `ignored` "nothing to do".
    async fn try_decide<S, F>(
        &self,
        stream: &chorus_domain::StreamId,
        stamp: &Stamp,
        decide: F,
    ) -> Result<Outcome, AppError>
    where
        S: crate::app::Fold,
        F: Fn(&S) -> Result<Vec<DomainEvent>, String>,
    {
        let mut refusal = None;
        let position = self
            .app
            .execute_stamped::<S, _>(stream, stamp, |state| match decide(state) {
                Ok(events) => Ok(events),
                Err(reason) => {
                    refusal = Some(reason);
                    Ok(vec![])
                }
            })
            .await?;
        Ok(match (position, refusal) {
            (_, Some(reason)) => ignored(reason),
            (None, None) => ignored("nothing to change"),
            (Some(_), None) => Outcome::Applied,
        })
    }

    /// [`Worker::try_decide`] for decisions that write their own activity,
    /// which is replaced by the received one.
    async fn decide_received<S, E, F>(
        &self,
        stream: &chorus_domain::StreamId,
        stamp: &Stamp,
        received: &Value,
        decide: F,
    ) -> Result<Outcome, AppError>
    where
        S: crate::app::Fold,
        E: std::fmt::Display,
        F: Fn(&S) -> Result<Vec<DomainEvent>, E>,
    {
        self.try_decide::<S, _>(stream, stamp, |state| {
            let mut events = decide(state).map_err(|e| e.to_string())?;
            replace_activity(&mut events, received);
            Ok(events)
        })
        .await
    }

    /// A post; if it is addressed to a local server, a message for it
    /// (FEP-1b12): refused (and not stored) unless its author is a member
    /// in good standing and its channel exists, then announced by the
    /// server to its members.
    async fn create_message(
        &self,
        stamp: &Stamp,
        actor: &str,
        note: RemoteNote,
        document: &Value,
    ) -> Result<Outcome, AppError> {
        let Some((server, state)) = self.addressed_server(&note).await? else {
            return self.create_note(stamp, actor, note).await;
        };
        let standing = self.app.standing_in(&server.uri, actor).await?;
        let parent_channel = match &note.in_reply_to {
            Some(parent) => self.app.message_channel(&server.uri, parent).await?,
            None => None,
        };
        let message = servers::Message {
            post: note.id.clone(),
            author: actor.to_owned(),
            in_reply_to: note.in_reply_to.clone(),
            // A `context` that is not one of the server's channels is a
            // thread's (Mastodon, Lemmy): the message goes by its parent.
            channel: note
                .context
                .clone()
                .filter(|c| servers::channel_of(&server.uri, c).is_some()),
            parent_channel,
            activity: strip_context(document),
            member: standing.member,
            banned: standing.banned,
        };
        // Decided once without effect first: a refused message is not stored.
        let trial = servers::announce_message(
            &state,
            &servers::MessageState::default(),
            message.clone(),
            chrono::Utc::now(),
        );
        if let Err(refusal) = trial {
            return Ok(refused(refusal.to_string()));
        }
        let outcome = self.create_note(stamp, actor, note).await?;
        if !matches!(outcome, Outcome::Applied) {
            return Ok(outcome);
        }
        match self.app.announce_message(&server, message, stamp).await {
            Ok(_) | Err(AppError::Server(servers::ServerError::AlreadyAnnounced)) => {
                Ok(Outcome::Applied)
            }
            Err(AppError::Server(refusal)) => Ok(refused(refusal.to_string())),
            Err(error) => Err(error),
        }
    }

    /// The local server a post is addressed to (its `audience`, or among
    /// `to` and `cc`), if any.
    async fn addressed_server(
        &self,
        note: &RemoteNote,
    ) -> Result<Option<(crate::app::LocalActor, servers::ServerState)>, AppError> {
        let prefix = format!("{}/servers/", self.app.base_url);
        let addressed = note
            .audience
            .iter()
            .chain(&note.to)
            .chain(&note.cc)
            .find(|a| {
                a.strip_prefix(&prefix)
                    .is_some_and(|name| !name.contains('/'))
            });
        let Some(uri) = addressed else {
            return Ok(None);
        };
        match self.app.server(uri).await {
            Ok(found) => Ok(Some(found)),
            Err(AppError::NotFound { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn create_note(
        &self,
        stamp: &Stamp,
        actor: &str,
        note: RemoteNote,
    ) -> Result<Outcome, AppError> {
        if note.attributed_to != actor {
            return Ok(refused(format!(
                "the post is attributed to {}, not to the actor {actor}",
                note.attributed_to
            )));
        }
        if domain_of(&note.id) != domain_of(actor) {
            return Ok(refused("the post's id is not on the actor's server"));
        }
        self.ensure_actor(actor).await?;
        let post = remote_post_created(note);
        let stream = remote_post_stream(&post.uri);
        // A new post's stream does not exist yet: append straight away, and
        // only on a conflict read the stream to say why nothing changed.
        let new_event = stamp.event(
            &DomainEvent::RemotePostCreated(post.clone()),
            &format!("{stream}#0"),
        )?;
        match self
            .app
            .store
            .append(
                &stream,
                chorus_domain::ExpectedVersion::NoStream,
                vec![new_event],
            )
            .await
        {
            // Deduplicated: this very activity was interpreted before.
            Ok(_) => Ok(Outcome::Applied),
            Err(chorus_domain::EventStoreError::WrongExpectedVersion { .. }) => {
                self.try_decide::<RemotePostState, _>(&stream, stamp, |s| {
                    remote::create_post(s, post.clone()).map_err(|e| e.to_string())
                })
                .await
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn update_note(
        &self,
        stamp: &Stamp,
        actor: &str,
        note: RemoteNote,
    ) -> Result<Outcome, AppError> {
        let edit = RemotePostEdited {
            uri: note.id.clone(),
            author: note.attributed_to.clone(),
            content: note.content_html.clone(),
            summary: note.summary.clone(),
            sensitive: note.sensitive,
            mentions: note.mentions.clone(),
            hashtags: note.hashtags.clone(),
            attachments: attachments(&note),
            updated: note.updated.unwrap_or_else(chrono::Utc::now),
        };
        self.try_decide::<RemotePostState, _>(&remote_post_stream(&note.id), stamp, |s| {
            remote::edit_post(s, actor, edit.clone()).map_err(|e| e.to_string())
        })
        .await
    }

    async fn follow(
        &self,
        stamp: &Stamp,
        activity: &InboundActivity,
        document: &Value,
        object: &str,
    ) -> Result<Outcome, AppError> {
        let Some(followee) = self.app.local_actor_by_uri(object).await? else {
            return Ok(ignored("the followed actor is not local"));
        };
        let actor = activity.actor.as_str();
        let received = strip_context(document);
        let accept_id = format!(
            "{}/activities/{}",
            self.app.base_url,
            stamp.cause.map(|c| c.0).unwrap_or_default()
        );
        let followee = Followee {
            uri: followee.uri,
            locked: followee.locked,
            local: true,
        };
        self.try_decide::<RelationshipState, _>(
            &relationship_stream(actor, &followee.uri),
            stamp,
            |state| {
                let mut events =
                    relationships::follow(state, actor, &followee, &activity.id, &accept_id)
                        .map_err(|e| e.to_string())?;
                // Keep the Follow as it came, and accept that very Follow.
                for event in &mut events {
                    match event {
                        DomainEvent::FollowRequested(e) => e.activity = received.clone(),
                        DomainEvent::FollowAccepted(e) => e.activity["object"] = received.clone(),
                        _ => {}
                    }
                }
                Ok(events)
            },
        )
        .await
    }

    async fn answer_follow(
        &self,
        stamp: &Stamp,
        activity: &InboundActivity,
        document: &Value,
        follow: InnerActivity,
        accepted: bool,
    ) -> Result<Outcome, AppError> {
        let followee = activity.actor.as_str();
        let follower = match follow.actor {
            Some(follower) => Some(follower),
            None => match &follow.id {
                Some(id) => {
                    sqlx::query_scalar(
                        "SELECT follower FROM follows WHERE follow_id = $1 AND followee = $2",
                    )
                    .bind(id)
                    .bind(followee)
                    .fetch_optional(&self.app.pool)
                    .await?
                }
                None => None,
            },
        };
        let Some(follower) = follower.filter(|f| self.is_local(f)) else {
            return Ok(ignored("no follow of a local actor is answered"));
        };
        let received = strip_context(document);
        self.try_decide::<RelationshipState, _>(
            &relationship_stream(&follower, followee),
            stamp,
            |state| {
                // A Reject also ends an accepted follow (Mastodon sends one
                // when it removes a follower); an Accept only answers a
                // pending request.
                let follow_id = match state.follow(&follower, followee) {
                    Some(relationships::Follow::Requested { follow_id, .. }) => follow_id,
                    Some(relationships::Follow::Accepted { follow_id, .. }) if !accepted => {
                        follow_id
                    }
                    _ => return Err("no matching follow".to_owned()),
                };
                let follow_id = follow_id.clone();
                Ok(vec![if accepted {
                    DomainEvent::FollowAccepted(relationships::FollowAccepted {
                        follower: follower.clone(),
                        followee: followee.to_owned(),
                        follow_id,
                        automatic: false,
                        activity: received.clone(),
                    })
                } else {
                    DomainEvent::FollowRejected(relationships::FollowRejected {
                        follower: follower.clone(),
                        followee: followee.to_owned(),
                        follow_id,
                        activity: received.clone(),
                    })
                }])
            },
        )
        .await
    }

    async fn like(
        &self,
        stamp: &Stamp,
        activity: &InboundActivity,
        document: &Value,
        object: &str,
    ) -> Result<Outcome, AppError> {
        if !self.is_local(object) {
            return Ok(ignored("only favorites of local posts are kept"));
        }
        let Ok((_, post)) = self.app.post_state(object).await else {
            return Ok(ignored("the favorited post is unknown"));
        };
        let actor = activity.actor.as_str();
        let live = post.live().cloned();
        let author = post
            .created
            .as_ref()
            .map(|p| p.author.clone())
            .unwrap_or_default();
        let standing = self.app.standing(actor, &author).await?;
        let received = strip_context(document);
        self.decide_received::<InteractionState, _, _>(
            &favorite_stream(actor, object),
            stamp,
            &received,
            |state| {
                let target = interactions::Target {
                    post: live.as_ref(),
                    mentions: post.mentions(),
                    standing,
                };
                interactions::favorite(state, actor, &target, &activity.id)
            },
        )
        .await
    }

    async fn announce(
        &self,
        stamp: &Stamp,
        activity: &InboundActivity,
        document: &Value,
        object: &str,
        inline: Option<RemoteNote>,
    ) -> Result<Outcome, AppError> {
        let actor = activity.actor.as_str();
        let received = strip_context(document);
        let published = activity.published.unwrap_or_else(chrono::Utc::now);
        if self.is_local(object) {
            let Ok((_, post)) = self.app.post_state(object).await else {
                return Ok(ignored("the reblogged post is unknown"));
            };
            let live = post.live().cloned();
            let author = post
                .created
                .as_ref()
                .map(|p| p.author.clone())
                .unwrap_or_default();
            let standing = self.app.standing(actor, &author).await?;
            let followers = format!("{actor}/followers");
            return self
                .try_decide::<InteractionState, _>(&reblog_stream(actor, object), stamp, |state| {
                    let target = interactions::Target {
                        post: live.as_ref(),
                        mentions: post.mentions(),
                        standing,
                    };
                    let mut events = interactions::reblog(
                        state,
                        actor,
                        &followers,
                        &target,
                        &activity.id,
                        published,
                    )
                    .map_err(|e| e.to_string())?;
                    replace_activity(&mut events, &received);
                    Ok(events)
                })
                .await;
        }
        // A remote post: known already, or taken from its origin. An inline
        // copy is trusted only when it comes from the post's own server.
        let (mut state, _) = self
            .app
            .load::<RemotePostState>(&remote_post_stream(object))
            .await?;
        if state.created.is_none() {
            let note = match inline.filter(|n| domain_of(&n.id) == domain_of(actor)) {
                Some(note) => note,
                None => match self.fetch_note(object).await {
                    Ok(note) => note,
                    Err(outcome) => return Ok(outcome),
                },
            };
            if domain_of(&note.id) != domain_of(&note.attributed_to) {
                return Ok(refused("the post's author is on another server"));
            }
            self.ensure_actor(&note.attributed_to).await?;
            let post = remote_post_created(note);
            self.decide::<RemotePostState>(&remote_post_stream(object), stamp, |s| {
                remote::create_post(s, post.clone()).unwrap_or_default()
            })
            .await?;
            state = self
                .app
                .load::<RemotePostState>(&remote_post_stream(object))
                .await?
                .0;
        }
        let Some(post) = state.created.filter(|_| !state.deleted) else {
            return Ok(ignored("the reblogged post was deleted"));
        };
        if !matches!(post.visibility, Visibility::Public | Visibility::Unlisted) {
            return Ok(refused("only public and unlisted posts can be reblogged"));
        }
        self.try_decide::<InteractionState, _>(&reblog_stream(actor, object), stamp, |state| {
            if state.current.is_some() {
                return Err("already reblogged".to_owned());
            }
            Ok(vec![DomainEvent::Reblogged(interactions::Reblogged {
                actor: actor.to_owned(),
                post: post.uri.clone(),
                post_author: post.author.clone(),
                announce_id: activity.id.clone(),
                published,
                activity: received.clone(),
            })])
        })
        .await
    }

    async fn undo(
        &self,
        stamp: &Stamp,
        activity: &InboundActivity,
        document: &Value,
        inner: InnerActivity,
    ) -> Result<Outcome, AppError> {
        let actor = activity.actor.as_str();
        let received = strip_context(document);
        let undo_id = activity.id.clone();
        // An Undo naming only the activity's id: find what it was.
        let (kind, object) = match (inner.kind, inner.object) {
            (Some(kind), Some(object)) => (kind, object),
            (_, _) => match &inner.id {
                Some(id) => match self.undone(actor, id).await? {
                    Some(found) => found,
                    None => return Ok(ignored("the undone activity is unknown")),
                },
                None => return Ok(ignored("the undone activity is unknown")),
            },
        };
        match kind {
            ActivityKind::Follow => {
                self.decide_received::<RelationshipState, _, _>(
                    &relationship_stream(actor, &object),
                    stamp,
                    &received,
                    |state| relationships::unfollow(state, actor, &object, &undo_id),
                )
                .await
            }
            ActivityKind::Block => {
                self.decide_received::<RelationshipState, _, _>(
                    &relationship_stream(actor, &object),
                    stamp,
                    &received,
                    |state| relationships::unblock(state, actor, &object, &undo_id),
                )
                .await
            }
            ActivityKind::Like => {
                let author = self.author_of(&object).await?;
                self.decide_received::<InteractionState, _, _>(
                    &favorite_stream(actor, &object),
                    stamp,
                    &received,
                    |state| interactions::unfavorite(state, actor, &object, &author, &undo_id),
                )
                .await
            }
            ActivityKind::Announce => {
                let author = self.author_of(&object).await?;
                let followers = format!("{actor}/followers");
                self.decide_received::<InteractionState, _, _>(
                    &reblog_stream(actor, &object),
                    stamp,
                    &received,
                    |state| {
                        interactions::unreblog(state, actor, &followers, &object, &author, &undo_id)
                    },
                )
                .await
            }
            other => Ok(unsupported(format!(
                "undoing {other} activities is not supported"
            ))),
        }
    }

    /// What `actor`'s activity `id` was, from the read models: its kind and object.
    async fn undone(
        &self,
        actor: &str,
        id: &str,
    ) -> Result<Option<(ActivityKind, String)>, AppError> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT 'Follow', followee FROM follows WHERE follow_id = $1 AND follower = $2
             UNION ALL SELECT 'Like', post FROM favorites WHERE like_id = $1 AND actor = $2
             UNION ALL SELECT 'Announce', post FROM reblogs WHERE announce_id = $1 AND actor = $2
             UNION ALL SELECT 'Block', blocked FROM blocks WHERE block_id = $1 AND blocker = $2
             LIMIT 1",
        )
        .bind(id)
        .bind(actor)
        .fetch_optional(&self.app.pool)
        .await?;
        Ok(row.map(|(kind, object)| (ActivityKind::from_name(&kind), object)))
    }

    /// The author of a local or known remote post (empty if unknown).
    async fn author_of(&self, post: &str) -> Result<String, AppError> {
        if self.is_local(post) {
            return Ok(match self.app.post_state(post).await {
                Ok((_, state)) => state.created.map(|p| p.author).unwrap_or_default(),
                Err(_) => String::new(),
            });
        }
        let (state, _) = self
            .app
            .load::<RemotePostState>(&remote_post_stream(post))
            .await?;
        Ok(state.created.map(|p| p.author).unwrap_or_default())
    }
}

/// The received activity, as stored inside relationship and interaction
/// events (without its `@context`, like the ones Chorus writes).
fn strip_context(document: &Value) -> Value {
    let mut document = document.clone();
    if let Some(map) = document.as_object_mut() {
        map.remove("@context");
        map.remove("signature");
        map.remove("proof");
    }
    document
}

/// Puts the received activity in place of the one a decision wrote.
fn replace_activity(events: &mut [DomainEvent], received: &Value) {
    for event in events {
        match event {
            DomainEvent::FollowRequested(e) => e.activity = received.clone(),
            DomainEvent::Unfollowed(e) => e.activity = received.clone(),
            DomainEvent::Blocked(e) => e.activity = received.clone(),
            DomainEvent::Unblocked(e) => e.activity = received.clone(),
            DomainEvent::Favorited(e) => e.activity = received.clone(),
            DomainEvent::Unfavorited(e) => e.activity = received.clone(),
            DomainEvent::Reblogged(e) => e.activity = received.clone(),
            DomainEvent::Unreblogged(e) => e.activity = received.clone(),
            _ => {}
        }
    }
}

fn attachments(note: &RemoteNote) -> Vec<remote::RemoteAttachment> {
    note.attachments
        .iter()
        .map(|a| remote::RemoteAttachment {
            url: a.url.clone(),
            media_type: a.media_type.clone(),
            name: a.name.clone(),
        })
        .collect()
}

/// The event taking in a remote post.
fn remote_post_created(note: RemoteNote) -> RemotePostCreated {
    // Articles and pages carry a title the content may not repeat.
    let content = match (&note.title, note.content_html.is_empty()) {
        (Some(title), true) => format!("<p>{}</p>", chorus_domain::posts::escape(title)),
        _ => note.content_html.clone(),
    };
    RemotePostCreated {
        attachments: attachments(&note),
        uri: note.id,
        kind: format!("{:?}", note.kind),
        author: note.attributed_to,
        content,
        summary: note.summary,
        sensitive: note.sensitive,
        visibility: note.visibility,
        in_reply_to: note.in_reply_to,
        mentions: note.mentions,
        hashtags: note.hashtags,
        to: note.to,
        cc: note.cc,
        url: note.url,
        published: note.published.unwrap_or_else(chrono::Utc::now),
    }
}
