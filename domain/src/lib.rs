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
    ExpectedVersion, Metadata, NewEvent, Payload, Position, RecordedEvent, SignatureVerdict,
    StreamId, StreamIdError,
};
pub use events::DomainEvent;
