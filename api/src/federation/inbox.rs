//! The inbox: `POST /inbox` (shared), `POST /users/{handle}/inbox` and
//! `POST /servers/{name}/inbox`.
//!
//! A request is checked (size, rate, instance blocks, shape, signature, that
//! the signer is the actor) and, once it passes, its body is appended to the
//! log as [`ActivityReceived`] and answered 202. Nothing is interpreted
//! here: the interpreter, a subscriber of the log, does that, so whatever
//! was stored can be interpreted again by newer code.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chorus_domain::inbound::{ActivityKind, InboundActivity, interpret, read_activity};
use chorus_domain::remote::{ActivityReceived, received_event_id, received_stream};
use chorus_domain::signatures::{self, ErrorKind, RequestParts, SignatureError};
use chorus_domain::{DomainEvent, Metadata, SignatureVerdict};
use chorus_postgres::NewStream;
use chrono::Utc;
use serde_json::json;

use super::Federation;
use super::metrics::Refusal;
use super::remote_keys::{KeyLookupError, domain_of};
use crate::http::AppState;

/// Why the inbox refused a request, and how it answers.
#[derive(Debug)]
struct Refused {
    status: StatusCode,
    why: Refusal,
    message: String,
    retry_after: Option<Duration>,
}

impl Refused {
    fn new(status: StatusCode, why: Refusal, message: impl Into<String>) -> Self {
        Self {
            status,
            why,
            message: message.into(),
            retry_after: None,
        }
    }

    fn internal(error: &dyn std::error::Error) -> Self {
        tracing::error!(error = %error, source = ?error.source(), "inbox failure");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Internal,
            "the server could not store the activity; try again later",
        )
    }

    fn into_response(self) -> Response {
        let mut response =
            (self.status, axum::Json(json!({ "error": self.message }))).into_response();
        if let Some(after) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&after.as_secs().max(1).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// `POST /inbox`.
pub async fn shared_inbox(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    request: Request,
) -> Response {
    let inbox = format!("{}/inbox", state.base_url);
    receive(state, peer, inbox, None, request).await
}

/// `POST /users/{handle}/inbox`.
pub async fn actor_inbox(
    State(state): State<AppState>,
    Path(handle): Path<String>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    request: Request,
) -> Response {
    let inbox = format!("{}/users/{}/inbox", state.base_url, handle.to_lowercase());
    receive(state, peer, inbox, Some(handle), request).await
}

/// `POST /servers/{name}/inbox`: a server's (a `Group`'s) inbox.
pub async fn server_inbox(
    State(state): State<AppState>,
    Path(name): Path<String>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    request: Request,
) -> Response {
    let inbox = format!("{}/servers/{}/inbox", state.base_url, name.to_lowercase());
    receive(state, peer, inbox, Some(name), request).await
}

async fn receive(
    state: AppState,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    inbox: String,
    handle: Option<String>,
    request: Request,
) -> Response {
    let Some(federation) = state.federation.clone() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "error": "federation is not running" })),
        )
            .into_response();
    };
    let ip = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
    match accept(&state, &federation, ip, inbox, handle, request).await {
        Ok(duplicate) => {
            federation.metrics.accepted(duplicate);
            StatusCode::ACCEPTED.into_response()
        }
        Err(refused) => {
            federation.metrics.refused(refused.why);
            tracing::info!(status = %refused.status, reason = %refused.message, "inbox refused a request");
            refused.into_response()
        }
    }
}

