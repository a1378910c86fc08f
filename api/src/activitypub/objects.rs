//! `GET /posts/{id}` and `GET /posts/{id}/activity`: a local post as a
//! `Note` (or a page for browsers), and the `Create` that published it.
//!
//! Requests are unauthenticated, so only public and unlisted posts are
//! served; any other answers 404, exactly like a post that does not exist,
//! so that its existence is not revealed either.

use axum::extract::{Path, State};
use axum::http::header::{CONTENT_TYPE, VARY};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Uuid;
use sqlx::types::chrono::{DateTime, Utc};

use super::errors::ApError;
use super::html::{escape, page, paragraphs, strip_tags};
use super::negotiation::{
    ACCEPT, ACTIVITY_JSON, activity_json, html, negotiated, wants_activity_json,
};
use super::{CONTEXT, authority, post_timestamp, timestamp};
use crate::http::AppState;

/// A post with its mentions' names (`@bob`, `@carol@remote.example`, or
/// the id of an actor this server does not know) in the order of its
/// mentions, and its author's handle for pages: one query, primary key
/// lookups only.
const POST: &str = "
    SELECT p.uri, p.author, p.content, p.source, p.summary, p.sensitive, p.visibility,
        p.in_reply_to, p.mentions, p.hashtags, p.to_recipients, p.cc_recipients,
        p.published, p.edited_at, p.deleted_at,
        ARRAY(
            SELECT COALESCE('@' || m.handle || CASE WHEN m.local THEN '' ELSE '@' || m.domain END,
                            mention.uri)
            FROM unnest(p.mentions) WITH ORDINALITY AS mention (uri, n)
            LEFT JOIN actors m ON m.uri = mention.uri
            ORDER BY mention.n
        ) AS mention_names,
        author.handle AS author_handle,
        author.display_name AS author_name,
        message.server AS audience,
        message.server || '/channels/' || message.channel AS channel
    FROM posts p
    LEFT JOIN actors author ON author.uri = p.author
    LEFT JOIN LATERAL (
        SELECT server, channel FROM channel_messages WHERE post = p.uri LIMIT 1
    ) message ON true
    WHERE p.post_id = $1";

#[derive(Debug, sqlx::FromRow)]
struct PostRow {
    uri: String,
    author: String,
    content: String,
    source: Option<String>,
    summary: Option<String>,
    sensitive: bool,
    visibility: String,
    in_reply_to: Option<String>,
    mentions: Vec<String>,
    hashtags: Vec<String>,
    to_recipients: Vec<String>,
    cc_recipients: Vec<String>,
    published: DateTime<Utc>,
    edited_at: Option<DateTime<Utc>>,
    deleted_at: Option<DateTime<Utc>>,
    mention_names: Vec<String>,
    author_handle: Option<String>,
    author_name: Option<String>,
    /// The server it was posted in (FEP-1b12), and its channel.
    audience: Option<String>,
    channel: Option<String>,
}

/// Whether anyone may see a post of this visibility.
fn is_public(visibility: &str) -> bool {
    matches!(visibility, "public" | "unlisted")
}

/// A local post's id from its URL segment; anything else is no post.
fn post_id(id: &str) -> Result<Uuid, ApError> {
    Uuid::try_parse(id).map_err(|_| ApError::NotFound("no such post"))
}

/// `GET /posts/{id}`.
pub async fn post(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let activity = wants_activity_json(&headers);
    negotiated(activity, serve_post(&state, &id, activity).await)
}

async fn serve_post(state: &AppState, id: &str, activity: bool) -> Result<Response, ApError> {
    let post = sqlx::query_as::<_, PostRow>(POST)
        .bind(post_id(id)?)
        .fetch_optional(&state.pool)
        .await?
        .filter(|post| is_public(&post.visibility))
        .ok_or(ApError::NotFound("no such post"))?;
    match (post.deleted_at, activity) {
        (Some(deleted), true) => activity_json(
            StatusCode::GONE,
            &Tombstone {
                context: &CONTEXT,
                id: &post.uri,
                kind: "Tombstone",
                former_type: "Note",
                deleted: timestamp(deleted),
            },
        ),
        (Some(_), false) => Err(ApError::Gone("this post was deleted")),
        (None, true) => activity_json(StatusCode::OK, &note(&post, &state.base_url)),
        (None, false) => Ok(html(
            StatusCode::OK,
            render_post(&post, authority(&state.base_url)),
        )),
    }
}

