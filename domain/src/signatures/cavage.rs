//! draft-cavage-http-signatures (version 12 and the earlier ones Mastodon
//! implemented): the `Signature` header, or `Authorization: Signature …`.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use url::Url;

use super::error::{Malformed, SignatureError};
use super::keys::{KeyKind, PrivateKey, PublicKey};
use super::{BASE64, RequestParts, SigningError, digest, excerpt, outbound, time};

const HEADER: &str = "Signature";

/// The algorithms accepted in the `algorithm` parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256: what Mastodon and almost every
    /// fediverse server send.
    RsaSha256,
    /// "Derive the algorithm from the key": RSASSA-PKCS1-v1_5 with SHA-256
    /// for RSA keys (as Mastodon does), Ed25519 for Ed25519 keys.
    Hs2019,
}

/// A parsed draft-cavage signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct CavageSignature {
    pub(super) key_id: String,
    pub(super) algorithm: Algorithm,
    /// Covered header names, lower-case, in signing order.
    pub(super) headers: Vec<String>,
    pub(super) signature: Vec<u8>,
    pub(super) created: Option<i64>,
    pub(super) expires: Option<i64>,
}

impl CavageSignature {
    pub(super) fn covers(&self, name: &str) -> bool {
        self.headers.iter().any(|h| h == name)
    }
}

/// Parses the parameters of a `Signature` header (or of the credentials
/// after `Authorization: Signature`).
pub(super) fn parse(value: &str) -> Result<CavageSignature, SignatureError> {
    let params = parse_params(value)?;
    let get = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let key_id = get("keyid")
        .filter(|k| !k.is_empty())
        .ok_or(Malformed::MissingParameter {
            header: HEADER,
            param: "keyId",
        })?;
    let algorithm = match get("algorithm") {
        // The draft lets senders leave the algorithm to the key; Mastodon
        // treats that as hs2019 too.
        None => Algorithm::Hs2019,
        Some(a) if a.eq_ignore_ascii_case("rsa-sha256") => Algorithm::RsaSha256,
        Some(a) if a.eq_ignore_ascii_case("hs2019") => Algorithm::Hs2019,
        Some(other) => return Err(SignatureError::UnsupportedAlgorithm(excerpt(other))),
    };
    let headers: Vec<String> = match get("headers") {
        // Older drafts, and Mastodon, default to `date` alone.
        None => vec!["date".to_owned()],
        Some(list) => list
            .split_ascii_whitespace()
            .map(str::to_ascii_lowercase)
            .collect(),
    };
    if headers.is_empty() {
        return Err(Malformed::NothingCovered.into());
    }
    for (n, name) in headers.iter().enumerate() {
        if headers[..n].contains(name) {
            return Err(Malformed::DuplicateComponent(excerpt(name)).into());
        }
    }
    let signature = get("signature")
        .ok_or(Malformed::MissingParameter {
            header: HEADER,
            param: "signature",
        })
        .and_then(|s| {
            BASE64
                .decode(s.trim())
                .ok()
                .filter(|s| !s.is_empty())
                .ok_or(Malformed::SignatureEncoding)
        })?;
    let timestamp = |param: &'static str| -> Result<Option<i64>, Malformed> {
        get(param)
            .map(|v| v.trim().parse().map_err(|_| Malformed::Timestamp { param }))
            .transpose()
    };
    let created = timestamp("created")?;
    let expires = timestamp("expires")?;
    for (pseudo, param, value) in [
        ("(created)", "created", created),
        ("(expires)", "expires", expires),
    ] {
        if headers.iter().any(|h| h == pseudo) {
            // The draft forbids these pseudo-headers with the algorithms
            // that name their hash, since those predate them.
            if algorithm != Algorithm::Hs2019 {
                return Err(Malformed::PseudoHeaderNeedsHs2019(pseudo).into());
            }
            if value.is_none() {
                return Err(Malformed::MissingParameter {
                    header: HEADER,
                    param,
                }
                .into());
            }
        }
    }
    Ok(CavageSignature {
        key_id: key_id.to_owned(),
        algorithm,
        headers,
        signature,
        created,
        expires,
    })
}

