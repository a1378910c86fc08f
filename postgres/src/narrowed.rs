//! Narrowed reads of the log: which events a reader wants, as SQL (every
//! condition served by an index, see the migration `analytics_tokens`) and,
//! for events that arrive live, as the same test in memory
//! ([`Narrowed::matches`]).

use chorus_domain::{Position, RecordedEvent};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Postgres, QueryBuilder};

use crate::checkpoints::to_db;

/// What [`PgEventStore::read_after`](crate::PgEventStore::read_after) and
/// [`PgEventStore::read_before`](crate::PgEventStore::read_before) read of
/// the log. The default reads everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Narrowed {
    /// Only events of these types (every type when `None`).
    pub types: Option<Vec<String>>,
    /// Top-level payload fields left out (the reader does not read them;
    /// an embedded ActivityStreams document is most of a payload).
    pub without_fields: Vec<String>,
    /// Only events of these streams, or of streams whose name starts with
    /// one of `stream_prefixes` (every stream when both are empty).
    pub streams: Vec<String>,
    pub stream_prefixes: Vec<String>,
    /// Only events by or about this actor (its ActivityPub id): see
    /// [`parties`].
    pub actor: Option<String>,
    /// Only events by or about an actor of this host, or received from it
    /// (compared in lower case, with a port if any).
    pub host: Option<String>,
    /// Only events recorded at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Only events recorded before this time.
    pub to: Option<DateTime<Utc>>,
    /// Only events strictly after this position.
    pub after: Option<Position>,
    /// Only events at or before this position.
    pub until: Option<Position>,
}

/// Which way a read goes from its bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Strictly after the bound, oldest first.
    After,
    /// Strictly before the bound, newest first.
    Before,
    /// Strictly after the bound, counted.
    Count,
}

