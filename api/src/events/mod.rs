//! Reading the log as a stream, for analytics consumers: which events
//! (`Selection`), one event as a line of NDJSON, and the catch-up from a
//! position followed by live events that the GraphQL subscription and
//! `/events.ndjson?follow=true` serve. `export` is `chorus events export`,
//! `ndjson` the HTTP endpoint.

pub mod export;
pub mod migrate;
pub mod ndjson;
pub mod upstream;

use std::str::FromStr;

use chorus_domain::{EventStore, EventStoreError, EventStream, Position, RecordedEvent, StreamId};
use chorus_postgres::{Narrowed, PgEventStore};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt as _;
use tokio::sync::mpsc;

/// The most types, or streams, one selection may name.
pub const MAX_NAMES: usize = 100;

/// Events read per query while catching up.
const PAGE: usize = 1000;

/// Which events a reader wants, as the GraphQL `EventFilter`, the NDJSON
/// endpoint's parameters and the export's options give them.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Only these types.
    pub types: Option<Vec<String>>,
    /// Only these streams; an entry ending in `-` is a prefix (`post-`).
    pub streams: Option<Vec<String>>,
    /// Only events by or about this actor (an ActivityPub id).
    pub actor: Option<String>,
    /// Only events by or about an actor of this host, or received from it.
    pub host: Option<String>,
    /// Recorded at or after.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before.
    pub to: Option<DateTime<Utc>>,
}

/// A selection that cannot be read, and why (for the reader to fix).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectionError(pub String);

fn invalid<T>(why: impl Into<String>) -> Result<T, SelectionError> {
    Err(SelectionError(why.into()))
}

impl Selection {
    /// The read this selection asks for, or why it is not one.
    pub fn narrowed(&self) -> Result<Narrowed, SelectionError> {
        let mut narrowed = Narrowed::default();
        if let Some(types) = &self.types {
            if types.is_empty() || types.len() > MAX_NAMES {
                return invalid(format!(
                    "`types` must name 1 to {MAX_NAMES} event types (leave it out for every type)"
                ));
            }
            if let Some(bad) = types.iter().find(|t| {
                t.is_empty()
                    || t.len() > 100
                    || !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            }) {
                return invalid(format!(
                    "`{bad}` is not an event type (letters, digits and `_`, e.g. `PostCreated`)"
                ));
            }
            narrowed.types = Some(types.clone());
        }
        if let Some(streams) = &self.streams {
            if streams.is_empty() || streams.len() > MAX_NAMES {
                return invalid(format!(
                    "`streams` must name 1 to {MAX_NAMES} streams or prefixes (leave it out for every stream)"
                ));
            }
            for stream in streams {
                if let Err(e) = StreamId::new(stream.as_str()) {
                    return invalid(format!("`{stream}` is not a stream: {e}"));
                }
                if stream.ends_with('-') {
                    narrowed.stream_prefixes.push(stream.clone());
                } else {
                    narrowed.streams.push(stream.clone());
                }
            }
        }
        if let Some(actor) = &self.actor {
            match url::Url::parse(actor) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {}
                _ => {
                    return invalid(format!(
                        "`actor` must be an actor's ActivityPub id (an http or https URL), not `{actor}`"
                    ));
                }
            }
            narrowed.actor = Some(actor.clone());
        }
        if let Some(host) = &self.host {
            let valid = !host.is_empty()
                && host.len() <= 260
                && !host
                    .chars()
                    .any(|c| c.is_whitespace() || matches!(c, '/' | '?' | '#' | '@'));
            if !valid {
                return invalid(format!(
                    "`host` must be a host name, with a port if it has one (e.g. `social.example`), not `{host}`"
                ));
            }
            narrowed.host = Some(host.to_lowercase());
        }
        if let (Some(from), Some(to)) = (self.from, self.to)
            && from >= to
        {
            return invalid("`from` must be before `to`");
        }
        narrowed.from = self.from;
        narrowed.to = self.to;
        Ok(narrowed)
    }
}

/// A cursor (a position in the log, as `<major>.<minor>`) handed back by a
/// reader, or why it is not one.
pub fn cursor(name: &str, value: &str) -> Result<Position, SelectionError> {
    value.parse().map_err(|_| {
        SelectionError(format!(
            "`{name}` is not a cursor from this log (`<major>.<minor>`, e.g. `742.1024`): `{value}`"
        ))
    })
}

/// The position just before `position`: reading after it reads `position`
/// too. (Positions are pairs of integers, compared in order; readers only
/// compare them, but a bound that includes its own position is found this
/// way.)
pub fn just_before(position: Position) -> Position {
    match (position.major(), position.minor()) {
        (0, 0) => Position::START,
        (major, 0) => Position::new(major - 1, u64::MAX),
        (major, minor) => Position::new(major, minor - 1),
    }
}

/// The position just after `position`: reading before it reads `position`
/// too.
pub fn just_after(position: Position) -> Position {
    match position.minor().checked_add(1) {
        Some(minor) => Position::new(position.major(), minor),
        None => Position::new(position.major().saturating_add(1), 0),
    }
}

/// A bound of an export's range: a position in the log or a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    Position(Position),
    Time(DateTime<Utc>),
}

