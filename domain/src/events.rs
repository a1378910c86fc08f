//! Every event type of the domain, and how each is stored in the log.
//!
//! The stored type name (`event_type`) and schema version of each variant are
//! part of the public event contract (`docs/events.md`): never rename or
//! remove one; add a variant or a version instead.

use serde::de::DeserializeOwned;

use crate::actors::{ActorDeleted, ActorRegistered};
use crate::admin::{
    InboundReprocessed, InboundReprocessingRequested, ProjectionRebuildFinished,
    ProjectionRebuildRequested, RedeliveryRequested, ReprocessedEffectsReleased,
    SubscriberReplayed,
};
use crate::erasure::ContentErased;
use crate::instances::{InstanceBlocked, InstanceUnblocked};
use crate::interactions::{Favorited, Reblogged, Unfavorited, Unreblogged};
use crate::posts::{PostCreated, PostDeleted, PostEdited};
use crate::relationships::{
    Blocked, FollowAccepted, FollowRejected, FollowRequested, FollowSevered, Unblocked, Unfollowed,
};
use crate::remote::{
    ActivityNotApplied, ActivityReceived, ActivityReprocessed, RemoteActorDeleted,
    RemoteActorUpdated, RemotePostCreated, RemotePostDeleted, RemotePostEdited,
};
use crate::servers::{
    ChannelActivityAnnounced, ChannelCreated, ChannelMessageAnnounced, ChannelMessageRemoved,
    ChannelMessageShared, ChannelMessageUnshared, ModeratorAppointed, ModeratorDismissed,
    ServerCreated,
};
use crate::{NewEvent, RecordedEvent};

macro_rules! domain_events {
    ($($variant:ident => $name:literal v $version:literal),* $(,)?) => {
        /// A fact of the domain: what commands decide and projections read.
        #[derive(Clone, Debug, PartialEq)]
        pub enum DomainEvent {
            $($variant($variant),)*
        }

        /// Every stored type name with its current schema version.
        pub const EVENT_TYPES: &[(&str, u32)] = &[$(($name, $version),)*];

        impl DomainEvent {
            /// The type name it is stored under.
            pub fn event_type(&self) -> &'static str {
                match self { $(Self::$variant(_) => $name,)* }
            }

            /// The schema version it is stored with.
            pub fn schema_version(&self) -> u32 {
                match self { $(Self::$variant(_) => $version,)* }
            }

            /// An event ready to append (fresh id, no metadata).
            pub fn to_new_event(&self) -> Result<NewEvent, serde_json::Error> {
                match self { $(Self::$variant(e) => NewEvent::new($name, $version, e),)* }
            }

            /// Reads a stored event. `Ok(None)` for types this domain does not
            /// know (other subsystems' events, or newer ones).
            pub fn from_recorded(event: &RecordedEvent) -> Result<Option<Self>, DecodeError> {
                match event.event_type.as_str() {
                    $($name => decode(event, $version).map(|e| Some(Self::$variant(e))),)*
                    _ => Ok(None),
                }
            }
        }
    };
}

domain_events! {
    ActorRegistered => "ActorRegistered" v 1,
    PostCreated => "PostCreated" v 1,
    PostEdited => "PostEdited" v 1,
    PostDeleted => "PostDeleted" v 1,
    FollowRequested => "FollowRequested" v 1,
    FollowAccepted => "FollowAccepted" v 1,
    FollowRejected => "FollowRejected" v 1,
    Unfollowed => "Unfollowed" v 1,
    FollowSevered => "FollowSevered" v 1,
    Blocked => "Blocked" v 1,
    Unblocked => "Unblocked" v 1,
    Favorited => "Favorited" v 1,
    Unfavorited => "Unfavorited" v 1,
    Reblogged => "Reblogged" v 1,
    Unreblogged => "Unreblogged" v 1,
    ActivityReceived => "ActivityReceived" v 1,
    ActivityNotApplied => "ActivityNotApplied" v 1,
    RemoteActorUpdated => "RemoteActorUpdated" v 1,
    RemoteActorDeleted => "RemoteActorDeleted" v 1,
    RemotePostCreated => "RemotePostCreated" v 1,
    RemotePostEdited => "RemotePostEdited" v 1,
    RemotePostDeleted => "RemotePostDeleted" v 1,
    InstanceBlocked => "InstanceBlocked" v 1,
    InstanceUnblocked => "InstanceUnblocked" v 1,
    ProjectionRebuildRequested => "ProjectionRebuildRequested" v 1,
    ProjectionRebuildFinished => "ProjectionRebuildFinished" v 1,
    InboundReprocessingRequested => "InboundReprocessingRequested" v 1,
    InboundReprocessed => "InboundReprocessed" v 1,
    ReprocessedEffectsReleased => "ReprocessedEffectsReleased" v 1,
    SubscriberReplayed => "SubscriberReplayed" v 1,
    RedeliveryRequested => "RedeliveryRequested" v 1,
    ActivityReprocessed => "ActivityReprocessed" v 1,
    ActorDeleted => "ActorDeleted" v 1,
    ContentErased => "ContentErased" v 1,
    ServerCreated => "ServerCreated" v 1,
    ChannelCreated => "ChannelCreated" v 1,
    ModeratorAppointed => "ModeratorAppointed" v 1,
    ModeratorDismissed => "ModeratorDismissed" v 1,
    ChannelMessageAnnounced => "ChannelMessageAnnounced" v 1,
    ChannelMessageShared => "ChannelMessageShared" v 1,
    ChannelMessageRemoved => "ChannelMessageRemoved" v 1,
    ChannelMessageUnshared => "ChannelMessageUnshared" v 1,
    ChannelActivityAnnounced => "ChannelActivityAnnounced" v 1,
}

/// A stored event of a known type that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{event_type} v{found} is newer than this code understands (v{known})")]
    UnknownVersion {
        event_type: String,
        found: u32,
        known: u32,
    },
    #[error("{event_type} payload does not match its schema")]
    Payload {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
}

fn decode<T: DeserializeOwned>(event: &RecordedEvent, known: u32) -> Result<T, DecodeError> {
    if event.schema_version > known {
        return Err(DecodeError::UnknownVersion {
            event_type: event.event_type.clone(),
            found: event.schema_version,
            known,
        });
    }
    event
        .payload
        .decode()
        .map_err(|source| DecodeError::Payload {
            event_type: event.event_type.clone(),
            source,
        })
}
