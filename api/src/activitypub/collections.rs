//! A local actor's outbox, followers and following, as `OrderedCollection`s
//! paged newest first.
//!
//! A page's cursor is the log position of the row's event
//! (`?page=true&max_id=<major>.<minor>`): rows never move once written, so a
//! crawler walking the pages sees each item once even while new ones arrive.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chorus_domain::Position;
use chorus_domain::actors::Handle;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::CONTEXT;
use super::errors::ApError;
use super::negotiation::activity_json;
use crate::http::AppState;

/// One of an actor's collections: how to count it and how to read a page.
#[derive(Debug)]
struct Collection {
    /// The actor's URI, whether it is deleted, the collection's id and its
    /// size, for the actor whose handle is `$1`.
    summary: &'static str,
    /// The actor's URI, whether it is deleted and the collection's id, with
    /// (left-joined) the page's items as JSON text and their positions,
    /// newest first: at most `$4` items strictly before position (`$2`,
    /// `$3`).
    page: &'static str,
    page_size: i64,
}

/// The actor whose collection it is, and a `LATERAL` subquery `i` of items.
macro_rules! page_sql {
    ($id:literal, $items:literal) => {
        page_sql!($id, $items, "a.kind <> 'Group'")
    };
    ($id:literal, $items:literal, $kind:literal) => {
        concat!(
            "SELECT a.uri, a.deleted_at IS NOT NULL, ",
            $id,
            ", i.item, i.position_major, i.position_minor
             FROM actors a
             LEFT JOIN LATERAL (",
            $items,
            ") i ON true
             WHERE a.local AND a.handle = $1 AND ",
            $kind
        )
    };
}

/// Public and unlisted posts, as their `Create` activities.
const OUTBOX: Collection = Collection {
    summary: "SELECT a.uri, a.deleted_at IS NOT NULL, COALESCE(a.outbox, a.uri || '/outbox'),
            (SELECT count(*) FROM posts p WHERE p.author = a.uri
                AND p.visibility IN ('public', 'unlisted') AND p.deleted_at IS NULL)
        FROM actors a WHERE a.local AND a.handle = $1 AND a.kind <> 'Group'",
    page: page_sql!(
        "COALESCE(a.outbox, a.uri || '/outbox')",
        "SELECT p.activity::text AS item, p.position_major, p.position_minor
         FROM posts p
         WHERE p.author = a.uri AND p.visibility IN ('public', 'unlisted')
             AND p.deleted_at IS NULL AND p.activity IS NOT NULL
             AND (p.position_major, p.position_minor) < ($2, $3)
         ORDER BY p.position_major DESC, p.position_minor DESC
         LIMIT $4"
    ),
    page_size: 20,
};

/// Accepted followers, as actor ids.
const FOLLOWERS: Collection = Collection {
    summary:
        "SELECT a.uri, a.deleted_at IS NOT NULL, COALESCE(a.followers_uri, a.uri || '/followers'),
            (SELECT count(*) FROM follows f WHERE f.followee = a.uri AND f.state = 'accepted')
        FROM actors a WHERE a.local AND a.handle = $1 AND a.kind <> 'Group'",
    page: page_sql!(
        "COALESCE(a.followers_uri, a.uri || '/followers')",
        "SELECT to_json(f.follower)::text AS item, f.position_major, f.position_minor
         FROM follows f
         WHERE f.followee = a.uri AND f.state = 'accepted'
             AND (f.position_major, f.position_minor) < ($2, $3)
         ORDER BY f.position_major DESC, f.position_minor DESC
         LIMIT $4"
    ),
    page_size: 40,
};

/// Accepted follows of others, as actor ids.
const FOLLOWING: Collection = Collection {
    summary:
        "SELECT a.uri, a.deleted_at IS NOT NULL, COALESCE(a.following_uri, a.uri || '/following'),
            (SELECT count(*) FROM follows f WHERE f.follower = a.uri AND f.state = 'accepted')
        FROM actors a WHERE a.local AND a.handle = $1 AND a.kind <> 'Group'",
    page: page_sql!(
        "COALESCE(a.following_uri, a.uri || '/following')",
        "SELECT to_json(f.followee)::text AS item, f.position_major, f.position_minor
         FROM follows f
         WHERE f.follower = a.uri AND f.state = 'accepted'
             AND (f.position_major, f.position_minor) < ($2, $3)
         ORDER BY f.position_major DESC, f.position_minor DESC
         LIMIT $4"
    ),
    page_size: 40,
};

/// A server's announcements of its members' messages, newest first, each
/// as the `Announce` of the post (the message itself is at its id).
const SERVER_OUTBOX: Collection = Collection {
    summary: "SELECT a.uri, a.deleted_at IS NOT NULL, a.outbox,
            (SELECT count(*) FROM channel_messages m
             WHERE m.server = a.uri AND m.removed_at IS NULL)
        FROM actors a WHERE a.local AND a.handle = $1 AND a.kind = 'Group'",
    page: page_sql!(
        "a.outbox",
        "SELECT json_build_object(
                    'id', m.announce_id, 'type', 'Announce', 'actor', a.uri, 'object', m.post,
                    'to', json_build_array('https://www.w3.org/ns/activitystreams#Public'),
                    'cc', json_build_array(a.followers_uri), 'audience', a.uri,
                    'published', to_char(m.announced_at AT TIME ZONE 'UTC',
                                         'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'))::text AS item,
                m.position_major, m.position_minor
         FROM channel_messages m
         WHERE m.server = a.uri AND m.removed_at IS NULL
             AND (m.position_major, m.position_minor) < ($2, $3)
         ORDER BY m.position_major DESC, m.position_minor DESC
         LIMIT $4",
        "a.kind = 'Group'"
    ),
    page_size: 20,
};

