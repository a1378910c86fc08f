//! The KurrentDB adapter: an [`EventStore`] on a KurrentDB (formerly
//! EventStoreDB) server, through the `kurrentdb` gRPC client.
//!
//! # How the log maps onto KurrentDB
//!
//! - A stream is the KurrentDB stream of the same name. Our stream versions
//!   start at 1, KurrentDB's revisions at 0: version `v` is revision `v - 1`,
//!   and `ExpectedVersion::Exact(v)` is `StreamState::StreamRevision(v - 1)`
//!   (`Exact(0)` is `NoStream`).
//! - A global [`Position`] is the event's `$all` position:
//!   `Position::new(commit, prepare)`. It stays opaque to the rest of Chorus.
//! - An event's id is the KurrentDB event id, its type the KurrentDB event
//!   type, its payload the event's data (content type `application/json`).
//! - The event's KurrentDB metadata is a JSON object: our [`Metadata`] as the
//!   Postgres store keeps it, plus `$schemaVersion` (the payload's schema
//!   version), `$correlationId` and `$causationId` (so KurrentDB's own
//!   `$by_correlation_id` projection understands them), and, for events
//!   copied from another log, `$recordedAt` (the time the first log recorded
//!   them). Without `$recordedAt` an event's recorded time is the time the
//!   KurrentDB server created it.
//! - Reads of the whole log and subscriptions skip system events (types and
//!   streams starting with `$`), on the server where it can filter.
//!
//! # Idempotence
//!
//! KurrentDB only recognises a repeated append in some cases (the same
//! events at the same expected revision). The [`EventStore`] contract asks
//! more: appending ids already stored is a no-op returning the original
//! positions, whatever the expected version, and a batch of which only some
//! ids are stored is refused whole. So before appending, the store looks the
//! ids up in the target stream (the ids of a stream are read once and then
//! only what was appended since, kept per process). Ids are unique per
//! stream here, not across the whole log as in Postgres: an id reused in
//! another stream is not recognised. Two writers racing to append the same
//! new ids with `ExpectedVersion::Any` may both write; with any other
//! expectation the loser's conflict is turned into the winner's outcome.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chorus_domain::{
    AppendOutcome, AppendedEvent, EventId, EventStore, EventStoreError, EventStream,
    ExpectedVersion, Metadata, NewEvent, Payload, Position, RecordedEvent, StreamId,
};
use chrono::{DateTime, Utc};
use kurrentdb::{
    AppendToStreamOptions, Client, ClientSettings, CurrentRevision, EventData, ReadAllOptions,
    ReadStreamOptions, StreamPosition, StreamState, SubscribeToAllOptions, SubscriptionFilter,
};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use uuid::Uuid;

/// The most events one append may carry (KurrentDB also limits an append's
/// size in bytes, 16 MiB by default).
pub const MAX_BATCH: usize = 10_000;

/// Events read per request by subscriptions' catch-up and id look-ups.
const PAGE: usize = 1000;

/// How many streams' ids the store keeps for its duplicate check before it
/// starts over (each is read again on its next append).
const CACHED_STREAMS: usize = 10_000;

/// Metadata keys the store owns; the rest is our [`Metadata`].
const SCHEMA_VERSION_KEY: &str = "$schemaVersion";
const RECORDED_AT_KEY: &str = "$recordedAt";
const CORRELATION_KEY: &str = "$correlationId";
const CAUSATION_KEY: &str = "$causationId";

/// Why a KurrentDB connection string was refused. Never shows the password.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("`{url}` is not a KurrentDB connection string: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot start a KurrentDB client for {url}: {reason}")]
    Client { url: String, reason: String },
}

/// The event log on a KurrentDB server. Cheap to clone.
#[derive(Clone)]
pub struct KurrentEventStore {
    client: Client,
    /// The connection string without credentials, for messages.
    display: String,
    ids: Arc<Mutex<HashMap<String, StreamIds>>>,
}

impl std::fmt::Debug for KurrentEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KurrentEventStore")
            .field("server", &self.display)
            .finish_non_exhaustive()
    }
}

/// The ids of one stream's events, read up to `next_revision`.
#[derive(Debug, Default)]
struct StreamIds {
    next_revision: u64,
    events: HashMap<Uuid, AppendedEvent>,
}

