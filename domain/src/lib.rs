//! The Chorus domain: events, commands, decisions, ActivityPub vocabulary and
//! the traits that adapters implement.
//!
//! Architecture invariant: this crate does no IO. It depends on no database,
//! HTTP or GraphQL crate (CI checks its dependency tree), so every decision it
//! makes can be tested as a pure function of events.
//!
//! Commands are decided by plain functions, `decide(state, command) ->
//! Result<Vec<DomainEvent>, Error>`, where the state is folded from the
//! events of the command's stream(s).

/// The conversions of a string newtype validated by its `parse`: serde
/// goes through them, so a stored value that no longer parses is an error.
macro_rules! validated_string {
    ($name:ident, $error:ty) => {
        impl TryFrom<String> for $name {
            type Error = $error;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

pub mod activitypub;
pub mod actors;
pub mod admin;
pub mod erasure;
pub mod event_store;
pub mod events;
pub mod inbound;
pub mod instances;
pub mod interactions;
pub mod outbound;
pub mod posts;
pub mod relationships;
pub mod remote;
pub mod servers;
pub mod signatures;

pub use event_store::{
    AppendOutcome, AppendedEvent, EventId, EventStore, EventStoreError, EventStream,
    ExpectedVersion, Metadata, MigrationStore, NewEvent, Payload, Position, RecordedEvent,
    SignatureVerdict, StreamId, StreamIdError, validate_append,
};
pub use events::DomainEvent;
