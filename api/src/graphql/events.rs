//! The event log for analytics consumers and admins: `events` as a cursor
//! connection, and the `events` subscription (the stored events after a
//! cursor, then each new one). Analytics tokens may read these and nothing
//! else ([`AnalyticsScope`]).

use std::sync::Arc;

use async_graphql::connection::{Connection, Edge};
use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextResolve, ResolveInfo,
};
use async_graphql::{
    Context, InputObject, Json, Object, PathSegment, ServerResult, Subscription, Value,
};
use chorus_domain::{Position, RecordedEvent};
use chorus_postgres::{Narrowed, PgEventStore};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt as _};
use uuid::Uuid;

use super::deliveries::admin_only;
use super::{MAX_PAGE, Result, Services, Viewer, error, internal};
use crate::events::{Selection, SelectionError, cursor, just_after, just_before};

/// Set per request for an analytics token (which acts as no account).
#[derive(Clone, Copy, Debug)]
pub struct Analytics(pub Uuid);

/// The root fields an analytics token may use.
const LOG_FIELDS: [&str; 1] = ["events"];

/// Refuses an analytics token every root field but the log's, with
/// FORBIDDEN: mutations, and every query of the read models, now and to
/// come.
#[derive(Debug)]
pub struct AnalyticsScope;

impl ExtensionFactory for AnalyticsScope {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(AnalyticsScope)
    }
}

#[async_trait::async_trait]
impl Extension for AnalyticsScope {
    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        let root = info.path_node.parent.is_none();
        let introspection = info.is_for_introspection || info.name.starts_with("__");
        let the_log = matches!(info.parent_type, "QueryRoot" | "SubscriptionRoot")
            && LOG_FIELDS.contains(&info.name);
        if root && !introspection && !the_log && ctx.data_opt::<Analytics>().is_some() {
            let mut refused = error("FORBIDDEN", "analytics tokens may only read the event log")
                .into_server_error(info.field.name.pos);
            refused.path = info
                .path_node
                .to_string_vec()
                .into_iter()
                .map(PathSegment::Field)
                .collect();
            return Err(refused);
        }
        next.run(ctx, info).await
    }
}

/// Passes admins and analytics tokens; UNAUTHENTICATED without a token,
/// FORBIDDEN for other accounts.
async fn log_reader(ctx: &Context<'_>) -> Result<()> {
    if ctx.data_opt::<Analytics>().is_some() {
        return Ok(());
    }
    if ctx.data_opt::<Viewer>().is_none_or(|v| v.0.is_none()) {
        return Err(error(
            "UNAUTHENTICATED",
            "sign in with an admin's or an analytics bearer token",
        ));
    }
    admin_only(ctx).await.map(drop)
}

fn bad_input(e: SelectionError) -> async_graphql::Error {
    error("BAD_USER_INPUT", e.0)
}

/// Which events: every condition given must hold.
#[derive(InputObject, Clone, Debug, Default)]
pub struct EventFilter {
    /// Of these types (e.g. `PostCreated`).
    pub types: Option<Vec<String>>,
    /// In these streams; an entry ending in `-` is a prefix (`post-`: every
    /// post's stream).
    pub streams: Option<Vec<String>>,
    /// By or about this actor (its ActivityPub id): the metadata's `actor`,
    /// or an actor the payload names (`actor`, `author`, `follower`,
    /// `followee`, `blocker`, `blocked`, `post_author`, a registered
    /// actor's id, a remote actor's `uri`).
    pub actor: Option<String>,
    /// By or about an actor of this host, or received from it (the
    /// metadata's `remote_host`); with a port if it has one.
    pub host: Option<String>,
    /// Recorded at or after.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before.
    pub to: Option<DateTime<Utc>>,
}

impl EventFilter {
    fn narrowed(self) -> Result<Narrowed> {
        Selection {
            types: self.types,
            streams: self.streams,
            actor: self.actor,
            host: self.host,
            from: self.from,
            to: self.to,
        }
        .narrowed()
        .map_err(bad_input)
    }
}

/// One event of the log, as appended (or as the erasure left it: see
/// `metadata.redacted`).
pub struct LogEvent(RecordedEvent);

#[Object]
impl LogEvent {
    /// Where it stands in the log (`<major>.<minor>`); also its cursor.
    async fn position(&self) -> String {
        self.0.position.to_string()
    }

    async fn id(&self) -> Uuid {
        self.0.id.0
    }

    async fn stream(&self) -> &str {
        self.0.stream_id.as_str()
    }

    /// 1 for its stream's first event, then +1 each.
    async fn stream_version(&self) -> u64 {
        self.0.stream_version
    }

