//! The stream over HTTP: `GET /events.ndjson` (one event a line, streamed;
//! with `follow=true` the response stays open for new events) and the
//! GraphQL subscription over WebSocket at `/graphql/ws`.

use async_graphql::Data;
use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chorus_domain::Position;
use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::json;

use super::{Selection, SelectionError, cursor, ndjson_line};
use crate::app::App;
use crate::graphql::{Analytics, Viewer};
use crate::http::AppState;
use crate::tokens::{self, Bearer};

/// The routes of the stream.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/events.ndjson", get(events_ndjson))
        .route("/graphql/ws", get(graphql_ws))
}

/// The query string of `/events.ndjson`. Lists are comma-separated.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    after: Option<String>,
    types: Option<String>,
    streams: Option<String>,
    actor: Option<String>,
    host: Option<String>,
    from: Option<String>,
    to: Option<String>,
    follow: Option<String>,
}

impl Params {
    fn read(&self) -> Result<(Position, Selection, bool), SelectionError> {
        let list = |s: &Option<String>| {
            s.as_ref()
                .map(|s| s.split(',').map(|e| e.trim().to_owned()).collect())
        };
        let time = |name: &str, s: &Option<String>| {
            s.as_deref()
                .map(|s| {
                    chrono::DateTime::parse_from_rfc3339(s)
                        .map(|t| t.to_utc())
                        .map_err(|_| {
                            SelectionError(format!(
                                "`{name}` must be an RFC 3339 time (e.g. `2026-12-01T00:00:00Z`), not `{s}`"
                            ))
                        })
                })
                .transpose()
        };
        let after = match &self.after {
            Some(after) => cursor("after", after)?,
            None => Position::START,
        };
        let follow = match self.follow.as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(SelectionError(format!(
                    "`follow` must be `true` or `false`, not `{other}`"
                )));
            }
        };
        let selection = Selection {
            types: list(&self.types),
            streams: list(&self.streams),
            actor: self.actor.clone(),
            host: self.host.clone(),
            from: time("from", &self.from)?,
            to: time("to", &self.to)?,
        };
        Ok((after, selection, follow))
    }
}

/// A JSON error answer.
fn refusal(status: StatusCode, message: &str) -> Response {
    let mut response = (status, axum::Json(json!({ "error": message }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// Passes admins' and analytics tokens; answers 401 without a valid token
/// and 403 for any other account's.
async fn log_reader(state: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    let bearer = crate::http::authenticate(&state.pool, headers)
        .await
        .map_err(|status| {
            refusal(
                status,
                if status == StatusCode::UNAUTHORIZED {
                    "invalid or revoked token"
                } else {
                    "internal error"
                },
            )
        })?;
    match bearer {
        None => Err(refusal(
            StatusCode::UNAUTHORIZED,
            "sign in with an admin's or an analytics bearer token",
        )),
        Some(Bearer::Analytics { .. }) => Ok(()),
        Some(Bearer::Account(owner)) => {
            let app = App::new(state.store.clone(), &state.base_url);
            match app.local_actor_by_uri(&owner.actor_uri).await {
                Ok(Some(actor)) if actor.admin => Ok(()),
                Ok(_) => Err(refusal(
                    StatusCode::FORBIDDEN,
                    "only admins and analytics tokens may read the event log",
                )),
                Err(error) => {
                    tracing::error!(%error, "could not load the token's account");
                    Err(refusal(StatusCode::SERVICE_UNAVAILABLE, "internal error"))
                }
            }
        }
    }
}

/// `GET /events.ndjson`: the events after `after` that the parameters
/// select, one JSON object a line, in log order; streamed as they are read,
/// and with `follow=true` kept open for new events.
async fn events_ndjson(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(refused) = log_reader(&state, &headers).await {
        return refused;
    }
    let Query(params) = match params {
        Ok(params) => params,
        Err(rejection) => return refusal(StatusCode::BAD_REQUEST, &rejection.body_text()),
    };
    let (after, narrowed, follow) = match params
        .read()
        .and_then(|(after, selection, follow)| Ok((after, selection.narrowed()?, follow)))
    {
        Ok(read) => read,
        Err(e) => return refusal(StatusCode::BAD_REQUEST, &e.0),
    };
    let events = super::read(&state.store, after, narrowed, follow);
    // Events waiting in the channel go out together; a live event goes out
    // as soon as it arrives.
    let body = events.ready_chunks(super::PAGE).map(|chunk| {
        let mut lines = Vec::with_capacity(chunk.len() * 512);
        for event in chunk {
            match event {
                Ok(event) => ndjson_line(&event, &mut lines),
                Err(error) => {
                    // The status is sent: all a reader can be told is that
                    // the response ends short (its last line is whole).
                    tracing::error!(%error, "the event stream failed");
                    return Err(std::io::Error::other("the event stream failed"));
                }
            }
        }
        Ok(Bytes::from(lines))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response()
}

/// `GET /graphql/ws`: GraphQL subscriptions over WebSocket
/// (`graphql-transport-ws`, or the older `graphql-ws`). The token is in
/// `connection_init`'s payload, as `{"Authorization": "Bearer …"}` or
/// `{"token": "…"}`, or else in the upgrade request's `Authorization`
/// header.
async fn graphql_ws(
    State(state): State<AppState>,
    headers: HeaderMap,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    let header_token = crate::http::bearer(&headers).map(str::to_owned);
    let schema = state.schema.clone();
    let pool = state.pool.clone();
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| {
            GraphQLWebSocket::new(socket, schema, protocol)
                .on_connection_init(move |payload| async move {
                    let token = payload
                        .get("Authorization")
                        .or_else(|| payload.get("authorization"))
                        .and_then(|v| v.as_str())
                        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim().to_owned())
                        .or_else(|| {
                            payload
                                .get("token")
                                .and_then(|v| v.as_str())
                                .map(str::to_owned)
                        })
                        .or(header_token);
                    connection_data(&pool, token.as_deref()).await
                })
                .serve()
        })
}

/// What a WebSocket connection's operations run as.
async fn connection_data(pool: &sqlx::PgPool, token: Option<&str>) -> async_graphql::Result<Data> {
    let mut data = Data::default();
    let Some(token) = token else {
        data.insert(Viewer(None));
        return Ok(data);
    };
    match tokens::authenticate(pool, token).await {
        Ok(Some(Bearer::Account(owner))) => data.insert(Viewer(Some(owner))),
        Ok(Some(Bearer::Analytics { token_id })) => {
            data.insert(Viewer(None));
            data.insert(Analytics(token_id));
        }
        Ok(None) => return Err("invalid or revoked token".into()),
        Err(error) => {
            tracing::error!(%error, "token lookup failed");
            return Err("internal error".into());
        }
    }
    Ok(data)
}
