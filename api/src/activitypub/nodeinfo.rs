//! NodeInfo 2.0 and 2.1: what software this server runs and how much it is
//! used, for crawlers and peers.

use axum::extract::State;
use axum::http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ANYONE;
use super::errors::ApError;
use super::negotiation::JSON;
use crate::http::AppState;

const SCHEMA_2_0: &str = "http://nodeinfo.diaspora.software/ns/schema/2.0";
const SCHEMA_2_1: &str = "http://nodeinfo.diaspora.software/ns/schema/2.1";
const PROFILE_2_0: HeaderValue = HeaderValue::from_static(
    "application/json; profile=\"http://nodeinfo.diaspora.software/ns/schema/2.0#\"",
);
const PROFILE_2_1: HeaderValue = HeaderValue::from_static(
    "application/json; profile=\"http://nodeinfo.diaspora.software/ns/schema/2.1#\"",
);

/// `GET /.well-known/nodeinfo`: where the NodeInfo documents are.
pub async fn discovery(State(state): State<AppState>) -> Response {
    let links = json!({
        "links": [
            { "rel": SCHEMA_2_0, "href": format!("{}/nodeinfo/2.0", state.base_url) },
            { "rel": SCHEMA_2_1, "href": format!("{}/nodeinfo/2.1", state.base_url) },
        ]
    });
    (
        [(CONTENT_TYPE, JSON), (ACCESS_CONTROL_ALLOW_ORIGIN, ANYONE)],
        links.to_string(),
    )
        .into_response()
}

/// `GET /nodeinfo/2.0`.
pub async fn nodeinfo_2_0(State(state): State<AppState>) -> Response {
    document(&state, Version::V2_0).await.into_response()
}

/// `GET /nodeinfo/2.1`.
pub async fn nodeinfo_2_1(State(state): State<AppState>) -> Response {
    document(&state, Version::V2_1).await.into_response()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    V2_0,
    V2_1,
}

/// The usage counts, from one query.
///
/// Users are local actors that are not deleted; an active one published a
/// post in the window (deleting the post later does not undo having been
/// active). Posts are local posts that are not deleted, whatever their
/// visibility, as other servers count them.
const USAGE: &str = "
    SELECT
        count(*),
        count(*) FILTER (WHERE EXISTS (
            SELECT 1 FROM posts p
            WHERE p.author = a.uri AND p.published > now() - interval '30 days')),
        count(*) FILTER (WHERE EXISTS (
            SELECT 1 FROM posts p
            WHERE p.author = a.uri AND p.published > now() - interval '180 days')),
        (SELECT count(*) FROM posts WHERE local AND deleted_at IS NULL)
    FROM actors a
    WHERE a.local AND a.deleted_at IS NULL";

async fn document(state: &AppState, version: Version) -> Result<Response, ApError> {
    let (total, active_month, active_halfyear, local_posts): (i64, i64, i64, i64) =
        sqlx::query_as(USAGE).fetch_one(&state.pool).await?;
    let mut software = json!({ "name": "chorus", "version": env!("CARGO_PKG_VERSION") });
    let (schema, content_type) = match version {
        Version::V2_0 => ("2.0", PROFILE_2_0),
        Version::V2_1 => {
            let repository = env!("CARGO_PKG_REPOSITORY");
            if !repository.is_empty() {
                software["repository"] = Value::from(repository);
            }
            let homepage = env!("CARGO_PKG_HOMEPAGE");
            if !homepage.is_empty() {
                software["homepage"] = Value::from(homepage);
            }
            ("2.1", PROFILE_2_1)
        }
    };
    let document = json!({
        "version": schema,
        "software": software,
        "protocols": ["activitypub"],
        "services": { "inbound": [], "outbound": [] },
        "openRegistrations": false,
        "usage": {
            "users": {
                "total": total,
                "activeMonth": active_month,
                "activeHalfyear": active_halfyear,
            },
            "localPosts": local_posts,
        },
        "metadata": {},
    });
    Ok((
        StatusCode::OK,
        [
            (CONTENT_TYPE, content_type),
            (ACCESS_CONTROL_ALLOW_ORIGIN, ANYONE),
        ],
        serde_json::to_vec(&document)?,
    )
        .into_response())
}
