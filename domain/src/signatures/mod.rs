//! HTTP signatures: checking the signatures of inbound server-to-server
//! requests and signing our own, as pure functions over a plain
//! description of a request ([`RequestParts`]). The HTTP layer converts its
//! requests into that view; nothing here does IO.
//!
//! # What is accepted, and why
//!
//! - **draft-cavage HTTP Signatures**, in a `Signature` header or as
//!   `Authorization: Signature …`: this is what the fediverse speaks today.
//!   Algorithms `rsa-sha256` and `hs2019` (an absent `algorithm` means
//!   `hs2019`); like Mastodon, `hs2019` with an RSA key means
//!   RSASSA-PKCS1-v1_5 with SHA-256. An absent `headers` means `date`.
//! - **RFC 9421 HTTP Message Signatures** (`Signature-Input` and
//!   `Signature`), which Mastodon has started to send: algorithm
//!   `rsa-v1_5-sha256` (or `ed25519` with an Ed25519 key). When
//!   `Signature-Input` is present it wins over a draft-cavage reading of
//!   `Signature`.
//! - **Body digests**: `Digest: SHA-256=…` (draft-cavage) and
//!   `Content-Digest: sha-256=:…:` or `sha-512` (RFC 9530).
//!
//! Policy ([`SignatureHeader::check_policy`]) follows Mastodon so that what
//! Mastodon accepts is accepted here: a POST must cover `(request-target)
//! host date digest` (RFC 9421: `@method`, `@target-uri` or a path and
//! `@authority`, and `content-digest`), and the covered digest must match
//! the body; a GET must cover the target, the host and a time. The signed
//! Date header (or `created` time) must lie within a window around the
//! server's clock, in both directions, so that captured requests cannot be
//! replayed later; an `expires` in the past is refused.
//!
//! Some peers sign `(request-target)` without the query string although the
//! draft says to include it, so a request with a query is checked with the
//! query first and then without it. This does not weaken anything that
//! matters: inbox POSTs carry no query.
//!
//! # Use
//!
//! 1. [`SignatureHeader::parse`] the request: this yields the `keyId`
//!    before any cryptography, so the caller can look the key up;
//!    [`actor_id_from_key_id`] guesses whose key it is.
//! 2. [`SignatureHeader::check_policy`], which is cheap and needs no key,
//!    so stale or incomplete requests cost no key fetch.
//! 3. [`SignatureHeader::verify`] with the [`PublicKey`]. Only an error of
//!    kind [`ErrorKind::BadSignature`] is worth a re-fetch of the key (it
//!    may have been rotated) and a second try.
//!
//! Outbound requests are signed with [`sign_cavage`] (what every server
//! accepts) or [`sign_rfc9421`]; both build their strings with the same
//! code the verifier uses, so they round-trip by construction.

mod cavage;
mod digest;
mod error;
mod keys;
mod outbound;
mod policy;
mod rfc9421;
mod sf;
mod time;

#[cfg(test)]
mod tests;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chrono::{DateTime, TimeDelta, Utc};
use url::Url;

pub use error::{ErrorKind, Malformed, PolicyViolation, SignatureError};
pub use keys::{KeyError, KeyKind, MAX_RSA_BITS, MIN_RSA_BITS, PrivateKey, PublicKey};

/// Standard base64, encoding with padding and decoding with or without it:
/// peers are not consistent about padding and nothing depends on it.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A borrowed view of an inbound HTTP request: everything a signature can
/// cover.
#[derive(Clone, Copy, Debug)]
pub struct RequestParts<'a> {
    /// The method, as sent (`POST`).
    pub method: &'a str,
    /// The scheme of this server's public URL (`https`), for RFC 9421's
    /// `@target-uri` and `@scheme`.
    pub scheme: &'a str,
    /// This server's public authority (`chorus.example`, or
    /// `127.0.0.1:8080` with a port), for RFC 9421's `@target-uri` and
    /// `@authority`. Take it from configuration rather than from the `Host`
    /// header, so that a signature meant for another server does not verify
    /// here. It also stands in for a missing `Host` header (HTTP/2).
    pub authority: &'a str,
    /// The path and query as received (`/users/alice/inbox?page=2`).
    pub path_and_query: &'a str,
    /// The headers, names in any case (lower-case preferred), repeated
    /// names allowed: their values are joined with `, ` as both
    /// specifications require.
    pub headers: &'a [(String, String)],
    /// The body exactly as received.
    pub body: &'a [u8],
}