/// Checks and stores one request; `Ok(true)` if it was already stored.
async fn accept(
    state: &AppState,
    federation: &Federation,
    ip: Option<IpAddr>,
    inbox: String,
    handle: Option<String>,
    request: Request,
) -> Result<bool, Refused> {
    if let Some(ip) = ip
        && let Err(retry_after) = federation.limits.check_ip(ip)
    {
        return Err(rate_limited(retry_after, "this address"));
    }
    if let Some(handle) = handle {
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM actors WHERE handle = lower($1) AND local")
                .bind(&handle)
                .fetch_optional(&state.pool)
                .await
                .map_err(|e| Refused::internal(&e))?;
        if exists.is_none() {
            return Err(Refused::new(
                StatusCode::NOT_FOUND,
                Refusal::UnknownInbox,
                "no such actor",
            ));
        }
    }
    let (parts, body) = request.into_parts();
    let limit = federation.settings.inbox_body_limit;
    if parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|length| length > limit)
    {
        return Err(too_large(limit));
    }
    let body = axum::body::to_bytes(Body::new(body), limit)
        .await
        .map_err(|_| too_large(limit))?;

    let headers = header_list(&parts.headers);
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    // Our authority as configured: RFC 9421's `@authority` and `@target-uri`
    // are checked against it, so a signature made for another server does
    // not pass here (draft-cavage signs the Host header as sent).
    let (scheme, authority) = state
        .base_url
        .split_once("://")
        .unwrap_or(("https", state.base_url.as_str()));
    let request = RequestParts {
        method: parts.method.as_str(),
        scheme,
        authority,
        path_and_query: &path_and_query,
        headers: &headers,
        body: &body,
    };
    let signature =
        signatures::parse(&request).map_err(|e| unauthorized(Refusal::Signature, &e))?;
    let key_id = signature.key_id().to_owned();
    let signer_domain = domain_of(&key_id);

    let text = std::str::from_utf8(&body).map_err(|_| {
        Refused::new(
            StatusCode::BAD_REQUEST,
            Refusal::Malformed,
            "the body is not UTF-8 JSON",
        )
    })?;
    let document: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        Refused::new(
            StatusCode::BAD_REQUEST,
            Refusal::Malformed,
            format!("the body is not JSON: {e}"),
        )
    })?;
    let activity = read_activity(&document).map_err(|e| {
        Refused::new(
            StatusCode::BAD_REQUEST,
            Refusal::Malformed,
            format!("not an acceptable activity: {e}"),
        )
    })?;
    // What can be judged from the body alone is judged at the door (an
    // Undo of someone else's activity, a reaction that is not one emoji).
    // Posts are read by the interpreter: reading one costs more, and what
    // is wrong with one is a matter of content, not of form.
    if !matches!(activity.kind, ActivityKind::Create | ActivityKind::Update)
        && let Err(error) = interpret(&activity)
    {
        return Err(Refused::new(
            StatusCode::BAD_REQUEST,
            Refusal::Malformed,
            format!("not an acceptable activity: {error}"),
        ));
    }
    let actor_domain = domain_of(&activity.actor);
    // Activities are stored once per id: an id on another server than its
    // actor's would let anyone take a real activity's place in advance.
    if domain_of(&activity.id) != actor_domain {
        return Err(Refused::new(
            StatusCode::BAD_REQUEST,
            Refusal::Malformed,
            format!(
                "the activity's id ({}) is not on its actor's server ({actor_domain})",
                activity.id
            ),
        ));
    }
    if federation
        .blocked(&state.pool, &[&signer_domain, &actor_domain])
        .await
        .map_err(|e| Refused::internal(&e))?
    {
        return Err(Refused::new(
            StatusCode::FORBIDDEN,
            Refusal::BlockedInstance,
            "this instance is blocked",
        ));
    }

    signature
        .check_policy(&request, Utc::now(), federation.signature_window())
        .map_err(|e| unauthorized(Refusal::Signature, &e))?;
    let key = match federation.keys.get(&key_id, &federation.metrics).await {
        Ok(key) => key,
        Err(error) => return Err(key_unavailable(&error)),
    };
    let key = match signature.verify(&request, &key.key) {
        Ok(()) => key,
        // Perhaps the actor rotated its key: fetch it again, once.
        Err(error) if error.kind() == ErrorKind::BadSignature => {
            // At most once a minute per key: bad signatures must not make us
            // fetch on every request.
            if !federation.keys.may_refresh(&key_id) {
                return Err(unauthorized(Refusal::Signature, &error));
            }
            let fresh = federation
                .keys
                .refresh(&key_id, &federation.metrics)
                .await
                .map_err(|e| key_unavailable(&e))?;
            signature
                .verify(&request, &fresh.key)
                .map_err(|e| unauthorized(Refusal::Signature, &e))?;
            fresh
        }
        Err(error) => return Err(unauthorized(Refusal::Signature, &error)),
    };
    // Charged to the instance only now that a signature verified: until
    // then, anyone could name any actor or key and spend another server's
    // allowance (unverified requests count against their address alone).
    let signer_domain = domain_of(&key.owner);
    if let Err(retry_after) = federation.limits.check_instance(&signer_domain) {
        return Err(rate_limited(retry_after, &signer_domain));
    }
    if key.owner == activity.actor {
        let verdict = SignatureVerdict::Verified {
            key_id,
            signer: key.owner.clone(),
            scheme: signature.scheme().to_owned(),
        };
        return store(federation, &activity, inbox, text, verdict, actor_domain).await;
    }
    // Signed by someone else (a forwarded reply, a relay): the request
    // proves nothing about the actor, so the activity is taken from its own
    // server instead, if that server vouches for it.
    let mismatch = || {
        Refused::new(
            StatusCode::UNAUTHORIZED,
            Refusal::ActorMismatch,
            format!(
                "the request is signed by {}, but the activity's actor is {}, and the activity could not be fetched from its origin",
                key.owner, activity.actor
            ),
        )
    };
    let Ok(fetched) = federation.fetcher.get_activity(&activity.id).await else {
        return Err(mismatch());
    };
    let Ok(original) = read_activity(&fetched.document) else {
        return Err(mismatch());
    };
    if original.id != activity.id
        || original.actor != activity.actor
        || domain_of(fetched.url.as_str()) != actor_domain
    {
        return Err(mismatch());
    }
    let raw = fetched.document.to_string();
    let verdict = SignatureVerdict::Refetched {
        key_id,
        signer: key.owner.clone(),
        scheme: signature.scheme().to_owned(),
        from: fetched.url.to_string(),
    };
    store(federation, &original, inbox, &raw, verdict, actor_domain).await
}

