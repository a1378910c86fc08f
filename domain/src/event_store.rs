//! The event log: the envelope every event travels in, global positions, and
//! the [`EventStore`] trait that the Postgres and KurrentDB adapters implement.

use std::fmt;
use std::pin::Pin;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_core::Stream;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

/// The unique id of an event. Appending an event whose id is already in the
/// log is a no-op that returns the original position, so ids derived
/// deterministically from their cause make retries and reprocessing safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub Uuid);

impl EventId {
    /// A fresh, time-ordered id (UUIDv7).
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// A deterministic id derived from a namespace event and a name, for
    /// events caused by another one (the same cause always yields the same id).
    pub fn derived(cause: EventId, name: &str) -> Self {
        Self(Uuid::new_v5(&cause.0, name.as_bytes()))
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The name of a stream: the consistency boundary of one aggregate, such as
/// `actor-<uuid>` or `post-<uuid>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId(String);

/// Why a string is not a valid [`StreamId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamIdError {
    #[error("a stream id must not be empty")]
    Empty,
    #[error("a stream id is at most {max} bytes long, this one is {len}")]
    TooLong { len: usize, max: usize },
    #[error("stream ids starting with `$` are reserved for the event store")]
    Reserved,
    #[error("a stream id must not contain control characters")]
    ControlCharacter,
}

impl StreamId {
    /// The longest stream id accepted, in bytes.
    pub const MAX_LEN: usize = 200;

    /// Validates and wraps a stream id.
    pub fn new(id: impl Into<String>) -> Result<Self, StreamIdError> {
        let id = id.into();
        if id.is_empty() {
            return Err(StreamIdError::Empty);
        }
        if id.len() > Self::MAX_LEN {
            return Err(StreamIdError::TooLong {
                len: id.len(),
                max: Self::MAX_LEN,
            });
        }
        if id.starts_with('$') {
            return Err(StreamIdError::Reserved);
        }
        if id.chars().any(char::is_control) {
            return Err(StreamIdError::ControlCharacter);
        }
        Ok(Self(id))
    }

    /// Wraps an id composed inside the domain from validated parts (a known
    /// prefix and a UUID or a handle), which cannot break the rules above.
    pub(crate) fn composed(id: String) -> Self {
        debug_assert!(Self::new(id.clone()).is_ok(), "bad composed stream id {id}");
        Self(id)
    }