/// Splits `name="value",name=value,…` into lower-cased names and unquoted
/// values. Quoted values may use backslash escapes; unquoted ones (the
/// integers of `created` and `expires`) run to the next comma.
fn parse_params(value: &str) -> Result<Vec<(String, String)>, Malformed> {
    let syntax = |reason| Malformed::Syntax {
        header: HEADER,
        reason,
    };
    let mut out: Vec<(String, String)> = Vec::new();
    let mut rest = value.trim();
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
        if rest.is_empty() {
            break;
        }
        let (name, after) = rest
            .split_once('=')
            .ok_or(syntax("expected `name=value`"))?;
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(syntax("a parameter name must be a token"));
        }
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    '\\' => match chars.next() {
                        Some((_, escaped)) => value.push(escaped),
                        None => break,
                    },
                    c => value.push(c),
                }
            }
            let end = end.ok_or(syntax("unterminated quoted value"))?;
            let remaining = quoted[end..].trim_start();
            if !(remaining.is_empty() || remaining.starts_with(',')) {
                return Err(syntax("expected `,` after a quoted value"));
            }
            (value, remaining)
        } else {
            let (value, remaining) = after.split_once(',').unwrap_or((after, ""));
            (value.trim().to_owned(), remaining)
        };
        let name = name.to_ascii_lowercase();
        if out.iter().any(|(n, _)| *n == name) {
            return Err(Malformed::DuplicateParameter {
                header: HEADER,
                param: excerpt(&name),
            });
        }
        out.push((name, value));
        rest = remaining;
    }
    Ok(out)
}

/// Builds the signing string of draft-cavage section 2.3: one
/// `name: value` line per covered header, joined with `\n`.
///
/// `include_query` decides whether `(request-target)` carries the query
/// string: the draft says it does, but some peers sign the path alone.
pub(super) fn signing_string(
    req: &RequestParts<'_>,
    headers: &[String],
    created: Option<i64>,
    expires: Option<i64>,
    include_query: bool,
) -> Result<String, SignatureError> {
    let mut lines = Vec::with_capacity(headers.len());
    for name in headers {
        let value = match name.as_str() {
            "(request-target)" => {
                let target = if include_query {
                    req.path_and_query
                } else {
                    req.path()
                };
                format!("{} {target}", req.method.to_ascii_lowercase())
            }
            "(created)" => created
                .ok_or(Malformed::MissingParameter {
                    header: HEADER,
                    param: "created",
                })?
                .to_string(),
            "(expires)" => expires
                .ok_or(Malformed::MissingParameter {
                    header: HEADER,
                    param: "expires",
                })?
                .to_string(),
            // HTTP/2 carries the host in `:authority`, which the HTTP layer
            // may not copy into a `host` header.
            "host" => req
                .header("host")
                .or_else(|| (!req.authority.is_empty()).then(|| req.authority.to_owned()))
                .ok_or_else(|| Malformed::MissingCoveredHeader("host".to_owned()))?,
            other => req
                .header(other)
                .ok_or_else(|| Malformed::MissingCoveredHeader(excerpt(other)))?,
        };
        lines.push(format!("{name}: {value}"));
    }
    Ok(lines.join("\n"))
}

/// Checks the signature cryptographically.
pub(super) fn verify(
    sig: &CavageSignature,
    req: &RequestParts<'_>,
    key: &PublicKey,
) -> Result<(), SignatureError> {
    if sig.algorithm == Algorithm::RsaSha256 && !matches!(key.kind(), KeyKind::Rsa { .. }) {
        return Err(SignatureError::WrongKeyType {
            algorithm: "rsa-sha256".to_owned(),
            key: key.kind(),
        });
    }
    // With a query string, try the form the draft prescribes first, then
    // the path alone that some peers sign.
    let forms: &[bool] = if sig.covers("(request-target)") && req.path_and_query.contains('?') {
        &[true, false]
    } else {
        &[true]
    };
    for &include_query in forms {
        let text = signing_string(req, &sig.headers, sig.created, sig.expires, include_query)?;
        if key.verify(text.as_bytes(), &sig.signature) {
            return Ok(());
        }
    }
    Err(SignatureError::BadSignature {
        key_id: excerpt(&sig.key_id),
    })
}

