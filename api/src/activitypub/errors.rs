//! The errors of the ActivityPub surface and how each answers over HTTP.

use axum::http::StatusCode;
use axum::http::header::{CONTENT_TYPE, VARY};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::html::{escape, page};
use super::negotiation::{ACCEPT, HTML, JSON};

/// Why a request to the ActivityPub surface failed.
///
/// Client errors say what was wrong; server errors answer a generic message
/// and log their cause, which never reaches the client.
#[derive(Debug, thiserror::Error)]
pub enum ApError {
    /// The request itself is malformed (the message says how).
    #[error("{0}")]
    BadRequest(String),
    /// Nothing is here, or nothing the (unauthenticated) requester may see.
    #[error("{0}")]
    NotFound(&'static str),
    /// Something was here and was deleted.
    #[error("{0}")]
    Gone(&'static str),
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("cannot serialise a document")]
    Serialize(#[from] serde_json::Error),
}

impl ApError {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Gone(_) => StatusCode::GONE,
            Self::Database(_) | Self::Serialize(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client is told: the message of a client error, a generic
    /// one for a server error (whose cause is logged here).
    fn public_message(&self) -> String {
        match self {
            Self::BadRequest(_) | Self::NotFound(_) | Self::Gone(_) => self.to_string(),
            Self::Database(source) => {
                tracing::error!(error = ?source, "ActivityPub surface: database error");
                "internal server error".to_owned()
            }
            Self::Serialize(source) => {
                tracing::error!(error = ?source, "ActivityPub surface: cannot serialise a document");
                "internal server error".to_owned()
            }
        }
    }

    /// The error as a small HTML page, for browsers.
    pub fn into_html_response(self) -> Response {
        let status = self.status();
        let message = self.public_message();
        let title = status.canonical_reason().unwrap_or("Error");
        let body = page(
            title,
            None,
            &format!("<h1>{}</h1><p>{}</p>", escape(title), escape(&message)),
        );
        (status, [(CONTENT_TYPE, HTML), (VARY, ACCEPT)], body).into_response()
    }
}

impl IntoResponse for ApError {
    /// `{ "error": "..." }` with the error's status.
    fn into_response(self) -> Response {
        let status = self.status();
        let body = json!({ "error": self.public_message() }).to_string();
        (status, [(CONTENT_TYPE, JSON), (VARY, ACCEPT)], body).into_response()
    }
}
