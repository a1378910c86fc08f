//! WebFinger (RFC 7033) and host-meta: how `@alice@host` becomes an actor id.

use axum::extract::{RawQuery, State};
use axum::http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chorus_domain::actors::Handle;
use serde_json::json;

use super::errors::ApError;
use super::html::escape;
use super::{ANYONE, authority};
use crate::http::AppState;

const JRD: HeaderValue = HeaderValue::from_static("application/jrd+json; charset=utf-8");
const XRD: HeaderValue = HeaderValue::from_static("application/xrd+xml; charset=utf-8");

/// `GET /.well-known/webfinger?resource=acct:alice@host` (or the actor's URL).
///
/// Readable from any origin, errors included, so that web clients can look
/// accounts up.
pub async fn webfinger(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let mut response = match lookup(&state, query.as_deref()).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    response
        .headers_mut()
        .insert(ACCESS_CONTROL_ALLOW_ORIGIN, ANYONE);
    response
}

async fn lookup(state: &AppState, query: Option<&str>) -> Result<Response, ApError> {
    let resource = query
        .and_then(|query| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(name, _)| name == "resource")
                .map(|(_, value)| value.into_owned())
        })
        .ok_or_else(|| ApError::BadRequest("the `resource` parameter is missing".to_owned()))?;
    let Some(handle) = parse_resource(&resource, &state.base_url)? else {
        return Err(ApError::NotFound("no such account on this server"));
    };
    let row: Option<(String, String, bool)> = sqlx::query_as(
        "SELECT uri, handle, deleted_at IS NOT NULL FROM actors WHERE local AND handle = $1",
    )
    .bind(handle.as_str())
    .fetch_optional(&state.pool)
    .await?;
    let Some((uri, handle, deleted)) = row else {
        return Err(ApError::NotFound("no such account on this server"));
    };
    if deleted {
        return Err(ApError::Gone("this account was deleted"));
    }
    let jrd = json!({
        "subject": format!("acct:{handle}@{}", authority(&state.base_url)),
        "aliases": [uri],
        "links": [
            { "rel": "self", "type": "application/activity+json", "href": uri },
            { "rel": "http://webfinger.net/rel/profile-page", "type": "text/html", "href": uri },
        ],
    });
    Ok((
        StatusCode::OK,
        [(CONTENT_TYPE, JRD)],
        serde_json::to_vec(&jrd)?,
    )
        .into_response())
}

/// The local handle a WebFinger `resource` names: `Ok(None)` when it names
/// an account that cannot be here (another host, an impossible handle), an
/// error when it is not a resource at all.
///
/// Accepted: `acct:alice@host` (also without `acct:`, and with a leading
/// `@`), where `host` is this server's `host[:port]` or its bare host; and
/// the actor's URL `{base}/users/alice`.
fn parse_resource(resource: &str, base: &str) -> Result<Option<Handle>, ApError> {
    let resource = resource.trim();
    if resource.is_empty() {
        return Err(ApError::BadRequest(
            "the `resource` parameter is empty".to_owned(),
        ));
    }
    let lower = resource.to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        let prefix = format!("{base}/users/");
        if !lower.starts_with(&prefix.to_ascii_lowercase()) {
            return Ok(None);
        }
        let name = &resource[prefix.len()..];
        if name.contains(['/', '?', '#']) {
            return Ok(None);
        }
        return Ok(Handle::parse(name).ok());
    }
    // Without a scheme, `alice@host:port` is still an account: the text
    // before the first `:` is then not a scheme, since it holds an `@`.
    let has_scheme = resource
        .split_once(':')
        .is_some_and(|(scheme, _)| !scheme.contains('@'));
    let acct = match resource.get(..5) {
        Some(scheme) if scheme.eq_ignore_ascii_case("acct:") => &resource[5..],
        _ if !has_scheme => resource,
        _ => {
            return Err(ApError::BadRequest(format!(
                "`{resource}` is neither an acct: URI nor an actor URL"
            )));
        }
    };
    let acct = acct.strip_prefix('@').unwrap_or(acct);
    let Some((user, host)) = acct
        .rsplit_once('@')
        .filter(|(u, h)| !u.is_empty() && !h.is_empty())
    else {
        return Err(ApError::BadRequest(format!(
            "`{resource}` is not of the form acct:user@host"
        )));
    };
    // Mentions are written without a port (`@alice@host`), so the bare host
    // names this server too when its origin has one.
    let ours = authority(base);
    if !(host.eq_ignore_ascii_case(ours) || host.eq_ignore_ascii_case(bare_host(ours))) {
        return Ok(None);
    }
    Ok(Handle::parse(user).ok())
}

/// `host` of `host[:port]` (an IPv6 literal keeps its brackets).
fn bare_host(authority: &str) -> &str {
    match authority.find(']') {
        Some(end) if authority.starts_with('[') => &authority[..=end],
        _ => authority.split(':').next().unwrap_or(authority),
    }
}

/// `GET /.well-known/host-meta`: where WebFinger is, for older peers.
pub async fn host_meta(State(state): State<AppState>) -> Response {
    let template = escape(&format!(
        "{}/.well-known/webfinger?resource={{uri}}",
        state.base_url
    ));
    let xrd = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <XRD xmlns=\"http://docs.oasis-open.org/ns/xri/xrd-1.0\">\n  \
         <Link rel=\"lrdd\" template=\"{template}\"/>\n</XRD>\n"
    );
    (
        [(CONTENT_TYPE, XRD), (ACCESS_CONTROL_ALLOW_ORIGIN, ANYONE)],
        xrd,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "http://127.0.0.1:8080";

    /// `Ok(Some(handle))`, `Ok(None)` (404) or `Err(())` (400).
    fn check(resource: &str, expected: Result<Option<&str>, ()>) {
        let found = parse_resource(resource, BASE)
            .map(|h| h.map(String::from))
            .map_err(|_| ());
        assert_eq!(
            found,
            expected.map(|h| h.map(str::to_owned)),
            "{resource:?}"
        );
    }

    #[test]
    fn bare_hosts_drop_the_port() {
        assert_eq!(bare_host("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(bare_host("example.com"), "example.com");
        assert_eq!(bare_host("[::1]:8080"), "[::1]");
    }

    #[test]
    fn resources_are_parsed() {
        check("acct:alice@127.0.0.1:8080", Ok(Some("alice")));
        check("ACCT:Alice@127.0.0.1:8080", Ok(Some("alice")));
        check("alice@127.0.0.1:8080", Ok(Some("alice")));
        check("@alice@127.0.0.1:8080", Ok(Some("alice")));
        check("http://127.0.0.1:8080/users/alice", Ok(Some("alice")));
        check("acct:alice@example.com", Ok(None));
        check("acct:alice@127.0.0.1", Ok(Some("alice")));
        check("acct:alice@127.0.0.1:9999", Ok(None));
        check("https://example.com/users/alice", Ok(None));
        check("http://127.0.0.1:8080/users/alice/outbox", Ok(None));
        check("http://127.0.0.1:8080/posts/1", Ok(None));
        check("acct:ali.ce@127.0.0.1:8080", Ok(None));
        check("acct:inbox@127.0.0.1:8080", Ok(None));
        check("", Err(()));
        check("acct:alice", Err(()));
        check("acct:@127.0.0.1:8080", Err(()));
        check("acct:alice@", Err(()));
        check("mailto:alice@127.0.0.1:8080", Err(()));
        check("alice", Err(()));
    }
}
