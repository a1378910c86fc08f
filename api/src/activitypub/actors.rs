//! `GET /users/{handle}`: a local actor, as a JSON-LD `Person` for peers and
//! as a profile page for browsers.

use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chorus_domain::actors::{ActorUris, Handle};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::chrono::{DateTime, Utc};

use super::errors::ApError;
use super::html::{actor_header, escape, page, paragraphs, strip_tags};
use super::negotiation::{activity_json, html, negotiated, wants_activity_json};
use super::objects::Tombstone;
use super::{CONTEXT, authority, timestamp};
use crate::http::AppState;

/// How many posts a profile page shows.
const RECENT_POSTS: i64 = 20;

/// The columns of a local actor that documents show. The private key is
/// not among them: it lives in another table, which this module never reads.
macro_rules! actor_columns {
    () => {
        "a.uri, a.handle, a.display_name, a.summary, a.locked, a.inbox, a.outbox, \
         a.followers_uri, a.following_uri, a.shared_inbox, a.key_id, a.public_key_pem, \
         a.registered_at, a.deleted_at"
    };
}

const PERSON: &str = concat!(
    "SELECT ",
    actor_columns!(),
    " FROM actors a WHERE a.local AND a.kind <> 'Group' AND a.handle = $1"
);

const PROFILE: &str = concat!(
    "SELECT ",
    actor_columns!(),
    ",
        (SELECT count(*) FROM posts p WHERE p.author = a.uri
            AND p.visibility IN ('public', 'unlisted') AND p.deleted_at IS NULL) AS posts,
        (SELECT count(*) FROM follows f
            WHERE f.followee = a.uri AND f.state = 'accepted') AS followers,
        (SELECT count(*) FROM follows f
            WHERE f.follower = a.uri AND f.state = 'accepted') AS following
     FROM actors a WHERE a.local AND a.kind <> 'Group' AND a.handle = $1"
);

const RECENT: &str = "
    SELECT uri, source, content, summary, published FROM posts
    WHERE author = $1 AND visibility = 'public' AND deleted_at IS NULL
    ORDER BY position_major DESC, position_minor DESC
    LIMIT $2";

#[derive(Debug, sqlx::FromRow)]
struct ActorRow {
    uri: String,
    handle: String,
    display_name: Option<String>,
    summary: Option<String>,
    locked: bool,
    inbox: String,
    outbox: Option<String>,
    followers_uri: Option<String>,
    following_uri: Option<String>,
    shared_inbox: Option<String>,
    key_id: Option<String>,
    public_key_pem: Option<String>,
    registered_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
}

impl ActorRow {
    /// The display name, or the handle for actors without one.
    fn name(&self) -> &str {
        self.display_name
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(&self.handle)
    }
}

/// A profile page's actor with its counts.
#[derive(Debug, sqlx::FromRow)]
struct ProfileRow {
    #[sqlx(flatten)]
    actor: ActorRow,
    posts: i64,
    followers: i64,
    following: i64,
}

#[derive(Debug, sqlx::FromRow)]
struct RecentPost {
    uri: String,
    source: Option<String>,
    content: String,
    summary: Option<String>,
    published: DateTime<Utc>,
}

/// `GET /users/{handle}`.
pub async fn actor(
    State(state): State<AppState>,
    Path(handle): Path<String>,
    headers: HeaderMap,
) -> Response {
    let activity = wants_activity_json(&headers);
    let result = match Handle::parse(&handle) {
        Err(_) => Err(ApError::NotFound("no such account")),
        Ok(handle) if activity => person(&state, &handle).await,
        Ok(handle) => profile_page(&state, &handle).await,
    };
    negotiated(activity, result)
}

