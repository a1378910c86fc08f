//! `GET /servers/{name}`: a server, as a JSON-LD `Group` for peers (FEP-1b12)
//! and as a page for browsers; `GET /servers/{name}/channels/{slug}`: a
//! channel's messages, as an `OrderedCollection`.

use std::fmt::Write as _;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chorus_domain::actors::Handle;
use chorus_domain::servers::ChannelSlug;
use serde_json::Value;
use sqlx::types::chrono::{DateTime, Utc};

use super::actors::{Endpoints, Person, PublicKey};
use super::errors::ApError;
use super::html::{actor_header, escape, page, paragraphs, strip_tags};
use super::negotiation::{activity_json, html, negotiated, wants_activity_json};
use super::{CONTEXT, authority, timestamp};
use crate::http::AppState;

/// How many messages a server's page shows, and a channel page holds.
const RECENT_MESSAGES: i64 = 20;

#[derive(Debug, sqlx::FromRow)]
struct ServerRow {
    uri: String,
    handle: String,
    display_name: Option<String>,
    summary: Option<String>,
    locked: bool,
    inbox: String,
    outbox: String,
    followers_uri: String,
    following_uri: String,
    shared_inbox: String,
    key_id: Option<String>,
    public_key_pem: Option<String>,
    registered_at: DateTime<Utc>,
    members: i64,
    channels: Vec<String>,
}

const SERVER: &str = "
    SELECT a.uri, a.handle, a.display_name, a.summary, a.locked, a.inbox,
           COALESCE(a.outbox, a.uri || '/outbox') AS outbox,
           COALESCE(a.followers_uri, a.uri || '/followers') AS followers_uri,
           COALESCE(a.following_uri, a.uri || '/following') AS following_uri,
           COALESCE(a.shared_inbox, a.inbox) AS shared_inbox, a.key_id, a.public_key_pem,
           a.registered_at,
           (SELECT count(*) FROM follows f
            WHERE f.followee = a.uri AND f.state = 'accepted') AS members,
           ARRAY(SELECT c.slug FROM server_channels c WHERE c.server = a.uri
                 ORDER BY c.position_major, c.position_minor, c.slug) AS channels
    FROM actors a WHERE a.local AND a.kind = 'Group' AND a.handle = $1";

/// `GET /servers/{name}`.
pub async fn server(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let activity = wants_activity_json(&headers);
    let result = async {
        let name = Handle::parse(&name).map_err(|_| ApError::NotFound("no such server"))?;
        let row: ServerRow = sqlx::query_as(SERVER)
            .bind(name.as_str())
            .fetch_optional(&state.pool)
            .await?
            .ok_or(ApError::NotFound("no such server"))?;
        if activity {
            group(&row)
        } else {
            server_page(&state, &row).await
        }
    }
    .await;
    negotiated(activity, result)
}

fn group(row: &ServerRow) -> Result<Response, ApError> {
    activity_json(
        StatusCode::OK,
        &Person {
            context: &CONTEXT,
            id: &row.uri,
            kind: "Group",
            preferred_username: &row.handle,
            name: row.display_name.as_deref().unwrap_or(&row.handle),
            summary: row.summary.as_deref().unwrap_or_default(),
            url: &row.uri,
            inbox: &row.inbox,
            outbox: &row.outbox,
            followers: &row.followers_uri,
            following: &row.following_uri,
            endpoints: Endpoints {
                shared_inbox: &row.shared_inbox,
            },
            manually_approves_followers: row.locked,
            posting_restricted_to_mods: Some(false),
            published: timestamp(row.registered_at),
            channels: Some(
                row.channels
                    .iter()
                    .map(|slug| format!("{}/channels/{slug}", row.uri))
                    .collect(),
            ),
            public_key: match (&row.key_id, &row.public_key_pem) {
                (Some(id), Some(pem)) => Some(PublicKey {
                    id,
                    owner: &row.uri,
                    public_key_pem: pem,
                }),
                _ => None,
            },
        },
    )
}

#[derive(Debug, sqlx::FromRow)]
struct MessageRow {
    uri: String,
    author: String,
    channel: String,
    source: Option<String>,
    content: String,
    published: DateTime<Utc>,
}

/// The newest public messages of a server (of one channel, if `$2` is not
/// null), strictly before position (`$3`, `$4`).
const MESSAGES: &str = "
    SELECT p.uri, p.author, m.channel, p.source, p.content, p.published
    FROM channel_messages m JOIN posts p ON p.uri = m.post
    WHERE m.server = $1 AND ($2::text IS NULL OR m.channel = $2) AND m.removed_at IS NULL
      AND p.deleted_at IS NULL AND p.visibility IN ('public', 'unlisted')
      AND (m.position_major, m.position_minor) < ($3, $4)
    ORDER BY m.position_major DESC, m.position_minor DESC
    LIMIT $5";

