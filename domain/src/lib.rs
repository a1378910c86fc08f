//! The Chorus domain: events, commands, decisions, ActivityPub vocabulary and
//! the traits that adapters implement.
//!
//! Architecture invariant: this crate does no IO. It depends on no database,
//! HTTP or GraphQL crate (CI checks its dependency tree), so every decision it
//! makes can be tested as a pure function of events.

pub mod event_store;

pub use event_store::{
    AppendOutcome, AppendedEvent, EventId, EventStore, EventStoreError, EventStream,
    ExpectedVersion, Metadata, NewEvent, Payload, Position, RecordedEvent, SignatureVerdict,
    StreamId, StreamIdError,
};