impl Narrowed {
    /// The query reading up to `limit` events from `bound` in `direction`
    /// (after `prefix`: `EXPLAIN`, or nothing). Several types are read one
    /// type each, merged: each part is then an ordered range of
    /// `events_type_position`, where `event_type = ANY(…)` would read every
    /// event of the types and sort them.
    pub(crate) fn query(
        &self,
        prefix: &str,
        bound: Position,
        direction: Direction,
        limit: usize,
    ) -> QueryBuilder<'_, Postgres> {
        let mut q = QueryBuilder::new(prefix);
        match self.types.as_deref() {
            Some(types) if types.len() > 1 => {
                q.push("SELECT * FROM (");
                for (i, one) in types.iter().enumerate() {
                    q.push(if i == 0 { "(" } else { " UNION ALL (" });
                    self.select(&mut q, Some(one), bound, direction, limit);
                    q.push(")");
                }
                q.push(") AS merged");
                order_and_limit(&mut q, direction, limit);
            }
            // No type given selects nothing (no type is empty).
            one => {
                let one = one.map(|types| types.first().map_or("", String::as_str));
                self.select(&mut q, one, bound, direction, limit);
            }
        }
        q
    }

    /// One ordered, limited read, of `one` type if given.
    fn select<'a>(
        &'a self,
        q: &mut QueryBuilder<'a, Postgres>,
        one: Option<&'a str>,
        bound: Position,
        direction: Direction,
        limit: usize,
    ) {
        q.push(
            "SELECT transaction_id, seq, event_id, stream_id, stream_version, event_type, \
             schema_version, ",
        );
        if self.without_fields.is_empty() {
            q.push("payload::text");
        } else {
            q.push("(payload - ")
                .push_bind(&self.without_fields)
                .push("::text[])::text");
        }
        q.push(", metadata::text, recorded_at FROM public.events WHERE ");
        self.conditions(q, bound, direction);
        if let Some(one) = one {
            q.push(" AND event_type = ").push_bind(one);
        }
        order_and_limit(q, direction, limit);
    }

    /// The `WHERE` conditions: below the visibility horizon, beyond `bound`
    /// in `direction`, and narrowed by `self`.
    pub(crate) fn conditions<'a>(
        &'a self,
        q: &mut QueryBuilder<'a, Postgres>,
        bound: Position,
        direction: Direction,
    ) {
        // The horizon is tested on each row read, not searched for: as an
        // index condition of unknown value, the planner would read a third
        // of the primary key as a bitmap beside the filter's own index
        // (`+ 0` keeps it out of the index).
        q.push(
            "transaction_id + 0 < (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint)",
        );
        match direction {
            // From the start or the end of the log: no bound at all (an
            // always-true range would still be read as a bitmap of the
            // whole primary key, beside the filter's own index).
            Direction::After | Direction::Count if bound == Position::START => {}
            Direction::Before if bound == Position::END => {}
            Direction::After | Direction::Count => push_beyond(q, ">", bound),
            Direction::Before => push_beyond(q, "<", bound),
        }
        if let Some(after) = self.after {
            push_beyond(q, ">", after);
        }
        if let Some(until) = self.until {
            push_beyond(q, "<=", until);
        }
        // A read names its one type itself (see `select`); a count takes
        // them all at once.
        if let (Some(types), Direction::Count) = (&self.types, direction) {
            q.push(" AND event_type = ANY(").push_bind(types).push(")");
        }
        if !self.streams.is_empty() || !self.stream_prefixes.is_empty() {
            q.push(" AND (stream_id = ANY(")
                .push_bind(&self.streams)
                .push(")");
            // One LIKE per prefix: each is a range of a stream index.
            for prefix in &self.stream_prefixes {
                q.push(" OR stream_id LIKE ")
                    .push_bind(format!("{}%", escape_like(prefix)));
            }
            q.push(")");
        }
        let parties = self.wanted_parties();
        if !parties.is_empty() {
            q.push(" AND chorus_event_parties(event_type, payload, metadata) @> ")
                .push_bind(parties)
                .push("::text[]");
        }
        if let Some(from) = self.from {
            q.push(" AND recorded_at >= ").push_bind(from);
        }
        if let Some(to) = self.to {
            q.push(" AND recorded_at < ").push_bind(to);
        }
    }

    /// The entries of `chorus_event_parties` an event must all have.
    fn wanted_parties(&self) -> Vec<String> {
        let mut parties = Vec::new();
        if let Some(actor) = &self.actor {
            parties.push(format!("a:{actor}"));
        }
        if let Some(host) = &self.host {
            parties.push(format!("h:{}", host.to_lowercase()));
        }
        parties
    }

    /// Whether `event` is one the SQL reads select (but for
    /// `without_fields`, which leaves out fields rather than events): for
    /// events handed over live rather than read.
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        let position = event.position;
        let stream = event.stream_id.as_str();
        self.after.is_none_or(|after| position > after)
            && self.until.is_none_or(|until| position <= until)
            && self
                .types
                .as_ref()
                .is_none_or(|types| types.contains(&event.event_type))
            && ((self.streams.is_empty() && self.stream_prefixes.is_empty())
                || self.streams.iter().any(|s| s == stream)
                || self.stream_prefixes.iter().any(|p| stream.starts_with(p)))
            && self.from.is_none_or(|from| event.recorded_at >= from)
            && self.to.is_none_or(|to| event.recorded_at < to)
            && {
                let wanted = self.wanted_parties();
                wanted.is_empty() || {
                    let has = parties(event);
                    wanted.iter().all(|w| has.contains(w))
                }
            }
    }
}

fn order_and_limit(q: &mut QueryBuilder<'_, Postgres>, direction: Direction, limit: usize) {
    q.push(match direction {
        Direction::After | Direction::Count => " ORDER BY transaction_id, seq LIMIT ",
        Direction::Before => " ORDER BY transaction_id DESC, seq DESC LIMIT ",
    });
    q.push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
}