impl FromStr for Bound {
    type Err = SelectionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(position) = s.parse() {
            return Ok(Self::Position(position));
        }
        if let Ok(time) = DateTime::parse_from_rfc3339(s) {
            return Ok(Self::Time(time.with_timezone(&Utc)));
        }
        invalid(format!(
            "`{s}` is neither a log position (`<major>.<minor>`, e.g. `742.1024`) \
             nor an RFC 3339 time (e.g. `2026-12-01T00:00:00Z`)"
        ))
    }
}

/// The time as the GraphQL `DateTime` scalar writes it.
pub fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// Appends `event` to `out` as one line of NDJSON: the fields of the GraphQL
/// `LogEvent`, the payload as stored (`data`).
pub fn ndjson_line(event: &RecordedEvent, out: &mut Vec<u8>) {
    use std::io::Write as _;
    // Only the stream and the type are strings that may need escaping; the
    // payload is JSON already, and the metadata serialises as it is stored.
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "{{\"position\":\"{}\",\"id\":\"{}\",\"stream\":",
        event.position, event.id.0
    );
    let _ = serde_json::to_writer(&mut *out, event.stream_id.as_str());
    let _ = write!(out, ",\"streamVersion\":{},\"type\":", event.stream_version);
    let _ = serde_json::to_writer(&mut *out, &event.event_type);
    let _ = write!(
        out,
        ",\"schemaVersion\":{},\"recordedAt\":\"{}\",\"data\":",
        event.schema_version,
        time(&event.recorded_at)
    );
    out.extend_from_slice(event.payload.get().as_bytes());
    out.extend_from_slice(b",\"metadata\":");
    let _ = serde_json::to_writer(&mut *out, &event.metadata);
    out.extend_from_slice(b"}\n");
}

/// The events `narrowed` selects after `after`, in log order: first those
/// stored, read with `narrowed` in SQL up to the end of the log as it was
/// when the read began; then, if `live`, each new event as it is
/// committed (from [`EventStore::subscribe_all`], tested with
/// [`Narrowed::matches`]). Ends when the reader drops the stream, or after
/// an error (which it yields).
pub fn read(store: &PgEventStore, after: Position, narrowed: Narrowed, live: bool) -> EventStream {
    let (tx, mut rx) = mpsc::channel(PAGE);
    let store = store.clone();
    tokio::spawn(async move {
        let send = |event| {
            let tx = tx.clone();
            async move { tx.send(event).await.is_ok() }
        };
        let end = match catch_up(&store, after, &narrowed, &tx).await {
            Ok(Some(end)) => end,
            Ok(None) => return,
            Err(error) => {
                send(Err(error)).await;
                return;
            }
        };
        if !live {
            return;
        }
        let mut events = store.subscribe_all(end);
        loop {
            tokio::select! {
                next = events.next() => match next {
                    Some(Ok(event)) => {
                        if narrowed.matches(&event) && !send(Ok(event)).await {
                            return;
                        }
                    }
                    Some(Err(error)) => {
                        send(Err(error)).await;
                        return;
                    }
                    None => return,
                },
                () = tx.closed() => return,
            }
        }
    });
    Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

/// Sends the stored events `narrowed` selects after `after`, up to the last
/// readable event when it began; returns that position (where live reading
/// goes on), or `None` when the reader went away.
async fn catch_up(
    store: &PgEventStore,
    mut after: Position,
    narrowed: &Narrowed,
    tx: &mpsc::Sender<Result<RecordedEvent, EventStoreError>>,
) -> Result<Option<Position>, EventStoreError> {
    let pool = store.pool();
    // Everything up to the last readable event is final: a filtered read
    // up to it misses nothing, and live reading goes on from there rather
    // than from the last event the filter took (perhaps far back).
    let head = PgEventStore::read_before(pool, Position::END, &Narrowed::default(), 1)
        .await?
        .first()
        .map_or(Position::START, |e| e.position);
    let upto = Narrowed {
        until: Some(narrowed.until.map_or(head, |until| until.min(head))),
        ..narrowed.clone()
    };
    while after < head {
        let page = PgEventStore::read_after(pool, after, &upto, PAGE).await?;
        let full = page.len() == PAGE;
        for event in page {
            after = event.position;
            if tx.send(Ok(event)).await.is_err() {
                return Ok(None);
            }
        }
        if !full {
            break;
        }
    }
    Ok(Some(after.max(head)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_positions_just_before_and_after_are_next_to_it() {
        for (major, minor) in [(5, 3), (5, 0), (0, 1), (7, u64::MAX)] {
            let p = Position::new(major, minor);
            assert!(just_before(p) < p, "{p}");
            assert!(just_after(p) > p, "{p}");
        }
        assert_eq!(just_before(Position::new(5, 0)), Position::new(4, u64::MAX));
        assert_eq!(just_after(Position::new(5, u64::MAX)), Position::new(6, 0));
        assert_eq!(just_before(Position::START), Position::START);
    }

    #[test]
    fn bounds_are_positions_or_times() {
        assert_eq!("12.34".parse(), Ok(Bound::Position(Position::new(12, 34))));
        assert!(matches!(
            "2026-12-01T00:00:00+01:00".parse(),
            Ok(Bound::Time(t)) if t.to_rfc3339() == "2026-11-30T23:00:00+00:00"
        ));
        let refused = "yesterday".parse::<Bound>();
        assert!(
            matches!(&refused, Err(e) if e.0.contains("neither a log position")),
            "{refused:?}"
        );
    }
}