    /// The stream id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StreamId {
    type Error = StreamIdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<StreamId> for String {
    fn from(value: StreamId) -> Self {
        value.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A place in the global log (`$all`).
///
/// Positions are totally ordered and every reader sees events in the same
/// order, but they are not dense and their two parts mean different things to
/// different stores (for Postgres: the writing transaction and the event's
/// sequence number; for KurrentDB: the commit and prepare positions). Treat a
/// position as an opaque cursor: compare it, store it, hand it back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    major: u64,
    minor: u64,
}

impl Position {
    /// Before the first event: reading after it reads the whole log.
    pub const START: Position = Position { major: 0, minor: 0 };

    /// After every event: reading before it reads the end of the log.
    pub const END: Position = Position {
        major: u64::MAX,
        minor: u64::MAX,
    };

    /// Builds a position from the two parts a store hands out.
    pub const fn new(major: u64, minor: u64) -> Self {
        Self { major, minor }
    }

    /// The more significant part.
    pub const fn major(self) -> u64 {
        self.major
    }

    /// The less significant part.
    pub const fn minor(self) -> u64 {
        self.minor
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A string that is not a position (`<major>.<minor>`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a log position (expected `<major>.<minor>`, e.g. `742.1024`)")]
pub struct ParsePositionError(String);

impl FromStr for Position {
    type Err = ParsePositionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParsePositionError(s.to_owned());
        let (major, minor) = s.split_once('.').ok_or_else(bad)?;
        Ok(Self {
            major: major.parse().map_err(|_| bad())?,
            minor: minor.parse().map_err(|_| bad())?,
        })
    }
}

impl Serialize for Position {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What the writer expects a stream to look like before its append.
///
/// A stream's version is the number of events in it, which is also the
/// version of its last event (the first event has version 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the stream holds.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must exist, at any version.
    StreamExists,
    /// The stream must be at exactly this version (0 is the same as `NoStream`).
    Exact(u64),
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any version"),
            Self::NoStream => f.write_str("no stream"),
            Self::StreamExists => f.write_str("an existing stream"),
            Self::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// How an inbound request's signature was judged, kept with the events it
/// caused so that audits and reprocessing see exactly what arrived.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum SignatureVerdict {
    /// The signature verified with the key of `signer`.
    Verified {
        /// The `keyId` the request named.
        key_id: String,
        /// The actor owning that key.
        signer: String,
        /// The scheme, e.g. `draft-cavage-rsa-sha256` or `rfc9421`.
        scheme: String,
    },
    /// The request carried no signature (accepted only where allowed).
    Unsigned,
    /// The signature verified, but its signer is not the activity's actor
    /// (a forwarded or relayed activity): what is stored was fetched from
    /// the activity's own server instead of taken from the request.
    Refetched {
        key_id: String,
        /// Who signed the request (the forwarder).
        signer: String,
        scheme: String,
        /// Where the stored copy was fetched from.
        from: String,
    },
}

/// Facts about an event that are not part of what happened: where it came
/// from, what caused it, who did it. Unknown keys are kept, so newer writers
/// can add metadata that older readers pass through.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// The event that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<EventId>,
    /// Groups all events that stem from one request or command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The ActivityPub id of the actor who acted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// When an inbound payload reached us.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<DateTime<Utc>>,
    /// The remote host an inbound payload came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_host: Option<String>,
    /// The signature verdict of an inbound request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureVerdict>,
    /// Anything else, kept verbatim.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Metadata {
    /// Metadata for an event caused by `cause`: same correlation, `cause` as causation.
    pub fn caused_by(cause: &RecordedEvent) -> Self {
        Self {
            causation_id: Some(cause.id),
            correlation_id: cause.metadata.correlation_id.or(Some(cause.id.0)),
            ..Self::default()
        }
    }
}

/// An event about to be appended.
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// Unique id; appending the same id again is a no-op.
    pub id: EventId,
    /// The event's type name, e.g. `PostCreated`.
    pub event_type: String,
    /// The version of the payload schema of `event_type`.
    pub schema_version: u32,
    /// The event's facts, as JSON.
    pub payload: Box<RawValue>,
    /// Causation, correlation and provenance.
    pub metadata: Metadata,
}

impl NewEvent {
    /// Serialises `payload` into a new event with a fresh id.
    pub fn new<T: Serialize + ?Sized>(
        event_type: impl Into<String>,
        schema_version: u32,
        payload: &T,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            id: EventId::new(),
            event_type: event_type.into(),
            schema_version,
            payload: serde_json::value::to_raw_value(payload)?,
            metadata: Metadata::default(),
        })
    }

    /// Replaces the id (for deterministic ids).
    pub fn with_id(mut self, id: EventId) -> Self {
        self.id = id;
        self
    }

    /// Replaces the metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }
}

/// An event as stored in the log.
#[derive(Clone, Debug)]
pub struct RecordedEvent {
    pub id: EventId,
    pub stream_id: StreamId,
    /// 1 for the first event of the stream, then +1 each.
    pub stream_version: u64,
    pub event_type: String,
    pub schema_version: u32,
    pub payload: Payload,
    pub metadata: Metadata,
    /// When the event store recorded it.
    pub recorded_at: DateTime<Utc>,
    /// Where it stands in the global log.
    pub position: Position,
}

impl RecordedEvent {
    /// Deserialises the payload.
    pub fn decode<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        self.payload.decode()
    }
}

/// The JSON payload of a stored event.
///
/// Stores only hand out what they stored from a [`NewEvent`], whose payload
/// was valid JSON, so reading the log does not parse payloads a second time
/// to check them; they are parsed when decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload(Box<str>);