/// ` AND (transaction_id, seq) {op} position`, with the range of
/// `transaction_id` it implies spelt out: the planner estimates a plain
/// column's range from its statistics, a row comparison's it cannot.
fn push_beyond(q: &mut QueryBuilder<'_, Postgres>, op: &'static str, position: Position) {
    let (major, minor) = to_db(position);
    q.push(" AND transaction_id ")
        .push(if op.starts_with('>') { ">= " } else { "<= " })
        .push_bind(major)
        .push(" AND (transaction_id, seq) ")
        .push(op)
        .push(" (")
        .push_bind(major)
        .push(", ")
        .push_bind(minor)
        .push(")");
}

/// `prefix` as a `LIKE` pattern matching itself only (`\` is `LIKE`'s
/// default escape character).
fn escape_like(prefix: &str) -> String {
    let mut escaped = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '\\' | '%' | '_') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The payload fields that name an actor an event is by or about.
const ACTOR_FIELDS: [&str; 7] = [
    "actor",
    "author",
    "follower",
    "followee",
    "blocker",
    "blocked",
    "post_author",
];

/// Event types whose payload's `uri` is an actor's id.
const ACTOR_URI_TYPES: [&str; 3] = ["RemoteActorUpdated", "RemoteActorDeleted", "ActorDeleted"];

/// The actors (`a:<id>`) and hosts (`h:<host>`) an event is by or about:
/// what the SQL function `chorus_event_parties` computes (the index behind
/// the actor and host filters), for events handed over live. The actors
/// are the metadata's `actor`, the payload's [`ACTOR_FIELDS`], an
/// `ActorRegistered`'s `uris.id` and the `uri` of [`ACTOR_URI_TYPES`]; the
/// hosts are theirs and the metadata's `remote_host`.
pub fn parties(event: &RecordedEvent) -> Vec<String> {
    let payload: Value = event.decode().unwrap_or(Value::Null);
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let mut actors: Vec<String> = Vec::new();
    actors.extend(event.metadata.actor.clone());
    for field in ACTOR_FIELDS {
        actors.extend(text(payload.get(field)));
    }
    actors.extend(text(payload.pointer("/uris/id")));
    if ACTOR_URI_TYPES.contains(&event.event_type.as_str()) {
        actors.extend(text(payload.get("uri")));
    }
    actors.retain(|a| !a.is_empty());
    let mut hosts: Vec<String> = actors.iter().filter_map(|a| host_of(a)).collect();
    hosts.extend(event.metadata.remote_host.as_deref().map(str::to_lowercase));
    let mut entries: Vec<String> = actors
        .into_iter()
        .map(|a| format!("a:{a}"))
        .chain(
            hosts
                .into_iter()
                .filter(|h| !h.is_empty())
                .map(|h| format!("h:{h}")),
        )
        .collect();
    entries.sort();
    entries.dedup();
    entries
}

/// The host of an absolute URI, as `chorus_event_parties` takes it: the
/// authority without user information, in lower case.
fn host_of(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let mut chars = scheme.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'))
    {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .split_once('@')
        .map_or(authority, |(_, host)| host);
    (!host.is_empty()).then(|| host.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(uri: &str, expected: Option<&str>) {
        assert_eq!(host_of(uri).as_deref(), expected, "{uri}");
    }

    #[test]
    fn hosts_are_the_authority_without_user_information() {
        check("https://Social.Example/users/a", Some("social.example"));
        check("http://127.0.0.1:8080/users/a", Some("127.0.0.1:8080"));
        check("https://me@host.example?x", Some("host.example"));
        check("mailto:someone@example.com", None);
        check("1http://host.example/", None);
        check("https:///path", None);
    }

    #[test]
    fn like_patterns_match_their_prefix_only() {
        assert_eq!(escape_like("actor-a_b%\\"), "actor-a\\_b\\%\\\\");
    }
}
