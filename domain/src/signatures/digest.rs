//! Body digests: draft-cavage's `Digest` header (RFC 3230 syntax) and RFC
//! 9530's `Content-Digest`. A signature covers the digest header, not the
//! body, so a digest that does not match makes the signature say nothing
//! about the body.

use base64::Engine as _;
use sha2::{Digest as _, Sha256, Sha512};

use super::BASE64;
use super::error::{Malformed, PolicyViolation, SignatureError};
use super::sf::{self, BareItem, Member};

/// The `Digest` header value for `body`, as Mastodon sends and expects it.
pub(super) fn digest_header(body: &[u8]) -> String {
    format!("SHA-256={}", BASE64.encode(Sha256::digest(body)))
}

/// The `Content-Digest` header value for `body`.
pub(super) fn content_digest_header(body: &[u8]) -> String {
    format!("sha-256=:{}:", BASE64.encode(Sha256::digest(body)))
}

/// Checks a `Digest` header (`SHA-256=<base64>`, possibly among other
/// comma-separated algorithms) against the body. A SHA-256 value is
/// required: it is what every fediverse server sends, and weaker ones
/// (MD5, SHA-1) must not be enough.
pub(super) fn check_digest(value: &str, body: &[u8]) -> Result<(), SignatureError> {
    const HEADER: &str = "Digest";
    let mut found = false;
    for entry in value.split(',') {
        let (algorithm, encoded) = entry
            .trim()
            .split_once('=')
            .ok_or(Malformed::Digest { header: HEADER })?;
        if !algorithm.trim().eq_ignore_ascii_case("sha-256") {
            continue;
        }
        let expected = BASE64
            .decode(encoded.trim())
            .map_err(|_| Malformed::Digest { header: HEADER })?;
        if expected.as_slice() != Sha256::digest(body).as_slice() {
            return Err(PolicyViolation::DigestMismatch { header: HEADER }.into());
        }
        found = true;
    }
    if found {
        Ok(())
    } else {
        Err(PolicyViolation::DigestAlgorithm {
            header: HEADER,
            expected: "SHA-256",
        }
        .into())
    }
}

/// Checks a `Content-Digest` header (a structured dictionary such as
/// `sha-256=:<base64>:`) against the body. Every `sha-256` and `sha-512`
/// value must match and at least one must be present; other algorithms are
/// ignored, as RFC 9530 allows.
pub(super) fn check_content_digest(value: &str, body: &[u8]) -> Result<(), SignatureError> {
    const HEADER: &str = "Content-Digest";
    let dict = sf::parse_dictionary(value).map_err(|_| Malformed::Digest { header: HEADER })?;
    let mut found = false;
    for (algorithm, member) in &dict {
        let actual: Vec<u8> = match algorithm.as_str() {
            "sha-256" => Sha256::digest(body).to_vec(),
            "sha-512" => Sha512::digest(body).to_vec(),
            _ => continue,
        };
        let Member::Item(item) = member else {
            return Err(Malformed::Digest { header: HEADER }.into());
        };
        let BareItem::Bytes(expected) = &item.bare else {
            return Err(Malformed::Digest { header: HEADER }.into());
        };
        if *expected != actual {
            return Err(PolicyViolation::DigestMismatch { header: HEADER }.into());
        }
        found = true;
    }
    if found {
        Ok(())
    } else {
        Err(PolicyViolation::DigestAlgorithm {
            header: HEADER,
            expected: "sha-256 or sha-512",
        }
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body of the examples in draft-cavage (appendix C) and RFC 9530.
    const BODY: &[u8] = br#"{"hello": "world"}"#;

    #[test]
    fn digests_match_the_published_examples() {
        assert_eq!(
            digest_header(BODY),
            "SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE="
        );
        assert_eq!(
            content_digest_header(BODY),
            "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
        );
    }

    #[test]
    fn checks_digests() {
        let sha512 = "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:";
        let mismatch = |header| Err(PolicyViolation::DigestMismatch { header }.into());
        let cases: Vec<(&str, &str, Result<(), SignatureError>)> = vec![
            (
                "Digest",
                "SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=",
                Ok(()),
            ),
            (
                "Digest",
                "MD5=Sd/dVLAcvNLSq16eXua5uQ==, sha-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE",
                Ok(()),
            ),
            ("Digest", "SHA-256=AAAA", mismatch("Digest")),
            (
                "Digest",
                "MD5=Sd/dVLAcvNLSq16eXua5uQ==",
                Err(PolicyViolation::DigestAlgorithm {
                    header: "Digest",
                    expected: "SHA-256",
                }
                .into()),
            ),
            (
                "Digest",
                "nonsense",
                Err(Malformed::Digest { header: "Digest" }.into()),
            ),
            ("Content-Digest", sha512, Ok(())),
            (
                "Content-Digest",
                "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:, md5=:AAAA:",
                Ok(()),
            ),
            (
                "Content-Digest",
                "sha-256=:AAAA:",
                mismatch("Content-Digest"),
            ),
            (
                "Content-Digest",
                "sha-256=X48E",
                Err(Malformed::Digest {
                    header: "Content-Digest",
                }
                .into()),
            ),
        ];
        for (header, value, expected) in cases {
            let actual = match header {
                "Digest" => check_digest(value, BODY),
                _ => check_content_digest(value, BODY),
            };
            assert_eq!(actual, expected, "{header}: {value}");
        }
    }
}