impl Payload {
    /// Wraps JSON text read back from an event store. The store vouches that
    /// it is the valid JSON it was given.
    pub fn from_store(json: impl Into<Box<str>>) -> Self {
        Self(json.into())
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        &self.0
    }

    /// Deserialises the payload.
    pub fn decode<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.0)
    }
}

impl Serialize for Payload {
    /// Serialises as the JSON value itself, not as a string.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// One appended event: its id, stream version and global position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendedEvent {
    pub id: EventId,
    pub stream_version: u64,
    pub position: Position,
}

/// The result of an append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendOutcome {
    /// The events, in the order they were given.
    pub events: Vec<AppendedEvent>,
    /// True when every event was already in the log, so nothing was written
    /// and `events` describes the original append.
    pub deduplicated: bool,
}

impl AppendOutcome {
    /// The position of the last event of the append.
    pub fn last_position(&self) -> Option<Position> {
        self.events.iter().map(|e| e.position).max()
    }

    /// The stream version after the append.
    pub fn stream_version(&self) -> Option<u64> {
        self.events.iter().map(|e| e.stream_version).max()
    }
}

/// What can go wrong with the event log.
#[derive(Debug, thiserror::Error)]
pub enum EventStoreError {
    /// The stream was not at the expected version; nothing was written.
    #[error("stream `{stream}` expected {expected} but is at {}", match .actual { Some(v) => format!("version {v}"), None => "no stream".to_owned() })]
    WrongExpectedVersion {
        stream: StreamId,
        expected: ExpectedVersion,
        actual: Option<u64>,
    },
    /// Some but not all events of an append were already in the log; nothing
    /// was written. A retry must resend exactly the original batch.
    #[error(
        "{existing} of the {total} events are already in the log: an append is idempotent only as a whole"
    )]
    PartialDuplicate { existing: usize, total: usize },
    /// The append was refused before reaching the store.
    #[error("invalid append: {0}")]
    InvalidAppend(String),
    /// A stored event could not be read back.
    #[error("stored event at {position} is unreadable: {reason}")]
    Corrupt { position: Position, reason: String },
    /// The store could not be reached or failed.
    #[error("event store unavailable")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Checks the rules every store applies to an append before writing
/// anything: at least one and at most `max_batch` events, each with a
/// non-empty type, a schema version from 1, and an id of its own.
pub fn validate_append(events: &[NewEvent], max_batch: usize) -> Result<(), EventStoreError> {
    let invalid = |why: String| Err(EventStoreError::InvalidAppend(why));
    if events.is_empty() {
        return invalid("an append needs at least one event".into());
    }
    if events.len() > max_batch {
        return invalid(format!(
            "at most {max_batch} events per append, got {}",
            events.len()
        ));
    }
    let mut ids = std::collections::HashSet::with_capacity(events.len());
    for event in events {
        if event.event_type.is_empty() {
            return invalid(format!("event {} has an empty type", event.id));
        }
        if event.schema_version == 0 {
            return invalid(format!(
                "event {} has schema version 0 (versions start at 1)",
                event.id
            ));
        }
        if !ids.insert(event.id) {
            return invalid(format!("event id {} appears twice in one append", event.id));
        }
    }
    Ok(())
}

/// A stream of events from a subscription: catch-up first, then live.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<RecordedEvent, EventStoreError>> + Send>>;

