//! Content negotiation: one URL answers ActivityPub peers with JSON-LD and
//! browsers with HTML, and the media types and headers both use.

use axum::http::header::{CONTENT_TYPE, VARY};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::errors::ApError;

/// ActivityPub documents.
pub const ACTIVITY_JSON: HeaderValue =
    HeaderValue::from_static("application/activity+json; charset=utf-8");
/// Plain JSON (errors, NodeInfo discovery).
pub const JSON: HeaderValue = HeaderValue::from_static("application/json; charset=utf-8");
/// Pages for browsers.
pub const HTML: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");
/// The value of `Vary` on every negotiated response: caches must keep the
/// JSON and the HTML answers of one URL apart.
pub const ACCEPT: HeaderValue = HeaderValue::from_static("Accept");

/// Whether the client asked for an ActivityStreams document:
/// `application/activity+json`, or `application/ld+json` (with or without
/// the ActivityStreams profile), not refused with `q=0`. Anything else
/// (browsers, no `Accept` at all) gets HTML.
pub fn wants_activity_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(accepts_activity_json)
}

/// One media range of an `Accept` header.
fn accepts_activity_json(range: &str) -> bool {
    let mut parts = range.split(';');
    let media_type = parts.next().unwrap_or_default().trim();
    let activity = media_type.eq_ignore_ascii_case("application/activity+json")
        || media_type.eq_ignore_ascii_case("application/ld+json");
    activity && !parts.any(refuses)
}

/// A `q=0` parameter (`q=0`, `q=0.0`, `q=0.000`): "not acceptable".
fn refuses(parameter: &str) -> bool {
    let Some((name, value)) = parameter.split_once('=') else {
        return false;
    };
    name.trim().eq_ignore_ascii_case("q") && value.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
}

/// Serialises an ActivityPub document.
pub fn activity_json<T: Serialize + ?Sized>(
    status: StatusCode,
    document: &T,
) -> Result<Response, ApError> {
    let body = serde_json::to_vec(document)?;
    Ok((
        status,
        [(CONTENT_TYPE, ACTIVITY_JSON), (VARY, ACCEPT)],
        body,
    )
        .into_response())
}

/// The answer of a negotiated endpoint: its errors are JSON for peers and
/// HTML pages for browsers.
pub fn negotiated(activity: bool, result: Result<Response, ApError>) -> Response {
    match result {
        Ok(response) => response,
        Err(error) if activity => error.into_response(),
        Err(error) => error.into_html_response(),
    }
}

/// A page for browsers.
pub fn html(status: StatusCode, page: String) -> Response {
    (status, [(CONTENT_TYPE, HTML), (VARY, ACCEPT)], page).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(accept: &[&str], expected: bool) {
        let mut headers = HeaderMap::new();
        for value in accept {
            headers.append(
                header::ACCEPT,
                HeaderValue::from_str(value).unwrap_or(ACCEPT),
            );
        }
        assert_eq!(wants_activity_json(&headers), expected, "{accept:?}");
    }

    #[test]
    fn activitypub_media_types_are_recognised() {
        check(&["application/activity+json"], true);
        check(&["Application/Activity+JSON"], true);
        check(
            &[r#"application/ld+json; profile="https://www.w3.org/ns/activitystreams""#],
            true,
        );
        check(&["application/ld+json"], true);
        check(&["text/html, application/activity+json;q=0.9"], true);
        check(&["text/html", "application/activity+json"], true);
        check(&["application/activity+json;q=0"], false);
        check(&["application/activity+json; q=0.0"], false);
        check(
            &["text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"],
            false,
        );
        check(&["application/json"], false);
        check(&["*/*"], false);
        check(&[], false);
    }
}
