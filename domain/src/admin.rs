//! Admins' actions on history, recorded in the log like everything else:
//! who asked for what, when, over which range, and how it ended. So the
//! history of reprocessing can itself be read, audited and reprocessed.
//!
//! Each action has a stream of its own (`admin-<action id>`): the request
//! first, then, for actions that run a while, how it ended.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Position, StreamId};

/// The stream of one admin action.
pub fn admin_stream(action: Uuid) -> StreamId {
    StreamId::composed(format!("admin-{action}"))
}

/// An admin asked for a read model to be rebuilt from the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectionRebuildRequested {
    pub rebuild_id: Uuid,
    pub projection: String,
    /// The admin's actor id, or `cli` for the command line.
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
}

/// How a rebuild ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RebuildOutcome {
    /// The rebuilt tables replaced the live ones.
    Swapped,
    /// The live tables were left as they were.
    Failed,
}

/// A rebuild ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectionRebuildFinished {
    pub rebuild_id: Uuid,
    pub projection: String,
    pub outcome: RebuildOutcome,
    /// Events applied to the rebuilt tables.
    pub events: i64,
    /// Why it failed.
    pub error: Option<String>,
    pub finished_at: DateTime<Utc>,
}

/// Which stored inbound activities a reprocessing takes (all of them when
/// every field is empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundSelection {
    /// Received strictly after this position.
    pub after: Option<Position>,
    /// Received at or before this position.
    pub until: Option<Position>,
    /// Received at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Received before this time.
    pub to: Option<DateTime<Utc>>,
    /// Sent by this remote host.
    pub host: Option<String>,
    /// Of this ActivityStreams type (`Follow`, `Like`, ...).
    pub activity_type: Option<String>,
    /// Only those whose last outcome was this (`unsupported`, `refused`,
    /// `ignored`), e.g. the ones stored before support was added.
    pub outcome: Option<String>,
}

/// An admin asked for stored inbound activities to be interpreted again
/// with the current code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundReprocessingRequested {
    pub run_id: Uuid,
    pub requested_by: String,
    pub selection: InboundSelection,
    /// How many stored activities the selection took when asked.
    pub selected: i64,
    pub requested_at: DateTime<Utc>,
}

/// A reprocessing ended: what became of the activities it took.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundReprocessed {
    pub run_id: Uuid,
    /// Activities interpreted again.
    pub activities: u64,
    /// Of those, the ones that now changed something.
    pub applied: u64,
    /// The ones whose meaning was already in the log.
    pub unchanged: u64,
    /// The ones still not applied, now for another kind of reason.
    pub not_applied: u64,
    /// The ones that could not be interpreted again (a failure on our side,
    /// e.g. the database; they can be reprocessed later).
    pub failed: u64,
    /// Events it appended that something would be sent for (an Accept that
    /// was never sent, say): held until an admin releases them.
    pub held: Vec<Uuid>,
    pub finished_at: DateTime<Utc>,
}

/// An admin released the side effects a reprocessing held: they are sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReprocessedEffectsReleased {
    pub run_id: Uuid,
    pub requested_by: String,
    /// The held events released (all those of the run).
    pub events: Vec<Uuid>,
    pub released_at: DateTime<Utc>,
}

/// An admin moved a subscriber's checkpoint (back, usually), so that it
/// sees the events after it again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriberReplayed {
    pub subscriber: String,
    pub requested_by: String,
    /// Where it was.
    pub from: Option<Position>,
    /// Where it is now.
    pub to: Position,
    /// Events after the new position when it was moved.
    pub events: u64,
    pub replayed_at: DateTime<Utc>,
}

/// An admin asked for outbound activities to be delivered again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedeliveryRequested {
    pub requested_by: String,
    /// One activity, by its ActivityPub id…
    pub activity_id: Option<String>,
    /// …or every activity of this actor…
    pub actor: Option<String>,
    /// …recorded at or after this time…
    pub from: Option<DateTime<Utc>>,
    /// …and before this one.
    pub to: Option<DateTime<Utc>>,
    /// To these inboxes only; every inbox each was planned for when empty.
    pub inboxes: Vec<String>,
    /// Activities and deliveries queued.
    pub activities: u64,
    pub deliveries: u64,
    pub requested_at: DateTime<Utc>,
}