/// A server's members, as actor ids.
const SERVER_FOLLOWERS: Collection = Collection {
    summary: "SELECT a.uri, a.deleted_at IS NOT NULL, a.followers_uri,
            (SELECT count(*) FROM follows f WHERE f.followee = a.uri AND f.state = 'accepted')
        FROM actors a WHERE a.local AND a.handle = $1 AND a.kind = 'Group'",
    page: page_sql!(
        "a.followers_uri",
        "SELECT to_json(f.follower)::text AS item, f.position_major, f.position_minor
         FROM follows f
         WHERE f.followee = a.uri AND f.state = 'accepted'
             AND (f.position_major, f.position_minor) < ($2, $3)
         ORDER BY f.position_major DESC, f.position_minor DESC
         LIMIT $4",
        "a.kind = 'Group'"
    ),
    page_size: 40,
};

/// `GET /servers/{name}/outbox`.
pub async fn server_outbox(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    serve(&state, &SERVER_OUTBOX, &name, query.as_deref()).await
}

/// `GET /servers/{name}/followers`: its members.
pub async fn server_followers(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    serve(&state, &SERVER_FOLLOWERS, &name, query.as_deref()).await
}

/// `GET /users/{handle}/outbox`.
pub async fn outbox(
    State(state): State<AppState>,
    Path(handle): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    serve(&state, &OUTBOX, &handle, query.as_deref()).await
}

/// `GET /users/{handle}/followers`.
pub async fn followers(
    State(state): State<AppState>,
    Path(handle): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    serve(&state, &FOLLOWERS, &handle, query.as_deref()).await
}

/// `GET /users/{handle}/following`.
pub async fn following(
    State(state): State<AppState>,
    Path(handle): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    serve(&state, &FOLLOWING, &handle, query.as_deref()).await
}