/// Appends the activity, once per activity id.
async fn store(
    federation: &Federation,
    activity: &InboundActivity,
    inbox: String,
    raw: &str,
    verdict: SignatureVerdict,
    remote_host: String,
) -> Result<bool, Refused> {
    let received = DomainEvent::ActivityReceived(ActivityReceived {
        activity_id: activity.id.clone(),
        activity_type: activity.kind.as_str().to_owned(),
        actor: activity.actor.clone(),
        object: activity.object.id().map(str::to_owned),
        inbox,
        raw: raw.to_owned(),
    });
    let mut event = received
        .to_new_event()
        .map_err(|e| Refused::internal(&e))?
        .with_metadata(Metadata {
            actor: Some(activity.actor.clone()),
            received_at: Some(Utc::now()),
            remote_host: Some(remote_host),
            signature: Some(verdict),
            ..Metadata::default()
        });
    event.id = received_event_id(&activity.id);
    let outcome = federation
        .received
        .append_new_stream(received_stream(&activity.id), event)
        .await
        .map_err(|e| Refused::internal(&e))?;
    // `Taken` cannot happen (the stream's first event is this one), but
    // counts as a repeat if it did: the activity is in the log.
    Ok(outcome != NewStream::Appended)
}

fn header_list(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

fn unauthorized(why: Refusal, error: &SignatureError) -> Refused {
    Refused::new(StatusCode::UNAUTHORIZED, why, error.to_string())
}

fn key_unavailable(error: &KeyLookupError) -> Refused {
    if error.is_internal() {
        return Refused::internal(error);
    }
    Refused::new(
        StatusCode::UNAUTHORIZED,
        Refusal::UnknownKey,
        error.to_string(),
    )
}

fn too_large(limit: usize) -> Refused {
    Refused::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        Refusal::TooLarge,
        format!("the body is larger than {limit} bytes"),
    )
}

fn rate_limited(retry_after: Duration, whom: &str) -> Refused {
    Refused {
        retry_after: Some(retry_after),
        ..Refused::new(
            StatusCode::TOO_MANY_REQUESTS,
            Refusal::RateLimited,
            format!("too many requests from {whom}; slow down"),
        )
    }
}