/// Signs an outbound request the way Mastodon expects; see
/// [`super::sign_cavage`].
pub(super) fn sign(
    method: &str,
    url: &Url,
    body: Option<super::OutboundBody<'_>>,
    key_id: &str,
    key: &PrivateKey,
    now: DateTime<Utc>,
) -> Result<Vec<(String, String)>, SigningError> {
    if key_id.is_empty() || key_id.contains(|c: char| c == '"' || c == '\\' || c.is_control()) {
        return Err(SigningError::KeyId);
    }
    let target = outbound::Target::new(method, url)?;
    let mut headers: Vec<(&str, String)> = vec![
        ("Host", target.authority.clone()),
        ("Date", time::format_http_date(now)),
    ];
    let mut covered = vec!["(request-target)", "host", "date"];
    if let Some(body) = body {
        if body.content_type.contains(|c: char| c.is_control()) {
            return Err(SigningError::ContentType);
        }
        headers.push(("Digest", digest::digest_header(body.bytes)));
        headers.push(("Content-Type", body.content_type.to_owned()));
        covered.extend(["digest", "content-type"]);
    }
    let lower: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect();
    let covered: Vec<String> = covered.into_iter().map(str::to_owned).collect();
    let text = signing_string(
        &target.parts(&lower, body.map_or(&[], |b| b.bytes)),
        &covered,
        None,
        None,
        true,
    )
    .map_err(|_| SigningError::Internal)?;
    let signature = key.sign(text.as_bytes()).ok_or(SigningError::Crypto)?;
    let mut out: Vec<(String, String)> = headers
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v))
        .collect();
    out.push((
        "Signature".to_owned(),
        format!(
            r#"keyId="{key_id}",algorithm="rsa-sha256",headers="{}",signature="{}""#,
            covered.join(" "),
            BASE64.encode(signature)
        ),
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_parameters_leniently() {
        let sig = parse(
            r#"keyId="https://a.example/users/x#main-key", algorithm="hs2019",created=1402170695, expires = 1402170699 ,headers="(request-target) (created) (expires) Host",signature="AAEC""#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            sig,
            CavageSignature {
                key_id: "https://a.example/users/x#main-key".to_owned(),
                algorithm: Algorithm::Hs2019,
                headers: vec![
                    "(request-target)".to_owned(),
                    "(created)".to_owned(),
                    "(expires)".to_owned(),
                    "host".to_owned()
                ],
                signature: vec![0, 1, 2],
                created: Some(1_402_170_695),
                expires: Some(1_402_170_699),
            }
        );
    }

    #[test]
    fn refuses_broken_parameters() {
        let cases: Vec<(&str, SignatureError)> = vec![
            (
                r#"algorithm="rsa-sha256",signature="AAEC""#,
                Malformed::MissingParameter {
                    header: HEADER,
                    param: "keyId",
                }
                .into(),
            ),
            (
                r#"keyId="k",signature="AAEC",signature="AAEC""#,
                Malformed::DuplicateParameter {
                    header: HEADER,
                    param: "signature".to_owned(),
                }
                .into(),
            ),
            (
                r#"keyId="k,signature=AAEC"#,
                Malformed::Syntax {
                    header: HEADER,
                    reason: "unterminated quoted value",
                }
                .into(),
            ),
            (
                r#"keyId="k",signature="%%%""#,
                Malformed::SignatureEncoding.into(),
            ),
            (
                r#"keyId="k",algorithm="rsa-sha1",signature="AAEC""#,
                SignatureError::UnsupportedAlgorithm("rsa-sha1".to_owned()),
            ),
            (
                r#"keyId="k",algorithm="rsa-sha256",headers="(created) host",created=1,signature="AAEC""#,
                Malformed::PseudoHeaderNeedsHs2019("(created)").into(),
            ),
            (
                r#"keyId="k",headers="(expires)",signature="AAEC""#,
                Malformed::MissingParameter {
                    header: HEADER,
                    param: "expires",
                }
                .into(),
            ),
            (
                r#"keyId="k",headers="date Date",signature="AAEC""#,
                Malformed::DuplicateComponent("date".to_owned()).into(),
            ),
            (
                r#"keyId="k",created=soon,signature="AAEC""#,
                Malformed::Timestamp { param: "created" }.into(),
            ),
        ];
        for (header, expected) in cases {
            assert_eq!(parse(header), Err(expected), "{header}");
        }
    }
}
