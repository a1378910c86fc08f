//! The public ActivityPub surface: discovery (WebFinger, NodeInfo,
//! host-meta), actor and object documents with content negotiation, and
//! collections.
//!
//! Everything here is read-only and unauthenticated: it answers from the
//! read models with one indexed query per request (two for a browser's
//! profile page), and only ever shows what anyone may see (public and
//! unlisted posts). Documents are serialised straight from the rows with
//! serde, without an intermediate `Value` tree.

use std::sync::LazyLock;

use axum::Router;
use axum::http::HeaderValue;
use axum::routing::get;
use serde_json::Value;
use sqlx::types::chrono::{DateTime, Utc};

use crate::http::AppState;

mod actors;
mod collections;
pub(crate) mod errors;
mod html;
pub(crate) mod negotiation;
mod nodeinfo;
mod objects;
mod servers;
mod webfinger;

/// The routes of the public ActivityPub surface.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/webfinger", get(webfinger::webfinger))
        .route("/.well-known/host-meta", get(webfinger::host_meta))
        .route("/.well-known/nodeinfo", get(nodeinfo::discovery))
        .route("/nodeinfo/2.0", get(nodeinfo::nodeinfo_2_0))
        .route("/nodeinfo/2.1", get(nodeinfo::nodeinfo_2_1))
        .route("/users/{handle}", get(actors::actor))
        .route("/users/{handle}/outbox", get(collections::outbox))
        .route("/users/{handle}/followers", get(collections::followers))
        .route("/users/{handle}/following", get(collections::following))
        .route("/servers/{name}", get(servers::server))
        .route("/servers/{name}/outbox", get(collections::server_outbox))
        .route(
            "/servers/{name}/followers",
            get(collections::server_followers),
        )
        .route("/servers/{name}/channels/{slug}", get(servers::channel))
        .route("/posts/{id}", get(objects::post))
        .route("/posts/{id}/activity", get(objects::activity))
}

/// The `@context` of every document, built once: it never changes.
static CONTEXT: LazyLock<Value> = LazyLock::new(chorus_domain::activitypub::context);

/// `Access-Control-Allow-Origin` for discovery documents, which web clients
/// on any origin may read.
const ANYONE: HeaderValue = HeaderValue::from_static("*");

/// The `host[:port]` of the server whose origin is `base` (as in
/// `acct:alice@host:port`).
fn authority(base: &str) -> &str {
    let rest = base.split_once("://").map_or(base, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest)
}

/// A timestamp as ActivityStreams documents write it (`2026-11-23T10:00:00Z`).
fn timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A post's `published` and `updated`, with milliseconds: as the Note was
/// delivered, so that peers fetching it order replies and edits within a
/// second the same way (`2026-11-23T10:00:00.250Z`).
fn post_timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authority_is_host_and_port() {
        assert_eq!(authority("http://127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(authority("https://example.com"), "example.com");
        assert_eq!(authority("https://example.com/"), "example.com");
    }

    #[test]
    fn timestamps_are_utc_to_the_second() {
        let at = DateTime::from_timestamp(1_795_435_200, 999_000_000).unwrap_or_default();
        assert_eq!(timestamp(at), "2026-11-23T12:00:00Z");
    }

    #[test]
    fn post_timestamps_keep_milliseconds() {
        let at = DateTime::from_timestamp(1_795_435_200, 999_999_000).unwrap_or_default();
        assert_eq!(post_timestamp(at), "2026-11-23T12:00:00.999Z");
    }
}