/// The event log. Implementations must pass the contract suite in
/// `chorus-tests` (`chorus_tests::contract`).
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream` atomically (all or none), in one round
    /// trip, if the stream matches `expected`. If every event id is already in
    /// the log, nothing is written and the original positions are returned.
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, EventStoreError>;

    /// Reads up to `limit` events of `stream` from version `from` (inclusive).
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, EventStoreError>;

    /// The current version of `stream`, or `None` if it has no events.
    async fn stream_version(&self, stream: &StreamId) -> Result<Option<u64>, EventStoreError>;

    /// Reads up to `limit` events of the whole log strictly after `after`, in
    /// log order. An event that is not returned now will never later appear
    /// before the last one returned: readers may checkpoint the last position.
    ///
    /// So that this holds, an event can be withheld for a moment after its
    /// append returned: while a transaction that started writing before it
    /// is still running (and might yet commit an event that belongs before
    /// it). Readers that need one particular event wait for its position.
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, EventStoreError>;

    /// Every event strictly after `after`, in log order: first what is stored,
    /// then new events as they are committed. Never skips or repeats one.
    fn subscribe_all(&self, after: Position) -> EventStream;
}

/// An event log that can say where it ends and take events copied from
/// another log: either end of `chorus events migrate`, and the log of
/// record a Postgres log mirrors when `chorus serve` runs with an external
/// one (`PgEventStore::with_upstream` in `chorus-postgres`).
#[async_trait]
pub trait MigrationStore: EventStore {
    /// The last event readable now.
    async fn last_event(&self) -> Result<Option<RecordedEvent>, EventStoreError>;

    /// How many events follow `after`, when the store can tell cheaply.
    async fn count_after(&self, after: Position) -> Result<Option<u64>, EventStoreError>;

    /// Appends events copied from another log, keeping their ids, schema
    /// versions and recorded times; idempotent as `append` is.
    async fn import(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[RecordedEvent],
    ) -> Result<AppendOutcome, EventStoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_by_major_then_minor_and_round_trip_as_text() {
        let a = Position::new(7, 900);
        let b = Position::new(8, 3);
        assert!(a < b);
        assert!(Position::START < a);
        assert_eq!("7.900".parse::<Position>(), Ok(a));
        assert_eq!(a.to_string(), "7.900");
        assert_eq!(serde_json::to_string(&b).ok().as_deref(), Some("\"8.3\""));
        assert!("7".parse::<Position>().is_err());
        assert!("x.1".parse::<Position>().is_err());
        assert!("-1.1".parse::<Position>().is_err());
    }

    #[test]
    fn stream_ids_are_validated() {
        assert!(StreamId::new("actor-1").is_ok());
        assert_eq!(StreamId::new(""), Err(StreamIdError::Empty));
        assert_eq!(StreamId::new("$all"), Err(StreamIdError::Reserved));
        assert_eq!(StreamId::new("a\nb"), Err(StreamIdError::ControlCharacter));
        assert!(matches!(
            StreamId::new("x".repeat(201)),
            Err(StreamIdError::TooLong { len: 201, .. })
        ));
    }

    #[test]
    fn metadata_keeps_unknown_keys() {
        let json = r#"{"actor":"https://a.example/users/x","trace":"abc"}"#;
        let m: Metadata = serde_json::from_str(json).unwrap_or_default();
        assert_eq!(m.actor.as_deref(), Some("https://a.example/users/x"));
        assert_eq!(m.extra.get("trace"), Some(&serde_json::json!("abc")));
        let back = serde_json::to_value(&m).unwrap_or_default();
        assert_eq!(
            back,
            serde_json::from_str::<serde_json::Value>(json).unwrap_or_default()
        );
    }

    #[test]
    fn payloads_serialise_as_json_values_and_decode() {
        let payload = Payload::from_store(r#"{"a":[1,2]}"#);
        let wrapped =
            serde_json::to_string(&serde_json::json!({ "p": payload })).unwrap_or_default();
        assert_eq!(wrapped, r#"{"p":{"a":[1,2]}}"#);
        let decoded: serde_json::Value = payload.decode().unwrap_or_default();
        assert_eq!(decoded["a"][1], 2);
    }

    #[test]
    fn derived_ids_are_deterministic() {
        let cause = EventId::new();
        assert_eq!(
            EventId::derived(cause, "accept"),
            EventId::derived(cause, "accept")
        );
        assert_ne!(
            EventId::derived(cause, "accept"),
            EventId::derived(cause, "reject")
        );
    }
}
