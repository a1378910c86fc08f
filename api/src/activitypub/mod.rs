//! The public ActivityPub surface: discovery (WebFinger, NodeInfo,
//! host-meta), actor and object documents with content negotiation, and
//! collections.

use axum::Router;

use crate::http::AppState;

/// The routes of the public ActivityPub surface.
pub fn routes() -> Router<AppState> {
    Router::new()
}