async fn person(state: &AppState, handle: &Handle) -> Result<Response, ApError> {
    let actor: ActorRow = sqlx::query_as(PERSON)
        .bind(handle.as_str())
        .fetch_optional(&state.pool)
        .await?
        .ok_or(ApError::NotFound("no such account"))?;
    if let Some(deleted) = actor.deleted_at {
        return activity_json(
            StatusCode::GONE,
            &Tombstone {
                context: &CONTEXT,
                id: &actor.uri,
                kind: "Tombstone",
                former_type: "Person",
                deleted: timestamp(deleted),
            },
        );
    }
    // Local actors have every address stored; derived ones stand in for a
    // read model written before a column was filled.
    let derived = ActorUris::local(&state.base_url, handle);
    let public_key = match (&actor.key_id, &actor.public_key_pem) {
        (Some(id), Some(pem)) => Some(PublicKey {
            id,
            owner: &actor.uri,
            public_key_pem: pem,
        }),
        (None, Some(pem)) => Some(PublicKey {
            id: &derived.key_id,
            owner: &actor.uri,
            public_key_pem: pem,
        }),
        (_, None) => None,
    };
    activity_json(
        StatusCode::OK,
        &Person {
            context: &CONTEXT,
            id: &actor.uri,
            kind: "Person",
            preferred_username: &actor.handle,
            name: actor.name(),
            summary: actor.summary.as_deref().unwrap_or_default(),
            url: &actor.uri,
            inbox: &actor.inbox,
            outbox: actor.outbox.as_deref().unwrap_or(&derived.outbox),
            followers: actor.followers_uri.as_deref().unwrap_or(&derived.followers),
            following: actor.following_uri.as_deref().unwrap_or(&derived.following),
            endpoints: Endpoints {
                shared_inbox: actor
                    .shared_inbox
                    .as_deref()
                    .unwrap_or(&derived.shared_inbox),
            },
            manually_approves_followers: actor.locked,
            published: timestamp(actor.registered_at),
            public_key,
            posting_restricted_to_mods: None,
            channels: None,
        },
    )
}

/// A local actor's document: a `Person`, or a server's `Group` (with the
/// fields only groups have).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Person<'a> {
    #[serde(rename = "@context")]
    pub context: &'a Value,
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub preferred_username: &'a str,
    pub name: &'a str,
    pub summary: &'a str,
    pub url: &'a str,
    pub inbox: &'a str,
    pub outbox: &'a str,
    pub followers: &'a str,
    pub following: &'a str,
    pub endpoints: Endpoints<'a>,
    pub manually_approves_followers: bool,
    pub published: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PublicKey<'a>>,
    /// A group's members may post; moderators are not the only authors
    /// (Lemmy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub posting_restricted_to_mods: Option<bool>,
    /// A group's channels, as the collections of their messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Endpoints<'a> {
    pub shared_inbox: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PublicKey<'a> {
    pub id: &'a str,
    pub owner: &'a str,
    pub public_key_pem: &'a str,
}

/// The profile page: the actor and its counts from one query, its recent
/// public posts from a second.
async fn profile_page(state: &AppState, handle: &Handle) -> Result<Response, ApError> {
    let profile: ProfileRow = sqlx::query_as(PROFILE)
        .bind(handle.as_str())
        .fetch_optional(&state.pool)
        .await?
        .ok_or(ApError::NotFound("no such account"))?;
    if profile.actor.deleted_at.is_some() {
        return Err(ApError::Gone("this account was deleted"));
    }
    let posts: Vec<RecentPost> = sqlx::query_as(RECENT)
        .bind(&profile.actor.uri)
        .bind(RECENT_POSTS)
        .fetch_all(&state.pool)
        .await?;
    Ok(html(
        StatusCode::OK,
        render_profile(&profile, &posts, authority(&state.base_url)),
    ))
}

fn render_profile(profile: &ProfileRow, posts: &[RecentPost], host: &str) -> String {
    let actor = &profile.actor;
    let mut body = actor_header(
        actor.name(),
        &actor.uri,
        &format!("@{}@{host}", actor.handle),
        actor.summary.as_deref(),
    );
    let _ = write!(
        body,
        "<p><strong>{}</strong> posts · <strong>{}</strong> followers · \
         <strong>{}</strong> following</p></header><section><h2>Recent posts</h2>",
        profile.posts, profile.followers, profile.following
    );
    if posts.is_empty() {
        body.push_str("<p>No posts yet.</p>");
    }
    for post in posts {
        post_article(&mut body, post);
    }
    body.push_str("</section></main>");
    page(
        &format!("{} (@{}@{host})", actor.name(), actor.handle),
        Some(&actor.uri),
        &body,
    )
}

fn post_article(body: &mut String, post: &RecentPost) {
    let text = post
        .source
        .clone()
        .unwrap_or_else(|| strip_tags(&post.content));
    let text = paragraphs(&text);
    let _ = write!(
        body,
        "<article class=\"h-entry\"><p><a class=\"u-url\" href=\"{uri}\">\
         <time class=\"dt-published\" datetime=\"{at}\">{at}</time></a></p>",
        uri = escape(&post.uri),
        at = timestamp(post.published),
    );
    match &post.summary {
        Some(summary) => {
            let _ = write!(
                body,
                "<details><summary>{}</summary><div class=\"e-content\">{text}</div></details>",
                escape(summary)
            );
        }
        None => {
            let _ = write!(body, "<div class=\"e-content\">{text}</div>");
        }
    }
    body.push_str("</article>");
}