impl RequestParts<'_> {
    /// The combined value of a header: every occurrence, trimmed, joined
    /// with `, `. `None` when the header is absent.
    pub fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }

    /// The path without the query.
    fn path(&self) -> &str {
        self.path_and_query
            .split_once('?')
            .map_or(self.path_and_query, |(path, _)| path)
    }

    /// The query without its `?`, if there is one.
    fn query(&self) -> Option<&str> {
        self.path_and_query.split_once('?').map(|(_, query)| query)
    }
}

/// A request's signature, parsed but not yet checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureHeader {
    inner: Parsed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Parsed {
    Cavage(cavage::CavageSignature),
    Rfc9421(rfc9421::Rfc9421Signature),
}

impl SignatureHeader {
    /// Reads the request's signature headers without any cryptography:
    /// `Signature-Input` + `Signature` (RFC 9421) if present, else
    /// `Signature`, else `Authorization: Signature …` (draft-cavage).
    pub fn parse(req: &RequestParts<'_>) -> Result<Self, SignatureError> {
        if let Some(input) = req.header("signature-input") {
            let signature = req.header("signature").ok_or(Malformed::MissingHeader {
                present: "Signature-Input",
                missing: "Signature",
            })?;
            let inner = Parsed::Rfc9421(rfc9421::parse(&input, &signature)?);
            return Ok(Self { inner });
        }
        let value = match req.header("signature") {
            Some(value) => value,
            None => req
                .header("authorization")
                .and_then(|auth| strip_prefix_ignore_case(&auth, "Signature ").map(str::to_owned))
                .ok_or(SignatureError::Missing)?,
        };
        let inner = Parsed::Cavage(cavage::parse(&value)?);
        Ok(Self { inner })
    }

    /// The `keyId` (draft-cavage) or `keyid` (RFC 9421): the URL of the
    /// signer's key, to look up before [`Self::verify`].
    pub fn key_id(&self) -> &str {
        match &self.inner {
            Parsed::Cavage(sig) => &sig.key_id,
            Parsed::Rfc9421(sig) => &sig.key_id,
        }
    }

    /// The scheme and algorithm, for the record of how a request was
    /// authenticated: `draft-cavage-rsa-sha256`, `draft-cavage-hs2019` or
    /// `rfc9421`.
    pub fn scheme(&self) -> &'static str {
        match &self.inner {
            Parsed::Cavage(sig) => match sig.algorithm {
                cavage::Algorithm::RsaSha256 => "draft-cavage-rsa-sha256",
                cavage::Algorithm::Hs2019 => "draft-cavage-hs2019",
            },
            Parsed::Rfc9421(_) => "rfc9421",
        }
    }

    /// The covered headers or components, in signing order, lower-case
    /// (`(request-target)`, `host`, … or `@method`, `@target-uri`, …).
    pub fn covered(&self) -> &[String] {
        match &self.inner {
            Parsed::Cavage(sig) => &sig.headers,
            Parsed::Rfc9421(sig) => &sig.components,
        }
    }

    /// Checks the rules that need no key (see the module documentation):
    /// coverage, the time window of `max_skew` around `now`, expiry, and
    /// the covered body digest. Run it before looking up the key.
    pub fn check_policy(
        &self,
        req: &RequestParts<'_>,
        now: DateTime<Utc>,
        max_skew: TimeDelta,
    ) -> Result<(), SignatureError> {
        match &self.inner {
            Parsed::Cavage(sig) => policy::check_cavage(sig, req, now, max_skew),
            Parsed::Rfc9421(sig) => policy::check_rfc9421(sig, req, now, max_skew),
        }
    }

    /// Checks the signature with the signer's key. This alone says nothing
    /// about freshness or the body: call [`Self::check_policy`] too.
    pub fn verify(&self, req: &RequestParts<'_>, key: &PublicKey) -> Result<(), SignatureError> {
        match &self.inner {
            Parsed::Cavage(sig) => cavage::verify(sig, req, key),
            Parsed::Rfc9421(sig) => rfc9421::verify(sig, req, key),
        }
    }
}

