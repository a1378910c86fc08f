//! The rules a well-formed signature must also meet before it is worth a
//! cryptographic check: what it covers, how fresh it is, and that the body
//! digest it covers matches the body.

use chrono::{DateTime, TimeDelta, Utc};

use super::cavage::CavageSignature;
use super::error::{Malformed, PolicyViolation, SignatureError};
use super::rfc9421::Rfc9421Signature;
use super::{RequestParts, digest, time};

/// Coverage rules for draft-cavage. They are Mastodon's: a POST must sign
/// `(request-target) host date digest`, so signatures Mastodon accepts are
/// accepted here and vice versa.
pub(super) fn check_cavage(
    sig: &CavageSignature,
    req: &RequestParts<'_>,
    now: DateTime<Utc>,
    max_skew: TimeDelta,
) -> Result<(), SignatureError> {
    let covers = |name: &str| sig.covers(name);
    if !covers("(request-target)") {
        return Err(PolicyViolation::NotCovered("`(request-target)`").into());
    }
    if !covers("host") {
        return Err(PolicyViolation::NotCovered("`host`").into());
    }
    let created = if covers("(created)") {
        sig.created
    } else {
        None
    };
    check_time(
        req,
        covers("date"),
        created,
        sig.expires,
        now,
        max_skew,
        "`date` or `(created)`",
    )?;
    check_digests(req, &covers, "`digest`")
}

/// Coverage rules for RFC 9421: the method, the target and its authority
/// (`@target-uri` holds both), a time, and on requests with a body a
/// digest.
pub(super) fn check_rfc9421(
    sig: &Rfc9421Signature,
    req: &RequestParts<'_>,
    now: DateTime<Utc>,
    max_skew: TimeDelta,
) -> Result<(), SignatureError> {
    let covers = |name: &str| sig.covers(name);
    if !covers("@method") {
        return Err(PolicyViolation::NotCovered("`@method`").into());
    }
    if !(covers("@target-uri") || covers("@path") || covers("@request-target")) {
        return Err(
            PolicyViolation::NotCovered("`@target-uri`, `@path` or `@request-target`").into(),
        );
    }
    if !(covers("@target-uri") || covers("@authority")) {
        return Err(PolicyViolation::NotCovered("`@authority` or `@target-uri`").into());
    }
    check_time(
        req,
        covers("date"),
        sig.created,
        sig.expires,
        now,
        max_skew,
        "`date` or a `created` parameter",
    )?;
    check_digests(req, &covers, "`content-digest`")
}

/// Checks freshness: an expired signature is refused, and the signed
/// creation time and the signed Date header must each be within `max_skew`
/// of `now`, in either direction. At least one of them must be signed, or a
/// captured request could be replayed forever.
fn check_time(
    req: &RequestParts<'_>,
    date_covered: bool,
    created: Option<i64>,
    expires: Option<i64>,
    now: DateTime<Utc>,
    max_skew: TimeDelta,
    wanted: &'static str,
) -> Result<(), SignatureError> {
    let now_seconds = now.timestamp();
    if let Some(expires) = expires
        && expires < now_seconds
    {
        return Err(PolicyViolation::Expired {
            seconds_ago: now_seconds - expires,
        }
        .into());
    }
    let limit_seconds = max_skew.num_seconds().abs();
    let within = |what: &'static str, at: i64| {
        let offset_seconds = at.saturating_sub(now_seconds);
        if offset_seconds.abs() > limit_seconds {
            Err(PolicyViolation::Skew {
                what,
                offset_seconds,
                limit_seconds,
            })
        } else {
            Ok(())
        }
    };
    let mut dated = false;
    if let Some(created) = created {
        within("signature's creation time", created)?;
        dated = true;
    }
    if date_covered {
        let value = req
            .header("date")
            .ok_or_else(|| Malformed::MissingCoveredHeader("date".to_owned()))?;
        let at = time::parse_http_date(&value).ok_or(Malformed::Date)?;
        within("Date header", at.timestamp())?;
        dated = true;
    }
    if dated {
        Ok(())
    } else if req.header("date").is_some() {
        Err(PolicyViolation::NotCovered(wanted).into())
    } else {
        Err(PolicyViolation::NoDate.into())
    }
}

/// Checks every covered digest header against the body, and requires one
/// on a POST or any request with a body: the signature covers the digest,
/// not the body, so without it the body could be anything.
fn check_digests(
    req: &RequestParts<'_>,
    covers: &dyn Fn(&str) -> bool,
    wanted: &'static str,
) -> Result<(), SignatureError> {
    let mut checked = false;
    for name in ["digest", "content-digest"] {
        if !covers(name) {
            continue;
        }
        let value = req
            .header(name)
            .ok_or_else(|| Malformed::MissingCoveredHeader(name.to_owned()))?;
        match name {
            "digest" => digest::check_digest(&value, req.body)?,
            _ => digest::check_content_digest(&value, req.body)?,
        }
        checked = true;
    }
    let needs_digest = req.method.eq_ignore_ascii_case("POST") || !req.body.is_empty();
    if needs_digest && !checked {
        return Err(PolicyViolation::NotCovered(wanted).into());
    }
    Ok(())
}