    #[graphql(name = "type")]
    async fn event_type(&self) -> &str {
        &self.0.event_type
    }

    async fn schema_version(&self) -> u32 {
        self.0.schema_version
    }

    async fn recorded_at(&self) -> DateTime<Utc> {
        self.0.recorded_at
    }

    /// The payload (docs/events.md lists every type's fields).
    async fn data(&self) -> Result<Json<serde_json::Value>> {
        self.0.decode().map(Json).map_err(internal)
    }

    /// Provenance: causation, correlation, actor, remote host, signature,
    /// redaction.
    async fn metadata(&self) -> Result<Json<serde_json::Value>> {
        serde_json::to_value(&self.0.metadata)
            .map(Json)
            .map_err(internal)
    }
}

/// `events(after, before, first, last, filter)`: a page of the log in log
/// order (see [`super::queries::QueryRoot::events`]).
pub(crate) async fn events(
    ctx: &Context<'_>,
    after: Option<String>,
    before: Option<String>,
    first: Option<i32>,
    last: Option<i32>,
    filter: Option<EventFilter>,
) -> Result<Connection<String, LogEvent>> {
    log_reader(ctx).await?;
    let pool = ctx.data::<Services>()?.reads(ctx);
    let mut narrowed = filter.unwrap_or_default().narrowed()?;
    let after = after
        .map(|a| cursor("after", &a))
        .transpose()
        .map_err(bad_input)?;
    let before = before
        .map(|b| cursor("before", &b))
        .transpose()
        .map_err(bad_input)?;
    let size = |name: &str, n: i32| {
        if (0..=MAX_PAGE).contains(&n) {
            Ok(usize::try_from(n).unwrap_or_default())
        } else {
            Err(error(
                "BAD_USER_INPUT",
                format!("`{name}` must be between 0 and {MAX_PAGE}"),
            ))
        }
    };
    let read = |e| internal(e);
    let (events, has_previous, has_next) = match (first, last) {
        (Some(_), Some(_)) => {
            return Err(error(
                "BAD_USER_INPUT",
                "give `first` (with `after`) or `last` (with `before`), not both",
            ));
        }
        (first, None) => {
            // Forward from `after`, up to `before`.
            let first = size("first", first.unwrap_or(20))?;
            narrowed.until = before.map(just_before);
            let mut page = PgEventStore::read_after(
                pool,
                after.unwrap_or(Position::START),
                &narrowed,
                first + 1,
            )
            .await
            .map_err(read)?;
            let has_next = page.len() > first;
            page.truncate(first);
            let has_previous = match after {
                Some(after) => {
                    narrowed.until = None;
                    !PgEventStore::read_before(pool, just_after(after), &narrowed, 1)
                        .await
                        .map_err(read)?
                        .is_empty()
                }
                None => false,
            };
            (page, has_previous, has_next)
        }
        (None, Some(last)) => {
            // Backward from `before` (the end of the log), down to `after`.
            let last = size("last", last)?;
            narrowed.after = after;
            let mut page = PgEventStore::read_before(
                pool,
                before.unwrap_or(Position::END),
                &narrowed,
                last + 1,
            )
            .await
            .map_err(read)?;
            let has_previous = page.len() > last;
            page.truncate(last);
            page.reverse();
            let has_next = match before {
                Some(before) => {
                    narrowed.after = None;
                    !PgEventStore::read_after(pool, just_before(before), &narrowed, 1)
                        .await
                        .map_err(read)?
                        .is_empty()
                }
                None => false,
            };
            (page, has_previous, has_next)
        }
    };
    let mut connection = Connection::new(has_previous, has_next);
    connection.edges.extend(
        events
            .into_iter()
            .map(|e| Edge::new(e.position.to_string(), LogEvent(e))),
    );
    Ok(connection)
}

/// Subscriptions.
#[derive(Debug)]
pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// Admins and analytics tokens: the events after `after` (a cursor or
    /// position; the whole log when left out) that `filter` selects, in log
    /// order: first those stored, then each new one as it is committed.
    /// Hand the last position received back as `after` to resume.
    async fn events(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        filter: Option<EventFilter>,
    ) -> Result<impl Stream<Item = Result<LogEvent>> + use<>> {
        log_reader(ctx).await?;
        let narrowed = filter.unwrap_or_default().narrowed()?;
        let after = match after {
            Some(after) => cursor("after", &after).map_err(bad_input)?,
            None => Position::START,
        };
        let store = ctx.data::<Services>()?.app.store.clone();
        Ok(crate::events::read(&store, after, narrowed, true)
            .map(|event| event.map(LogEvent).map_err(internal)))
    }
}
