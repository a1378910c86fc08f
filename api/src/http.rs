//! The HTTP surface.

use std::sync::Arc;

use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use chorus_projections::Projections;

use crate::app::App;
use crate::database::ReadPool;
use crate::federation::Federation;
use crate::graphql::{self, Analytics, ChorusSchema, Viewer};
use crate::tokens::{self, Bearer};
use axum::routing::get;
use chorus_postgres::PgEventStore;
use serde_json::json;
use sqlx::PgPool;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub store: PgEventStore,
    /// The public origin of every ActivityPub id, without a final `/`
    /// (e.g. `https://example.com`).
    pub base_url: String,
    pub schema: ChorusSchema,
    /// The inbox and remote fetches; `None` where a test or tool serves
    /// only the local surface.
    pub federation: Option<Arc<Federation>>,
    /// Where GraphQL queries read (see [`AppState::with_reads`]).
    pub reads: ReadPool,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State whose GraphQL mutations answer without waiting for the read
    /// models (see [`AppState::with_projections`]).
    pub fn new(pool: PgPool, store: PgEventStore, base_url: &url::Url) -> Self {
        Self::build(pool, store, base_url, None)
    }

    /// State whose GraphQL mutations answer once `projections` show their effect.
    pub fn with_projections(
        pool: PgPool,
        store: PgEventStore,
        base_url: &url::Url,
        projections: Arc<Projections>,
    ) -> Self {
        Self::build(pool, store, base_url, Some(projections))
    }

    fn build(
        pool: PgPool,
        store: PgEventStore,
        base_url: &url::Url,
        projections: Option<Arc<Projections>>,
    ) -> Self {
        let base_url = base_url.as_str().trim_end_matches('/').to_owned();
        let app = App::new(store.clone(), &base_url);
        Self {
            pool: pool.clone(),
            store,
            base_url,
            schema: graphql::schema(app, projections),
            federation: None,
            reads: ReadPool::primary(pool),
        }
    }

    /// The same state, its GraphQL queries reading from `reads` (a read
    /// replica while it is fresh enough). Everything else — mutations and
    /// what they answer, subscriptions, token checks, the inbox and the
    /// ActivityPub endpoints — keeps to [`AppState::pool`].
    pub fn with_reads(mut self, reads: ReadPool) -> Self {
        self.reads = reads;
        self
    }

    /// The same state, with the inbox and remote fetches running.
    pub fn with_federation(mut self, federation: Arc<Federation>) -> Self {
        // GraphQL commands find unknown remote actors through federation.
        self.schema = graphql::with_federation(&self.schema, &federation);
        self.federation = Some(federation);
        self
    }
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/graphql", get(graphiql).post(graphql_request))
        .merge(crate::activitypub::routes())
        .merge(crate::federation::routes())
        .merge(crate::admin::routes())
        .merge(crate::events::ndjson::routes())
        .with_state(state)
}

/// GraphiQL, for exploring the API from a browser.
async fn graphiql() -> Html<String> {
    Html(
        async_graphql::http::GraphiQLSource::build()
            .endpoint("/graphql")
            .finish(),
    )
}

/// A GraphQL request, acting as the owner of the bearer token (if any).
async fn graphql_request(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: GraphQLRequest,
) -> Response {
    let mut request = request.into_inner();
    request = match authenticate(&state.pool, &headers).await {
        Ok(None) => request.data(Viewer(None)),
        Ok(Some(Bearer::Account(owner))) => request.data(Viewer(Some(owner))),
        // An analytics token acts as no one, and may only read the log.
        Ok(Some(Bearer::Analytics { token_id })) => {
            request.data(Viewer(None)).data(Analytics(token_id))
        }
        Err(StatusCode::UNAUTHORIZED) => {
            return (StatusCode::UNAUTHORIZED, Json(json!({ "errors": [{ "message": "invalid or revoked token", "extensions": { "code": "UNAUTHENTICATED" } }] })))
                .into_response();
        }
        Err(status) => {
            return (status, Json(json!({ "errors": [{ "message": "internal error", "extensions": { "code": "INTERNAL" } }] })))
                .into_response();
        }
    };
    let request = graphql::route_reads(request, &state.reads);
    GraphQLResponse::from(state.schema.execute(request).await).into_response()
}

/// The request's bearer token, if it has one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// What the request's bearer token is (`None` without one); 401 when it is
/// not a live token, 503 when it could not be looked up.
pub(crate) async fn authenticate(
    pool: &PgPool,
    headers: &HeaderMap,
) -> Result<Option<Bearer>, StatusCode> {
    let Some(secret) = bearer(headers) else {
        return Ok(None);
    };
    match tokens::authenticate(pool, secret).await {
        Ok(Some(bearer)) => Ok(Some(bearer)),
        Ok(None) => Err(StatusCode::UNAUTHORIZED),
        Err(error) => {
            tracing::error!(%error, "token lookup failed");
            Err(StatusCode::SERVICE_UNAVAILABLE)
        }
    }
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