/// What a deleted actor or post answers with.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Tombstone<'a> {
    #[serde(rename = "@context")]
    pub context: &'a Value,
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub former_type: &'static str,
    pub deleted: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Note<'a> {
    #[serde(rename = "@context")]
    context: &'a Value,
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    attributed_to: &'a str,
    content: &'a str,
    summary: Option<&'a str>,
    sensitive: bool,
    published: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated: Option<String>,
    to: &'a [String],
    cc: &'a [String],
    in_reply_to: Option<&'a str>,
    url: &'a str,
    tag: Vec<Tag<'a>>,
    /// The server (Group) it was posted in.
    #[serde(skip_serializing_if = "Option::is_none")]
    audience: Option<&'a str>,
    /// Its channel in that server.
    #[serde(rename = "context", skip_serializing_if = "Option::is_none")]
    context_id: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum Tag<'a> {
    Mention { href: &'a str, name: &'a str },
    Hashtag { href: String, name: String },
}

fn note<'a>(post: &'a PostRow, base: &str) -> Note<'a> {
    let mentions = post
        .mentions
        .iter()
        .zip(&post.mention_names)
        .map(|(href, name)| Tag::Mention { href, name });
    let hashtags = post.hashtags.iter().map(|tag| Tag::Hashtag {
        href: format!("{base}/tags/{tag}"),
        name: format!("#{tag}"),
    });
    Note {
        context: &CONTEXT,
        id: &post.uri,
        kind: "Note",
        attributed_to: &post.author,
        content: &post.content,
        summary: post.summary.as_deref(),
        sensitive: post.sensitive,
        published: post_timestamp(post.published),
        updated: post.edited_at.map(post_timestamp),
        to: &post.to_recipients,
        cc: &post.cc_recipients,
        in_reply_to: post.in_reply_to.as_deref(),
        url: &post.uri,
        tag: mentions.chain(hashtags).collect(),
        audience: post.audience.as_deref(),
        context_id: post.channel.as_deref(),
    }
}

fn render_post(post: &PostRow, host: &str) -> String {
    let handle = post.author_handle.as_deref().unwrap_or_default();
    let name = post
        .author_name
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(handle);
    let text = paragraphs(
        &post
            .source
            .clone()
            .unwrap_or_else(|| strip_tags(&post.content)),
    );
    let content = match &post.summary {
        Some(summary) => format!(
            "<details><summary>{}</summary><div class=\"e-content\">{text}</div></details>",
            escape(summary)
        ),
        None => format!("<div class=\"e-content\">{text}</div>"),
    };
    let at = timestamp(post.published);
    let body = format!(
        "<main><article class=\"h-entry\"><header><p class=\"p-author h-card\">\
         <a class=\"u-url p-name\" href=\"{author}\">{name}</a> @{handle}@{host}</p></header>\
         {content}<footer><p><a class=\"u-url\" href=\"{uri}\">\
         <time class=\"dt-published\" datetime=\"{at}\">{at}</time></a></p></footer>\
         </article></main>",
        author = escape(&post.author),
        name = escape(name),
        handle = escape(handle),
        host = escape(host),
        uri = escape(&post.uri),
    );
    page(&format!("A post by {name}"), Some(&post.uri), &body)
}

/// `GET /posts/{id}/activity`: the `Create` as it was delivered.
pub async fn activity(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match create_activity(&state, &id).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn create_activity(state: &AppState, id: &str) -> Result<Response, ApError> {
    let row: Option<(Option<String>, String, bool)> = sqlx::query_as(
        "SELECT activity::text, visibility, deleted_at IS NOT NULL FROM posts WHERE post_id = $1",
    )
    .bind(post_id(id)?)
    .fetch_optional(&state.pool)
    .await?;
    // A deleted post keeps its row (without its activity) to answer 410.
    let activity = match row {
        Some((_, visibility, true)) if is_public(&visibility) => {
            return Err(ApError::Gone("this post was deleted"));
        }
        Some((Some(activity), visibility, false)) if is_public(&visibility) => activity,
        _ => return Err(ApError::NotFound("no such activity")),
    };
    // The stored JSON is sent as it is, without being parsed again.
    Ok((
        StatusCode::OK,
        [(CONTENT_TYPE, ACTIVITY_JSON), (VARY, ACCEPT)],
        activity,
    )
        .into_response())
}