impl KurrentEventStore {
    /// A store on the server of `url` (`kurrentdb://host:2113?tls=false`,
    /// `esdb://…`, with `+discover` for a cluster). Connects lazily, on the
    /// first request. Must be called inside a Tokio runtime.
    pub fn connect(url: &str) -> Result<Self, ConnectError> {
        let display = redact(url);
        let settings: ClientSettings =
            url.parse()
                .map_err(
                    |e: kurrentdb::ClientSettingsParseError| ConnectError::InvalidUrl {
                        url: display.clone(),
                        reason: scrub(e.message(), url, &display),
                    },
                )?;
        let client = Client::new(settings).map_err(|e| ConnectError::Client {
            url: display.clone(),
            reason: scrub(&e.to_string(), url, &display),
        })?;
        Ok(Self {
            client,
            display,
            ids: Arc::default(),
        })
    }

    /// The server's connection string without credentials.
    pub fn server(&self) -> &str {
        &self.display
    }

    /// Appends events copied from another log to `stream`, keeping their
    /// ids, types, schema versions, payloads, metadata and recorded times
    /// (in `$recordedAt`). Idempotent as [`EventStore::append`] is.
    pub async fn import(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[RecordedEvent],
    ) -> Result<AppendOutcome, EventStoreError> {
        let ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
        let data = events
            .iter()
            .map(|e| {
                event_data(
                    e.id,
                    &e.event_type,
                    e.schema_version,
                    e.payload.get(),
                    &e.metadata,
                    Some(e.recorded_at),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.append_data(stream, expected, ids, data).await
    }

    /// The last non-system event of the log, if any.
    pub async fn last_event(&self) -> Result<Option<RecordedEvent>, EventStoreError> {
        let options = ReadAllOptions::default()
            .position(StreamPosition::End)
            .filter(SubscriptionFilter::on_event_type().exclude_system_events())
            .max_count(1);
        let mut read = self.client.read_all(&options).await.map_err(backend)?;
        while let Some(event) = read.next().await.map_err(backend)? {
            if let Some(event) = event.event {
                if is_system(&event) {
                    continue;
                }
                return from_kurrent(&event).map(Some);
            }
        }
        Ok(None)
    }

    async fn append_data(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        ids: Vec<EventId>,
        data: Vec<EventData>,
    ) -> Result<AppendOutcome, EventStoreError> {
        if let Some(outcome) = self.existing(stream, &ids).await? {
            return Ok(outcome);
        }
        let options = AppendToStreamOptions::default().stream_state(stream_state(expected));
        match self
            .client
            .append_to_stream(stream.as_str(), &options, data)
            .await
        {
            Ok(written) => {
                let count = ids.len() as u64;
                let first = (written.next_expected_version + 1).saturating_sub(count);
                let read = self.read_revisions(stream, first, ids.len()).await?;
                let by_id: HashMap<Uuid, AppendedEvent> =
                    read.iter().map(|e| (e.id.0, appended_event(e))).collect();
                let events = ids
                    .iter()
                    .map(|id| {
                        by_id.get(&id.0).copied().ok_or_else(|| {
                            EventStoreError::Backend(
                                format!(
                                    "{stream}: event {id} was appended but is not where the server said it put it"
                                )
                                .into(),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(AppendOutcome {
                    events,
                    deduplicated: false,
                })
            }
            Err(kurrentdb::Error::WrongExpectedVersion { current, .. }) => {
                // Perhaps a concurrent append of these very events won.
                if let Some(outcome) = self.existing(stream, &ids).await? {
                    return Ok(outcome);
                }
                Err(EventStoreError::WrongExpectedVersion {
                    stream: stream.clone(),
                    expected,
                    actual: match current {
                        CurrentRevision::Current(revision) => Some(revision + 1),
                        CurrentRevision::NoStream => None,
                    },
                })
            }
            Err(error) => Err(backend(error)),
        }
    }

    /// If the ids are already in `stream`: the original outcome when all
    /// are, a refusal when only some are, `None` when none is.
    async fn existing(
        &self,
        stream: &StreamId,
        ids: &[EventId],
    ) -> Result<Option<AppendOutcome>, EventStoreError> {
        let next_revision = self
            .ids
            .lock()
            .ok()
            .and_then(|cache| cache.get(stream.as_str()).map(|s| s.next_revision))
            .unwrap_or(0);
        // Read what was appended since the last look (by anyone).
        let mut fresh = Vec::new();
        let mut revision = next_revision;
        loop {
            let page = self.read_revisions(stream, revision, PAGE).await?;
            let full = page.len() == PAGE;
            if let Some(last) = page.last() {
                revision = last.stream_version;
            }
            fresh.extend(page);
            if !full {
                break;
            }
        }
        let Ok(mut cache) = self.ids.lock() else {
            return Err(EventStoreError::Backend(
                "the store's id cache was poisoned by a panic".into(),
            ));
        };
        if cache.len() >= CACHED_STREAMS && !cache.contains_key(stream.as_str()) {
            cache.clear();
        }
        let known = cache.entry(stream.as_str().to_owned()).or_default();
        for event in &fresh {
            known.events.insert(event.id.0, appended_event(event));
        }
        known.next_revision = known.next_revision.max(revision);
        let found: Vec<AppendedEvent> = ids
            .iter()
            .filter_map(|id| known.events.get(&id.0).copied())
            .collect();
        match found.len() {
            0 => Ok(None),
            n if n == ids.len() => Ok(Some(AppendOutcome {
                events: found,
                deduplicated: true,
            })),
            n => Err(EventStoreError::PartialDuplicate {
                existing: n,
                total: ids.len(),
            }),
        }
    }

    /// Up to `limit` events of `stream` from revision `from` (0-based).
    async fn read_revisions(
        &self,
        stream: &StreamId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let options = ReadStreamOptions::default()
            .position(StreamPosition::Position(from))
            .forwards()
            .max_count(limit);
        let mut read = match self.client.read_stream(stream.as_str(), &options).await {
            Ok(read) => read,
            Err(kurrentdb::Error::ResourceNotFound | kurrentdb::Error::ResourceDeleted) => {
                return Ok(Vec::new());
            }
            Err(error) => return Err(backend(error)),
        };
        let mut out = Vec::new();
        loop {
            match read.next().await {
                Ok(Some(event)) => {
                    if let Some(event) = event.event {
                        out.push(from_kurrent(&event)?);
                    }
                }
                Ok(None) => return Ok(out),
                Err(kurrentdb::Error::ResourceNotFound | kurrentdb::Error::ResourceDeleted) => {
                    return Ok(out);
                }
                Err(error) => return Err(backend(error)),
            }
        }
    }

    async fn run_subscription(
        self,
        after: Position,
        out: mpsc::Sender<Result<RecordedEvent, EventStoreError>>,
    ) {
        // `None`: from the start of the log, with nothing delivered yet.
        let mut last = (after != Position::START).then_some(after);
        let mut failures = 0u32;
        loop {
            let position = match last {
                None => StreamPosition::Start,
                Some(p) => StreamPosition::Position(to_kurrent(p)),
            };
            let options = SubscribeToAllOptions::default()
                .position(position)
                .filter(SubscriptionFilter::on_event_type().exclude_system_events());
            let mut subscription = self.client.subscribe_to_all(&options).await;
            loop {
                let next = tokio::select! {
                    next = subscription.next() => next,
                    () = out.closed() => return,
                };
                match next {
                    Ok(resolved) => {
                        failures = 0;
                        let Some(event) = resolved.event else {
                            continue;
                        };
                        let position = from_position(event.position);
                        // A subscription from a position starts after it; a
                        // resumed one must never hand out an event twice.
                        if last.is_some_and(|l| position <= l) || is_system(&event) {
                            continue;
                        }
                        let event = from_kurrent(&event);
                        let failed = event.is_err();
                        if out.send(event).await.is_err() || failed {
                            // Unreadable stored data ends the subscription
                            // rather than skipping an event.
                            return;
                        }
                        last = Some(position);
                    }
                    Err(kurrentdb::Error::AccessDenied) => {
                        let _ = out
                            .send(Err(EventStoreError::Backend(
                                "KurrentDB refused the subscription to $all: access denied".into(),
                            )))
                            .await;
                        return;
                    }
                    Err(error) => {
                        failures += 1;
                        tracing::warn!(%error, failures, "KurrentDB subscription dropped; resuming");
                        let pause = Duration::from_millis(100 * u64::from(failures.min(50)));
                        tokio::select! {
                            () = tokio::time::sleep(pause) => break,
                            () = out.closed() => return,
                        }
                    }
                }
            }
        }
    }
}

#[async_trait]
impl EventStore for KurrentEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, EventStoreError> {
        chorus_domain::validate_append(&events, MAX_BATCH)?;
        if let Some(event) = events.iter().find(|e| e.event_type.starts_with('$')) {
            return Err(EventStoreError::InvalidAppend(format!(
                "event {} has type `{}`: types starting with `$` are KurrentDB's own",
                event.id, event.event_type
            )));
        }
        let ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
        let data = events
            .iter()
            .map(|e| {
                event_data(
                    e.id,
                    &e.event_type,
                    e.schema_version,
                    e.payload.get(),
                    &e.metadata,
                    None,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.append_data(stream, expected, ids, data).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        self.read_revisions(stream, from.max(1) - 1, limit).await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<u64>, EventStoreError> {
        let options = ReadStreamOptions::default()
            .position(StreamPosition::End)
            .max_count(1);
        let mut read = match self.client.read_stream(stream.as_str(), &options).await {
            Ok(read) => read,
            Err(kurrentdb::Error::ResourceNotFound | kurrentdb::Error::ResourceDeleted) => {
                return Ok(None);
            }
            Err(error) => return Err(backend(error)),
        };
        match read.next().await {
            Ok(event) => Ok(event.and_then(|e| e.event).map(|e| e.revision + 1)),
            Err(kurrentdb::Error::ResourceNotFound | kurrentdb::Error::ResourceDeleted) => Ok(None),
            Err(error) => Err(backend(error)),
        }
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        if limit == 0 || after == Position::END {
            return Ok(Vec::new());
        }
        let from_start = after == Position::START;
        let position = if from_start {
            StreamPosition::Start
        } else {
            StreamPosition::Position(to_kurrent(after))
        };
        // A read from a position includes the event there: one more.
        let options = ReadAllOptions::default()
            .position(position)
            .forwards()
            .filter(SubscriptionFilter::on_event_type().exclude_system_events())
            .max_count(limit.saturating_add(1));
        let mut read = self.client.read_all(&options).await.map_err(backend)?;
        let mut out = Vec::with_capacity(limit.min(PAGE));
        while out.len() < limit {
            let Some(event) = read.next().await.map_err(backend)? else {
                break;
            };
            let Some(event) = event.event else {
                continue;
            };
            if is_system(&event) || (!from_start && from_position(event.position) <= after) {
                continue;
            }
            out.push(from_kurrent(&event)?);
        }
        Ok(out)
    }

    fn subscribe_all(&self, after: Position) -> EventStream {
        let (tx, mut rx) = mpsc::channel(PAGE);
        tokio::spawn(self.clone().run_subscription(after, tx));
        Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}

fn stream_state(expected: ExpectedVersion) -> StreamState {
    match expected {
        ExpectedVersion::Any => StreamState::Any,
        ExpectedVersion::NoStream | ExpectedVersion::Exact(0) => StreamState::NoStream,
        ExpectedVersion::StreamExists => StreamState::StreamExists,
        ExpectedVersion::Exact(version) => StreamState::StreamRevision(version - 1),
    }
}

fn to_kurrent(position: Position) -> kurrentdb::Position {
    kurrentdb::Position {
        commit: position.major(),
        prepare: position.minor(),
    }
}

fn from_position(position: kurrentdb::Position) -> Position {
    Position::new(position.commit, position.prepare)
}

fn appended_event(event: &RecordedEvent) -> AppendedEvent {
    AppendedEvent {
        id: event.id,
        stream_version: event.stream_version,
        position: event.position,
    }
}

fn is_system(event: &kurrentdb::RecordedEvent) -> bool {
    event.event_type.starts_with('$') || event.stream_id().starts_with('$')
}

/// The KurrentDB event for one of ours (see the crate docs for the mapping).
fn event_data(
    id: EventId,
    event_type: &str,
    schema_version: u32,
    payload: &str,
    metadata: &Metadata,
    recorded_at: Option<DateTime<Utc>>,
) -> Result<EventData, EventStoreError> {
    let invalid = |what: &str, e: serde_json::Error| {
        EventStoreError::InvalidAppend(format!("event {id}: {what}: {e}"))
    };
    let payload: &RawValue = serde_json::from_str(payload).map_err(|e| invalid("payload", e))?;
    let mut meta = match serde_json::to_value(metadata).map_err(|e| invalid("metadata", e))? {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    meta.insert(SCHEMA_VERSION_KEY.into(), schema_version.into());
    if let Some(correlation) = metadata.correlation_id {
        meta.insert(CORRELATION_KEY.into(), correlation.to_string().into());
    }
    if let Some(causation) = metadata.causation_id {
        meta.insert(CAUSATION_KEY.into(), causation.to_string().into());
    }
    if let Some(at) = recorded_at {
        meta.insert(
            RECORDED_AT_KEY.into(),
            at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                .into(),
        );
    }
    EventData::json(event_type, &payload)
        .and_then(|data| data.metadata_as_json(&meta))
        .map(|data| data.id(id.0))
        .map_err(|e| invalid("encoding", e))
}

/// One of our events from a KurrentDB one.
fn from_kurrent(event: &kurrentdb::RecordedEvent) -> Result<RecordedEvent, EventStoreError> {
    let position = from_position(event.position);
    let corrupt = |reason: String| EventStoreError::Corrupt { position, reason };
    let payload = std::str::from_utf8(&event.data)
        .ok()
        .filter(|text| serde_json::from_str::<&RawValue>(text).is_ok())
        .ok_or_else(|| corrupt(format!("event {}: the data is not JSON", event.id)))?;
    let mut meta: serde_json::Map<String, serde_json::Value> = if event.custom_metadata.is_empty() {
        serde_json::Map::new()
    } else {
        serde_json::from_slice(&event.custom_metadata)
            .map_err(|e| corrupt(format!("event {}: metadata: {e}", event.id)))?
    };
    let schema_version = match meta.remove(SCHEMA_VERSION_KEY) {
        Some(v) => v
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .filter(|&v| v > 0)
            .ok_or_else(|| corrupt(format!("event {}: {SCHEMA_VERSION_KEY} is {v}", event.id)))?,
        // Written by something other than Chorus.
        None => 1,
    };
    let recorded_at = match meta.remove(RECORDED_AT_KEY) {
        Some(v) => v
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| corrupt(format!("event {}: {RECORDED_AT_KEY} is {v}", event.id)))?,
        None => event.created,
    };
    meta.remove(CORRELATION_KEY);
    meta.remove(CAUSATION_KEY);
    let metadata: Metadata = serde_json::from_value(serde_json::Value::Object(meta))
        .map_err(|e| corrupt(format!("event {}: metadata: {e}", event.id)))?;
    Ok(RecordedEvent {
        id: EventId(event.id),
        stream_id: StreamId::new(event.stream_id())
            .map_err(|e| corrupt(format!("event {}: stream: {e}", event.id)))?,
        stream_version: event.revision + 1,
        event_type: event.event_type.clone(),
        schema_version,
        payload: Payload::from_store(payload),
        metadata,
        recorded_at,
        position,
    })
}

fn backend(error: kurrentdb::Error) -> EventStoreError {
    EventStoreError::Backend(Box::new(error))
}

/// The connection string with its password (if any) replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The credentials end at the last `@` before the hosts' end (a password
    // may itself contain `@`; a path or query may not come before it).
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let credentials = &rest[..at];
            let user = credentials.split_once(':').map_or(credentials, |(u, _)| u);
            format!("{scheme}://{user}:***@{}", &rest[at + 1..])
        }
        None => url.to_owned(),
    }
}

/// `text` with the connection string (and its password) replaced by the
/// redacted form.
fn scrub(text: &str, url: &str, redacted: &str) -> String {
    let mut text = text.replace(url, redacted);
    if let Some((_, rest)) = url.split_once("://") {
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@')
            && let Some((_, password)) = rest[..at].split_once(':')
            && !password.is_empty()
        {
            text = text.replace(password, "***");
        }
    }
    text
}

#[async_trait]
impl chorus_domain::MigrationStore for KurrentEventStore {
    async fn last_event(&self) -> Result<Option<RecordedEvent>, EventStoreError> {
        KurrentEventStore::last_event(self).await
    }

    async fn count_after(&self, _after: Position) -> Result<Option<u64>, EventStoreError> {
        // Counting `$all` means reading it.
        Ok(None)
    }

    async fn import(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[RecordedEvent],
    ) -> Result<AppendOutcome, EventStoreError> {
        KurrentEventStore::import(self, stream, expected, events).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("kurrentdb://admin:changeit@db.example:2113?tls=false"),
            "kurrentdb://admin:***@db.example:2113?tls=false"
        );
        assert_eq!(
            redact("esdb://a:p@ss@h1:2113,h2:2113"),
            "esdb://a:***@h1:2113,h2:2113"
        );
        assert_eq!(
            redact("kurrentdb://db.example:2113?tls=false"),
            "kurrentdb://db.example:2113?tls=false"
        );
        let url = "kurrentdb://admin:s3cret@db.example:2113?nodePreference=sideways";
        let err = KurrentEventStore::connect(url)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("db.example"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn versions_map_to_revisions() {
        assert_eq!(
            stream_state(ExpectedVersion::Exact(0)),
            StreamState::NoStream
        );
        assert_eq!(
            stream_state(ExpectedVersion::Exact(1)),
            StreamState::StreamRevision(0)
        );
        assert_eq!(stream_state(ExpectedVersion::Any), StreamState::Any);
        assert_eq!(
            stream_state(ExpectedVersion::StreamExists),
            StreamState::StreamExists
        );
    }
}