/// Shorthand for [`SignatureHeader::parse`].
pub fn parse(req: &RequestParts<'_>) -> Result<SignatureHeader, SignatureError> {
    SignatureHeader::parse(req)
}

/// The likely actor URL of a key id: without its `#fragment` (Mastodon and
/// most servers: `…/users/x#main-key`) or its trailing `/main-key` segment
/// (GoToSocial: `…/users/x/main-key`). Only a guess to fetch first: the
/// caller must still check the key document's `owner`.
pub fn actor_id_from_key_id(key_id: &str) -> String {
    if let Some((actor, _fragment)) = key_id.split_once('#') {
        return actor.to_owned();
    }
    key_id
        .strip_suffix("/main-key")
        .unwrap_or(key_id)
        .to_owned()
}

/// The body of an outbound request and its media type, which the
/// draft-cavage signature covers.
#[derive(Clone, Copy, Debug)]
pub struct OutboundBody<'a> {
    /// The `Content-Type` to send, such as `application/activity+json`.
    pub content_type: &'a str,
    /// The exact bytes to send.
    pub bytes: &'a [u8],
}

/// Why an outbound request could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    #[error("the URL has no host to sign")]
    UrlWithoutHost,
    #[error("the key id must be printable ASCII without quotes or backslashes")]
    KeyId,
    #[error("the content type must not contain control characters")]
    ContentType,
    #[error("the signature could not be computed")]
    Crypto,
    #[error("the signing string could not be built")]
    Internal,
}

/// Signs an outbound request with draft-cavage `rsa-sha256`, which every
/// fediverse server accepts.
///
/// Returns the headers to set, replacing any of the same name (the values
/// must go out exactly as signed): `Host` (with a non-default port),
/// `Date`, and with a body `Digest` and `Content-Type`, then `Signature`.
/// A POST covers `(request-target) host date digest content-type`, a GET
/// `(request-target) host date`.
pub fn sign_cavage(
    method: &str,
    url: &Url,
    body: Option<OutboundBody<'_>>,
    key_id: &str,
    key: &PrivateKey,
    now: DateTime<Utc>,
) -> Result<Vec<(String, String)>, SigningError> {
    cavage::sign(method, url, body, key_id, key, now)
}

/// Signs an outbound request with RFC 9421 `rsa-v1_5-sha256`, label `sig1`,
/// covering `"@method" "@target-uri"` and, with a body, `"content-digest"`,
/// with `created` and `keyid` parameters.
///
/// Returns the headers to set, replacing any of the same name:
/// `Content-Digest` (with a body), `Signature-Input` and `Signature`.
pub fn sign_rfc9421(
    method: &str,
    url: &Url,
    body: Option<&[u8]>,
    key_id: &str,
    key: &PrivateKey,
    now: DateTime<Utc>,
) -> Result<Vec<(String, String)>, SigningError> {
    rfc9421::sign(method, url, body, key_id, key, now)
}

fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

/// A short, printable excerpt of something a peer sent, fit for an error
/// message: at most 64 characters, control characters replaced.
fn excerpt(text: &str) -> String {
    const MAX: usize = 64;
    let mut out: String = text
        .chars()
        .take(MAX)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().count() > MAX {
        out.push('…');
    }
    out
}
