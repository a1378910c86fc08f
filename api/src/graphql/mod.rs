//! The GraphQL API for apps: mutations run commands, queries read the read
//! models with visibility enforced in SQL.

mod deliveries;
mod events;
mod history;
mod mutations;
mod queries;
mod servers;
mod types;

use std::sync::Arc;
use std::time::Duration;

use async_graphql::{ErrorExtensions, Schema};
use chorus_domain::Position;
use chorus_projections::Projections;
use sqlx::PgPool;

use crate::app::{App, AppError, LocalActor};
use crate::tokens::TokenOwner;

pub use events::{Analytics, AnalyticsScope, EventFilter, SubscriptionRoot};
pub use mutations::MutationRoot;
pub use queries::QueryRoot;

/// The schema type.
pub type ChorusSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// The deepest query accepted.
pub const MAX_DEPTH: usize = 12;
/// The most complex query accepted (each field costs 1, lists by their size).
pub const MAX_COMPLEXITY: usize = 2_000;
/// The most items a page may ask for.
pub const MAX_PAGE: i32 = 100;

/// Builds the schema (without per-request data).
pub fn schema(app: App, projections: Option<Arc<Projections>>) -> ChorusSchema {
    build(app, projections, None)
}

fn build(
    app: App,
    projections: Option<Arc<Projections>>,
    federation: Option<Arc<crate::federation::Federation>>,
) -> ChorusSchema {
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
        .extension(AnalyticsScope)
        .data(Services {
            pool: app.pool.clone(),
            app,
            projections,
            federation,
        })
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

/// The same schema, its commands able to find unknown remote actors
/// through `federation` (see [`App::with_federation`]).
pub fn with_federation(
    schema: &ChorusSchema,
    federation: &Arc<crate::federation::Federation>,
) -> ChorusSchema {
    match schema.data::<Services>() {
        Some(services) => build(
            services.app.clone().with_federation(federation.clone()),
            services.projections.clone(),
            Some(federation.clone()),
        ),
        // Every schema is built by `schema`, with its services.
        None => schema.clone(),
    }
}

/// The schema in SDL, as exported to `docs/schema.graphql`.
pub fn sdl() -> String {
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
        .finish()
        .sdl()
}

/// Shared by every request.
#[derive(Clone)]
pub(crate) struct Services {
    pub app: App,
    pub pool: PgPool,
    pub projections: Option<Arc<Projections>>,
    /// Remote fetches and keys, for reprocessing inbound history; `None`
    /// where federation is not running.
    pub federation: Option<Arc<crate::federation::Federation>>,
}

impl Services {
    /// The pool a resolver reads from: for a query, the one chosen when the
    /// request arrived ([`route_reads`]: the read replica while it is fresh
    /// enough); for mutations — so their answers show their own writes —
    /// and subscriptions, the primary.
    pub fn reads<'c>(&'c self, ctx: &async_graphql::Context<'c>) -> &'c PgPool {
        ctx.data_opt::<ReadFrom>().map_or(&self.pool, |r| &r.0)
    }

    /// Waits until the read models show everything up to `position`, so a
    /// mutation's answer reflects the mutation (read-your-writes).
    pub async fn caught_up(&self, position: Option<Position>) {
        if let (Some(projections), Some(position)) = (&self.projections, position)
            && !projections.wait_for(position, Duration::from_secs(5)).await
        {
            tracing::warn!(%position, "read models did not catch up within 5 s");
        }
    }
}

/// The pool a query request reads from, fixed when it arrives so that all
/// of its fields read from one place.
struct ReadFrom(PgPool);

/// Marks `request` to read from `reads`' current pool when it runs a query
/// (the operation it selects, as execution selects it); anything else
/// reads from the primary. A request that does not parse is left alone:
/// execution reports why.
pub fn route_reads(
    mut request: async_graphql::Request,
    reads: &crate::database::ReadPool,
) -> async_graphql::Request {
    use async_graphql::parser::types::{DocumentOperations, OperationType};
    if !reads.has_replica() {
        return request;
    }
    let name = request.operation_name.clone();
    let is_query = request.parsed_query().is_ok_and(|document| {
        let operation = match (&document.operations, name) {
            (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name.as_str()),
            (DocumentOperations::Single(operation), None) => Some(operation),
            (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
                operations.values().next()
            }
            _ => None,
        };
        operation.is_some_and(|o| o.node.ty == OperationType::Query)
    });
    if is_query {
        request.data(ReadFrom(reads.pool().clone()))
    } else {
        request
    }
}

/// Who is asking: set per request from the bearer token.
#[derive(Clone, Debug)]
pub struct Viewer(pub Option<TokenOwner>);

/// A GraphQL error with a stable `code` extension.
pub(crate) fn error(code: &'static str, message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, e| e.set("code", code))
}

impl From<AppError> for GraphqlError {
    fn from(e: AppError) -> Self {
        if e.is_internal() {
            // The cause stays in the log; the client gets no details.
            tracing::error!(error = %e, source = ?std::error::Error::source(&e), "command failed");
            return GraphqlError(error("INTERNAL", "internal error"));
        }
        GraphqlError(error(e.code(), e.to_string()))
    }
}

impl From<sqlx::Error> for GraphqlError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "query failed");
        GraphqlError(error("INTERNAL", "internal error"))
    }
}

/// Carries an `async_graphql::Error` through `?`.
pub(crate) struct GraphqlError(pub async_graphql::Error);

impl From<GraphqlError> for async_graphql::Error {
    fn from(e: GraphqlError) -> Self {
        e.0
    }
}

pub(crate) type Result<T> = std::result::Result<T, async_graphql::Error>;

pub(crate) fn internal(e: impl std::fmt::Display) -> async_graphql::Error {
    tracing::error!(error = %e, "query failed");
    error("INTERNAL", "internal error")
}

/// The acting local actor, or UNAUTHENTICATED.
pub(crate) async fn acting(ctx: &async_graphql::Context<'_>) -> Result<LocalActor> {
    let viewer = ctx
        .data::<Viewer>()
        .map_err(|_| error("UNAUTHENTICATED", "sign in with a bearer token"))?;
    let owner = viewer
        .0
        .as_ref()
        .ok_or_else(|| error("UNAUTHENTICATED", "sign in with a bearer token"))?;
    let services = ctx.data::<Services>()?;
    services
        .app
        .local_actor_by_uri(&owner.actor_uri)
        .await
        .map_err(|e| GraphqlError::from(e).0)?
        .ok_or_else(|| error("UNAUTHENTICATED", "the token's account no longer exists"))
}

/// The signed-in actor's id, or UNAUTHENTICATED; unlike [`acting`], without
/// loading the account (for queries that only filter by it).
pub(crate) fn signed_in(ctx: &async_graphql::Context<'_>) -> Result<String> {
    viewer_uri(ctx).ok_or_else(|| error("UNAUTHENTICATED", "sign in with a bearer token"))
}

/// The viewer's actor id, if signed in.
pub(crate) fn viewer_uri(ctx: &async_graphql::Context<'_>) -> Option<String> {
    ctx.data::<Viewer>()
        .ok()
        .and_then(|v| v.0.as_ref().map(|o| o.actor_uri.clone()))
}