async fn serve(
    state: &AppState,
    collection: &Collection,
    handle: &str,
    query: Option<&str>,
) -> Response {
    let result = async {
        let handle = Handle::parse(handle).map_err(|_| ApError::NotFound("no such account"))?;
        match page_request(query)? {
            None => summary(state, collection, &handle).await,
            Some(before) => page(state, collection, &handle, before).await,
        }
    }
    .await;
    match result {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// What the query string asks for: `None` for the collection itself,
/// `Some(cursor)` for a page (`None` cursor: the first page).
pub(super) fn page_request(query: Option<&str>) -> Result<Option<Option<Position>>, ApError> {
    let mut page = false;
    let mut max_id = None;
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*name {
            "page" => page = value != "false",
            "max_id" => {
                let position = value
                    .parse::<Position>()
                    .map_err(|error| ApError::BadRequest(format!("invalid `max_id`: {error}")))?;
                max_id = Some(position);
            }
            _ => {}
        }
    }
    Ok((page || max_id.is_some()).then_some(max_id))
}

async fn summary(
    state: &AppState,
    collection: &Collection,
    handle: &Handle,
) -> Result<Response, ApError> {
    let (_, deleted, id, total): (String, bool, String, i64) = sqlx::query_as(collection.summary)
        .bind(handle.as_str())
        .fetch_optional(&state.pool)
        .await?
        .ok_or(ApError::NotFound("no such account"))?;
    if deleted {
        return Err(ApError::Gone("this account was deleted"));
    }
    activity_json(
        StatusCode::OK,
        &OrderedCollection {
            context: &CONTEXT,
            first: format!("{id}?page=true"),
            id: &id,
            kind: "OrderedCollection",
            total_items: total,
        },
    )
}

/// The position a page ends before, as stored (`bigint`): a cursor beyond
/// its range is past every row; no cursor, the first page.
pub(super) fn bounds(before: Option<Position>) -> (i64, i64) {
    before.map_or((i64::MAX, i64::MAX), |p| {
        (
            i64::try_from(p.major()).unwrap_or(i64::MAX),
            i64::try_from(p.minor()).unwrap_or(i64::MAX),
        )
    })
}

type PageRow = (
    String,
    bool,
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

async fn page(
    state: &AppState,
    collection: &Collection,
    handle: &Handle,
    before: Option<Position>,
) -> Result<Response, ApError> {
    let (major, minor) = bounds(before);
    let rows: Vec<PageRow> = sqlx::query_as(collection.page)
        .bind(handle.as_str())
        .bind(major)
        .bind(minor)
        .bind(collection.page_size + 1)
        .fetch_all(&state.pool)
        .await?;
    let Some((_, deleted, id, ..)) = rows.first() else {
        return Err(ApError::NotFound("no such account"));
    };
    if *deleted {
        return Err(ApError::Gone("this account was deleted"));
    }
    let id = id.clone();
    let page_size = usize::try_from(collection.page_size).unwrap_or(usize::MAX);
    let more = rows.len() > page_size;
    let mut items = Vec::with_capacity(rows.len().min(page_size));
    let mut last = None;
    for (_, _, _, item, major, minor) in rows.into_iter().take(page_size) {
        // An actor with an empty collection comes back as one row without
        // an item (the lateral join is a left join).
        if let (Some(item), Some(major), Some(minor)) = (item, major, minor) {
            items.push(RawValue::from_string(item)?);
            last = Some((major, minor));
        }
    }
    let next = match last {
        Some((major, minor)) if more => Some(format!("{id}?page=true&max_id={major}.{minor}")),
        _ => None,
    };
    activity_json(
        StatusCode::OK,
        &OrderedCollectionPage {
            context: &CONTEXT,
            id: match before {
                Some(position) => format!("{id}?page=true&max_id={position}"),
                None => format!("{id}?page=true"),
            },
            kind: "OrderedCollectionPage",
            part_of: &id,
            next,
            ordered_items: items,
        },
    )
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OrderedCollection<'a> {
    #[serde(rename = "@context")]
    context: &'a Value,
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    total_items: i64,
    first: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OrderedCollectionPage<'a> {
    #[serde(rename = "@context")]
    context: &'a Value,
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    part_of: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
    /// Stored JSON, embedded without being parsed again.
    ordered_items: Vec<Box<RawValue>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(query: Option<&str>, expected: Result<Option<Option<Position>>, ()>) {
        assert_eq!(page_request(query).map_err(|_| ()), expected, "{query:?}");
    }

    #[test]
    fn page_requests_are_parsed() {
        check(None, Ok(None));
        check(Some(""), Ok(None));
        check(Some("page=false"), Ok(None));
        check(Some("page=true"), Ok(Some(None)));
        check(
            Some("page=true&max_id=12.7"),
            Ok(Some(Some(Position::new(12, 7)))),
        );
        check(Some("max_id=12.7"), Ok(Some(Some(Position::new(12, 7)))));
        check(Some("page=true&max_id=12"), Err(()));
        check(Some("page=true&max_id=-1.2"), Err(()));
    }
}