async fn server_page(state: &AppState, row: &ServerRow) -> Result<Response, ApError> {
    let messages: Vec<MessageRow> = sqlx::query_as(MESSAGES)
        .bind(&row.uri)
        .bind(None::<String>)
        .bind(i64::MAX)
        .bind(i64::MAX)
        .bind(RECENT_MESSAGES)
        .fetch_all(&state.pool)
        .await?;
    let host = authority(&state.base_url);
    let name = row.display_name.as_deref().unwrap_or(&row.handle);
    let mut body = actor_header(
        name,
        &row.uri,
        &format!("!{}@{host}", row.handle),
        row.summary.as_deref(),
    );
    let _ = write!(
        body,
        "<p><strong>{}</strong> members · {} membership</p><p>Channels: {}</p></header>\
         <section><h2>Recent messages</h2>",
        row.members,
        if row.locked {
            "approval-required"
        } else {
            "open"
        },
        row.channels
            .iter()
            .map(|c| format!(
                "<a href=\"{}/channels/{c}\">#{c}</a>",
                escape(&row.uri),
                c = escape(c)
            ))
            .collect::<Vec<_>>()
            .join(" "),
    );
    if messages.is_empty() {
        body.push_str("<p>No messages yet.</p>");
    }
    for message in &messages {
        let text = message
            .source
            .clone()
            .unwrap_or_else(|| strip_tags(&message.content));
        let _ = write!(
            body,
            "<article class=\"h-entry\"><p>#{channel} · <a class=\"p-author\" href=\"{author}\">{author}</a> · \
             <a class=\"u-url\" href=\"{uri}\"><time class=\"dt-published\" datetime=\"{at}\">{at}</time></a></p>\
             <div class=\"e-content\">{text}</div></article>",
            channel = escape(&message.channel),
            author = escape(&message.author),
            uri = escape(&message.uri),
            at = timestamp(message.published),
            text = paragraphs(&text),
        );
    }
    body.push_str("</section></main>");
    Ok(html(
        StatusCode::OK,
        page(
            &format!("{name} (!{}@{host})", row.handle),
            Some(&row.uri),
            &body,
        ),
    ))
}

/// `GET /servers/{name}/channels/{slug}`: the channel's public messages
/// (post ids), newest first, paged by log position like other collections.
pub async fn channel(
    State(state): State<AppState>,
    Path((name, slug)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let result = async {
        let not_found = || ApError::NotFound("no such channel");
        let name = Handle::parse(&name).map_err(|_| not_found())?;
        let slug = ChannelSlug::parse(&slug).map_err(|_| not_found())?;
        let server: Option<(String, i64)> = sqlx::query_as(
            "SELECT s.uri, (SELECT count(*) FROM channel_messages m
                            WHERE m.server = s.uri AND m.channel = c.slug AND m.removed_at IS NULL)
             FROM servers s JOIN server_channels c ON c.server = s.uri
             WHERE s.name = $1 AND c.slug = $2",
        )
        .bind(name.as_str())
        .bind(slug.as_str())
        .fetch_optional(&state.pool)
        .await?;
        let (server, total) = server.ok_or_else(not_found)?;
        let id = format!("{server}/channels/{slug}");
        let Some(before) = super::collections::page_request(query.as_deref())? else {
            return activity_json(
                StatusCode::OK,
                &serde_json::json!({
                    "@context": *CONTEXT,
                    "id": id,
                    "type": "OrderedCollection",
                    "totalItems": total,
                    "first": format!("{id}?page=true"),
                    "attributedTo": server,
                }),
            );
        };
        let (major, minor) = super::collections::bounds(before);
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT m.post, m.position_major, m.position_minor
             FROM channel_messages m JOIN posts p ON p.uri = m.post
             WHERE m.server = $1 AND m.channel = $2 AND m.removed_at IS NULL
               AND p.deleted_at IS NULL AND p.visibility IN ('public', 'unlisted')
               AND (m.position_major, m.position_minor) < ($3, $4)
             ORDER BY m.position_major DESC, m.position_minor DESC
             LIMIT $5",
        )
        .bind(&server)
        .bind(slug.as_str())
        .bind(major)
        .bind(minor)
        .bind(RECENT_MESSAGES + 1)
        .fetch_all(&state.pool)
        .await?;
        let more = rows.len() > usize::try_from(RECENT_MESSAGES).unwrap_or(usize::MAX);
        let items: Vec<&(String, i64, i64)> = rows
            .iter()
            .take(usize::try_from(RECENT_MESSAGES).unwrap_or(usize::MAX))
            .collect();
        let next = items
            .last()
            .filter(|_| more)
            .map(|(_, major, minor)| format!("{id}?page=true&max_id={major}.{minor}"));
        let mut page = serde_json::json!({
            "@context": *CONTEXT,
            "id": match before {
                Some(position) => format!("{id}?page=true&max_id={position}"),
                None => format!("{id}?page=true"),
            },
            "type": "OrderedCollectionPage",
            "partOf": id,
            "orderedItems": items.iter().map(|(post, ..)| post).collect::<Vec<_>>(),
        });
        if let Some(next) = next {
            page["next"] = Value::String(next);
        }
        activity_json(StatusCode::OK, &page)
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
