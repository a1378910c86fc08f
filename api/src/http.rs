//! The HTTP surface.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chorus_postgres::PgEventStore;
use serde_json::json;
use sqlx::PgPool;

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    pub pool: PgPool,
    pub store: PgEventStore,
    /// The public origin of every ActivityPub id, without a final `/`
    /// (e.g. `https://example.com`).
    pub base_url: String,
}

impl AppState {
    pub fn new(pool: PgPool, store: PgEventStore, base_url: &url::Url) -> Self {
        Self {
            pool,
            store,
            base_url: base_url.as_str().trim_end_matches('/').to_owned(),
        }
    }
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(crate::activitypub::routes())
        .with_state(state)
}

/// The process is up and serving.
async fn healthz() -> &'static str {
    "ok"
}

/// The database is reachable and every known migration is applied.
async fn readyz(State(state): State<AppState>) -> Response {
    match chorus_postgres::migrate::pending(&state.pool).await {
        Ok(pending) if pending.is_empty() => Json(json!({ "status": "ready" })).into_response(),
        Ok(pending) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "reason": "migrations pending", "pending": pending })),
        )
            .into_response(),
        Err(error) => {
            tracing::warn!(%error, "readiness check could not reach the database");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "not ready", "reason": "database unreachable" })),
            )
                .into_response()
        }
    }
}
