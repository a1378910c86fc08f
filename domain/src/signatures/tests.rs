//! Signature tests: requests signed here (playing a remote server) or by
//! hand, checked through one helper, plus the published test vectors of
//! draft-cavage (appendix C) and RFC 9421 (appendix B).

use std::sync::LazyLock;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use chrono::{DateTime, TimeDelta, TimeZone as _, Utc};
use url::Url;

use super::keys::der;
use super::*;

/// A key pair as a remote server (or Chorus) would hold it.
struct TestKey {
    private: PrivateKey,
    public: PublicKey,
    public_pem: String,
    pair: KeyPair,
}

fn generate_key() -> TestKey {
    let pair = KeyPair::generate(KeySize::Rsa2048).unwrap_or_else(|e| panic!("{e}"));
    let private: Pkcs8V1Der<'_> = pair.as_der().unwrap_or_else(|e| panic!("{e}"));
    let public: PublicKeyX509Der<'_> = pair.public_key().as_der().unwrap_or_else(|e| panic!("{e}"));
    let private_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", private.as_ref().to_vec()));
    let public_pem = pem::encode(&pem::Pem::new("PUBLIC KEY", public.as_ref().to_vec()));
    TestKey {
        private: PrivateKey::from_pem(&private_pem).unwrap_or_else(|e| panic!("{e}")),
        public: PublicKey::from_pem(&public_pem).unwrap_or_else(|e| panic!("{e}")),
        public_pem,
        pair,
    }
}

/// The remote actor's key.
static KEY: LazyLock<TestKey> = LazyLock::new(generate_key);
/// Another key: a rotated one, or an impostor's.
static OTHER_KEY: LazyLock<TestKey> = LazyLock::new(generate_key);

/// An Ed25519 key pair, for hs2019 with a non-RSA key.
static ED_PAIR: LazyLock<Ed25519KeyPair> =
    LazyLock::new(|| Ed25519KeyPair::generate().unwrap_or_else(|e| panic!("{e}")));
static ED_KEY: LazyLock<PublicKey> = LazyLock::new(|| {
    let der: PublicKeyX509Der<'_> = ED_PAIR
        .public_key()
        .as_der()
        .unwrap_or_else(|e| panic!("{e}"));
    PublicKey::from_spki_der(der.as_ref()).unwrap_or_else(|e| panic!("{e}"))
});

const KEY_ID: &str = "https://remote.example/users/bob#main-key";
const INBOX: &str = "https://chorus.example/users/alice/inbox";
const BODY: &[u8] = br#"{"type":"Follow","actor":"https://remote.example/users/bob"}"#;
const ACTIVITY_JSON: &str = "application/activity+json";

/// The server's clock in every test.
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 19, 5, 11)
        .single()
        .unwrap_or_else(|| panic!("bad test date"))
}

/// The accepted distance between a signed time and `now`.
fn window() -> TimeDelta {
    TimeDelta::hours(1)
}

/// An inbound request as the HTTP layer would describe it.
#[derive(Clone, Debug)]
struct Req {
    method: String,
    scheme: String,
    authority: String,
    path_and_query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    /// A request to `url` carrying the headers a signer returned.
    fn to(method: &str, url: &str, headers: Vec<(String, String)>, body: &[u8]) -> Self {
        let url = Url::parse(url).unwrap_or_else(|e| panic!("{e}"));
        let target = outbound::Target::new(method, &url).unwrap_or_else(|e| panic!("{e}"));
        Self {
            method: target.method,
            scheme: target.scheme,
            authority: target.authority,
            path_and_query: target.path_and_query,
            headers: headers
                .into_iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v))
                .collect(),
            body: body.to_vec(),
        }
    }

    fn parts(&self) -> RequestParts<'_> {
        RequestParts {
            method: &self.method,
            scheme: &self.scheme,
            authority: &self.authority,
            path_and_query: &self.path_and_query,
            headers: &self.headers,
            body: &self.body,
        }
    }

    fn set(mut self, name: &str, value: &str) -> Self {
        self.headers.retain(|(n, _)| n != name);
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| n != name);
        self
    }

    fn with_body(mut self, body: &[u8]) -> Self {
        self.body = body.to_vec();
        self
    }

    fn with_path(mut self, path_and_query: &str) -> Self {
        self.path_and_query = path_and_query.to_owned();
        self
    }
}

/// A POST to the inbox signed by `sign_cavage` at `at`.
fn cavage_post(at: DateTime<Utc>) -> Req {
    let url = Url::parse(INBOX).unwrap_or_else(|e| panic!("{e}"));
    let body = OutboundBody {
        content_type: ACTIVITY_JSON,
        bytes: BODY,
    };
    let headers = sign_cavage("POST", &url, Some(body), KEY_ID, &KEY.private, at)
        .unwrap_or_else(|e| panic!("{e}"));
    Req::to("POST", INBOX, headers, BODY)
}

/// A GET of `url` signed by `sign_cavage` now.
fn cavage_get(url: &str) -> Req {
    let parsed = Url::parse(url).unwrap_or_else(|e| panic!("{e}"));
    let headers = sign_cavage("GET", &parsed, None, KEY_ID, &KEY.private, now())
        .unwrap_or_else(|e| panic!("{e}"));
    Req::to("GET", url, headers, &[])
}

/// A request signed by `sign_rfc9421` at `at`.
fn rfc9421_request(method: &str, url: &str, body: Option<&[u8]>, at: DateTime<Utc>) -> Req {
    let parsed = Url::parse(url).unwrap_or_else(|e| panic!("{e}"));
    let headers = sign_rfc9421(method, &parsed, body, KEY_ID, &KEY.private, at)
        .unwrap_or_else(|e| panic!("{e}"));
    Req::to(method, url, headers, body.unwrap_or(&[]))
}

/// A draft-cavage signature made by hand over `req`, for the shapes our own
/// signer never produces.
struct Hand<'a> {
    algorithm: Option<&'a str>,
    covered: &'a [&'a str],
    created: Option<i64>,
    expires: Option<i64>,
    include_query: bool,
}

impl Default for Hand<'_> {
    fn default() -> Self {
        Self {
            algorithm: Some("rsa-sha256"),
            covered: &["(request-target)", "host", "date", "digest"],
            created: None,
            expires: None,
            include_query: true,
        }
    }
}

impl Hand<'_> {
    fn sign(&self, req: Req, sign: impl Fn(&[u8]) -> Vec<u8>) -> Req {
        let covered: Vec<String> = self.covered.iter().map(|c| (*c).to_owned()).collect();
        let text = cavage::signing_string(
            &req.parts(),
            &covered,
            self.created,
            self.expires,
            self.include_query,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut header = format!(r#"keyId="{KEY_ID}""#);
        if let Some(algorithm) = self.algorithm {
            header.push_str(&format!(r#",algorithm="{algorithm}""#));
        }
        header.push_str(&format!(r#",headers="{}""#, self.covered.join(" ")));
        if let Some(created) = self.created {
            header.push_str(&format!(",created={created}"));
        }
        if let Some(expires) = self.expires {
            header.push_str(&format!(",expires={expires}"));
        }
        let signature = BASE64.encode(sign(text.as_bytes()));
        header.push_str(&format!(r#",signature="{signature}""#));
        req.without("signature").set("signature", &header)
    }

    fn sign_rsa(&self, req: Req) -> Req {
        self.sign(req, |text| {
            KEY.private
                .sign(text)
                .unwrap_or_else(|| panic!("signing failed"))
        })
    }
}

/// An RFC 9421 signature made by hand: `params` follows the component list
/// in `Signature-Input` and must be canonical.
fn rfc9421_by_hand(req: Req, components: &[&str], params: &str) -> Req {
    let list: Vec<String> = components.iter().map(|c| format!("\"{c}\"")).collect();
    let signature_params = format!("({}){params}", list.join(" "));
    let covered: Vec<String> = components.iter().map(|c| (*c).to_owned()).collect();
    let base = rfc9421::signature_base(&req.parts(), &covered, &signature_params)
        .unwrap_or_else(|e| panic!("{e}"));
    let signature = KEY
        .private
        .sign(base.as_bytes())
        .unwrap_or_else(|| panic!("signing failed"));
    req.set("signature-input", &format!("sig1={signature_params}"))
        .set("signature", &format!("sig1=:{}:", BASE64.encode(signature)))
}

/// An unsigned POST to the inbox with the usual headers, dated `at`.
fn unsigned_post(at: DateTime<Utc>) -> Req {
    Req::to(
        "POST",
        INBOX,
        vec![
            ("host".to_owned(), "chorus.example".to_owned()),
            ("date".to_owned(), time::format_http_date(at)),
            ("digest".to_owned(), digest::digest_header(BODY)),
            ("content-type".to_owned(), ACTIVITY_JSON.to_owned()),
        ],
        BODY,
    )
}

/// One row of a table: a request, the key it is checked with, and the
/// expected outcome of parse, policy and verification together.
struct Case {
    name: &'static str,
    req: Req,
    key: &'static PublicKey,
    expected: Result<(), SignatureError>,
}

fn case(
    name: &'static str,
    req: Req,
    key: &'static PublicKey,
    expected: Result<(), SignatureError>,
) -> Case {
    Case {
        name,
        req,
        key,
        expected,
    }
}

/// Runs a request through the inbox's sequence (parse, policy, verify) and
/// returns a description of the difference from `expected`, if any.
fn check(case: &Case) -> Option<String> {
    let parts = case.req.parts();
    let actual = SignatureHeader::parse(&parts).and_then(|sig| {
        assert_eq!(sig.key_id(), KEY_ID, "{}", case.name);
        sig.check_policy(&parts, now(), window())?;
        sig.verify(&parts, case.key)
    });
    if let Err(e) = &actual {
        let message = e.to_string();
        assert!(
            !message.contains("BEGIN") && message.len() < 200,
            "{}: unfit message {message}",
            case.name
        );
    }
    (actual != case.expected).then(|| {
        format!(
            "{}: expected {:?}, got {:?}",
            case.name, case.expected, actual
        )
    })
}

/// Checks every case and reports all failures at once.
fn run(cases: Vec<Case>) {
    let failures: Vec<String> = cases.iter().filter_map(check).collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn bad_signature() -> Result<(), SignatureError> {
    Err(SignatureError::BadSignature {
        key_id: KEY_ID.to_owned(),
    })
}

fn not_covered(what: &'static str) -> Result<(), SignatureError> {
    Err(PolicyViolation::NotCovered(what).into())
}

#[test]
fn draft_cavage_requests() {
    let key = &KEY.public;
    let minute = TimeDelta::minutes(1).num_seconds();
    let t = now().timestamp();
    let hs2019 = |covered, created, expires| Hand {
        algorithm: Some("hs2019"),
        covered,
        created,
        expires,
        ..Hand::default()
    };
    run(vec![
        case("valid POST", cavage_post(now()), key, Ok(())),
        case(
            "valid GET",
            cavage_get("https://chorus.example/users/alice"),
            key,
            Ok(()),
        ),
        case(
            "in an Authorization header",
            {
                let req = cavage_post(now());
                let value = req.parts().header("signature").unwrap_or_default();
                req.without("signature")
                    .set("authorization", &format!("Signature {value}"))
            },
            key,
            Ok(()),
        ),
        case(
            "Host header left out by HTTP/2: the authority stands in",
            cavage_post(now()).without("host"),
            key,
            Ok(()),
        ),
        case(
            "hs2019 with (created) and (expires)",
            hs2019(
                &[
                    "(request-target)",
                    "host",
                    "(created)",
                    "(expires)",
                    "digest",
                ],
                Some(t - 10),
                Some(t + 5 * minute),
            )
            .sign_rsa(unsigned_post(now()).without("date")),
            key,
            Ok(()),
        ),
        case(
            "no algorithm parameter means hs2019",
            Hand {
                algorithm: None,
                ..Hand::default()
            }
            .sign_rsa(unsigned_post(now())),
            key,
            Ok(()),
        ),
        case(
            "hs2019 with an Ed25519 key",
            hs2019(&["(request-target)", "host", "date", "digest"], None, None)
                .sign(unsigned_post(now()), |text| {
                    ED_PAIR.sign(text).as_ref().to_vec()
                }),
            &ED_KEY,
            Ok(()),
        ),
        case(
            "query string signed",
            cavage_get("https://chorus.example/users/alice/outbox?page=true"),
            key,
            Ok(()),
        ),
        case(
            "query string left out of the signature",
            Hand {
                covered: &["(request-target)", "host", "date"],
                include_query: false,
                ..Hand::default()
            }
            .sign_rsa(
                Req::to(
                    "GET",
                    "https://chorus.example/users/alice/outbox?page=true",
                    Vec::new(),
                    &[],
                )
                .set("host", "chorus.example")
                .set("date", &time::format_http_date(now())),
            ),
            key,
            Ok(()),
        ),
        case(
            "another query string than the signed one",
            cavage_get("https://chorus.example/users/alice/outbox?page=1")
                .with_path("/users/alice/outbox?page=2"),
            key,
            bad_signature(),
        ),
        case(
            "another path than the signed one",
            cavage_post(now()).with_path("/users/carol/inbox"),
            key,
            bad_signature(),
        ),
        case(
            "tampered body",
            cavage_post(now()).with_body(br#"{"type":"Delete"}"#),
            key,
            Err(PolicyViolation::DigestMismatch { header: "Digest" }.into()),
        ),
        case(
            "tampered body with a Digest to match",
            cavage_post(now())
                .with_body(br#"{"type":"Delete"}"#)
                .set("digest", &digest::digest_header(br#"{"type":"Delete"}"#)),
            key,
            bad_signature(),
        ),
        case(
            "Digest without SHA-256",
            Hand::default()
                .sign_rsa(unsigned_post(now()).set("digest", "MD5=Sd/dVLAcvNLSq16eXua5uQ==")),
            key,
            Err(PolicyViolation::DigestAlgorithm {
                header: "Digest",
                expected: "SHA-256",
            }
            .into()),
        ),
        case(
            "digest not covered",
            Hand {
                covered: &["(request-target)", "host", "date"],
                ..Hand::default()
            }
            .sign_rsa(unsigned_post(now())),
            key,
            not_covered("`digest`"),
        ),
        case(
            "digest covered but absent",
            Hand::default()
                .sign_rsa(unsigned_post(now()))
                .without("digest"),
            key,
            Err(Malformed::MissingCoveredHeader("digest".to_owned()).into()),
        ),
        case(
            "request target not covered",
            Hand {
                covered: &["host", "date", "digest"],
                ..Hand::default()
            }
            .sign_rsa(unsigned_post(now())),
            key,
            not_covered("`(request-target)`"),
        ),
        case(
            "host not covered",
            Hand {
                covered: &["(request-target)", "date", "digest"],
                ..Hand::default()
            }
            .sign_rsa(unsigned_post(now())),
            key,
            not_covered("`host`"),
        ),
        case(
            "date not covered",
            Hand {
                covered: &["(request-target)", "host", "digest"],
                ..Hand::default()
            }
            .sign_rsa(unsigned_post(now())),
            key,
            not_covered("`date` or `(created)`"),
        ),
        case(
            "no date at all",
            Hand {
                covered: &["(request-target)", "host", "digest"],
                ..Hand::default()
            }
            .sign_rsa(unsigned_post(now()).without("date")),
            key,
            Err(PolicyViolation::NoDate.into()),
        ),
        case(
            "stale Date (2 hours)",
            cavage_post(now() - TimeDelta::hours(2)),
            key,
            Err(PolicyViolation::Skew {
                what: "Date header",
                offset_seconds: -7_200,
                limit_seconds: 3_600,
            }
            .into()),
        ),
        case(
            "future Date (2 hours)",
            cavage_post(now() + TimeDelta::hours(2)),
            key,
            Err(PolicyViolation::Skew {
                what: "Date header",
                offset_seconds: 7_200,
                limit_seconds: 3_600,
            }
            .into()),
        ),
        case(
            "unparsable Date",
            cavage_post(now()).set("date", "wrong date"),
            key,
            Err(Malformed::Date.into()),
        ),
        case(
            "stale (created)",
            hs2019(
                &["(request-target)", "host", "(created)", "digest"],
                Some(t - 7_200),
                None,
            )
            .sign_rsa(unsigned_post(now())),
            key,
            Err(PolicyViolation::Skew {
                what: "signature's creation time",
                offset_seconds: -7_200,
                limit_seconds: 3_600,
            }
            .into()),
        ),
        case(
            "expires passed",
            hs2019(
                &[
                    "(request-target)",
                    "host",
                    "(created)",
                    "(expires)",
                    "digest",
                ],
                Some(t - 2 * minute),
                Some(t - minute),
            )
            .sign_rsa(unsigned_post(now())),
            key,
            Err(PolicyViolation::Expired { seconds_ago: 60 }.into()),
        ),
        case(
            "wrong key",
            cavage_post(now()),
            &OTHER_KEY.public,
            bad_signature(),
        ),
        case(
            "rsa-sha256 with an Ed25519 key",
            cavage_post(now()),
            &ED_KEY,
            Err(SignatureError::WrongKeyType {
                algorithm: "rsa-sha256".to_owned(),
                key: KeyKind::Ed25519,
            }),
        ),
        case(
            "unsupported algorithm",
            Hand {
                algorithm: Some("ed25519"),
                ..Hand::default()
            }
            .sign_rsa(unsigned_post(now())),
            key,
            Err(SignatureError::UnsupportedAlgorithm("ed25519".to_owned())),
        ),
    ]);
}

#[test]
fn rfc9421_requests() {
    let key = &KEY.public;
    let t = now().timestamp();
    let params = |extra: &str| format!(r#";created={t};keyid="{KEY_ID}"{extra}"#);
    run(vec![
        case(
            "valid POST",
            rfc9421_request("POST", INBOX, Some(BODY), now()),
            key,
            Ok(()),
        ),
        case(
            "valid GET",
            rfc9421_request("GET", "https://chorus.example/users/alice?x=1", None, now()),
            key,
            Ok(()),
        ),
        case(
            "@path, @query and @authority instead of @target-uri, no alg",
            rfc9421_by_hand(
                unsigned_post(now()).set("content-digest", &digest::content_digest_header(BODY)),
                &[
                    "@method",
                    "@authority",
                    "@path",
                    "@query",
                    "content-digest",
                    "date",
                ],
                &params(""),
            ),
            key,
            Ok(()),
        ),
        case(
            "tampered body",
            rfc9421_request("POST", INBOX, Some(BODY), now()).with_body(br#"{"type":"Delete"}"#),
            key,
            Err(PolicyViolation::DigestMismatch {
                header: "Content-Digest",
            }
            .into()),
        ),
        case(
            "signed for another server",
            {
                let mut req = rfc9421_request("POST", INBOX, Some(BODY), now());
                req.authority = "other.example".to_owned();
                req
            },
            key,
            bad_signature(),
        ),
        case(
            "content-digest not covered",
            rfc9421_by_hand(
                unsigned_post(now()),
                &["@method", "@target-uri"],
                &params(r#";alg="rsa-v1_5-sha256""#),
            ),
            key,
            not_covered("`content-digest`"),
        ),
        case(
            "@method not covered",
            rfc9421_by_hand(
                unsigned_post(now()),
                &["@target-uri", "digest"],
                &params(""),
            ),
            key,
            not_covered("`@method`"),
        ),
        case(
            "authority not covered",
            rfc9421_by_hand(
                unsigned_post(now()),
                &["@method", "@path", "digest"],
                &params(""),
            ),
            key,
            not_covered("`@authority` or `@target-uri`"),
        ),
        case(
            "no created and no date",
            rfc9421_by_hand(
                unsigned_post(now()).without("date"),
                &["@method", "@target-uri", "digest"],
                &format!(r#";keyid="{KEY_ID}""#),
            ),
            key,
            Err(PolicyViolation::NoDate.into()),
        ),
        case(
            "stale created (2 hours)",
            rfc9421_request("POST", INBOX, Some(BODY), now() - TimeDelta::hours(2)),
            key,
            Err(PolicyViolation::Skew {
                what: "signature's creation time",
                offset_seconds: -7_200,
                limit_seconds: 3_600,
            }
            .into()),
        ),
        case(
            "expires passed",
            rfc9421_by_hand(
                unsigned_post(now()),
                &["@method", "@target-uri", "digest"],
                &params(&format!(";expires={}", t - 1)),
            ),
            key,
            Err(PolicyViolation::Expired { seconds_ago: 1 }.into()),
        ),
        case(
            "wrong key",
            rfc9421_request("POST", INBOX, Some(BODY), now()),
            &OTHER_KEY.public,
            bad_signature(),
        ),
        case(
            "unsupported algorithm",
            rfc9421_by_hand(
                unsigned_post(now()),
                &["@method", "@target-uri", "digest"],
                &params(r#";alg="rsa-pss-sha512""#),
            ),
            key,
            Err(SignatureError::UnsupportedAlgorithm(
                "rsa-pss-sha512".to_owned(),
            )),
        ),
        case(
            "Signature-Input without Signature",
            rfc9421_request("POST", INBOX, Some(BODY), now()).without("signature"),
            key,
            Err(Malformed::MissingHeader {
                present: "Signature-Input",
                missing: "Signature",
            }
            .into()),
        ),
    ]);
}

#[test]
fn missing_and_malformed_signatures() {
    let cases: Vec<(Req, SignatureError)> = vec![
        (unsigned_post(now()), SignatureError::Missing),
        (
            unsigned_post(now()).set("authorization", "Bearer abc"),
            SignatureError::Missing,
        ),
        (
            unsigned_post(now()).set("signature", "garbage"),
            Malformed::Syntax {
                header: "Signature",
                reason: "expected `name=value`",
            }
            .into(),
        ),
        (
            unsigned_post(now()).set("signature", r#"keyId="k",headers="date""#),
            Malformed::MissingParameter {
                header: "Signature",
                param: "signature",
            }
            .into(),
        ),
        (
            unsigned_post(now())
                .set("signature-input", "sig1=(\"@method\"")
                .set("signature", "sig1=:AAEC:"),
            Malformed::Syntax {
                header: "Signature-Input",
                reason: "unterminated inner list",
            }
            .into(),
        ),
    ];
    for (req, expected) in cases {
        let actual = SignatureHeader::parse(&req.parts());
        assert_eq!(actual, Err(expected.clone()), "{:?}", req.headers);
        let kind = expected.kind();
        assert!(
            matches!(kind, ErrorKind::Missing | ErrorKind::Malformed),
            "{kind:?}"
        );
    }
}

#[test]
fn error_kinds_and_messages() {
    let skew: SignatureError = PolicyViolation::Skew {
        what: "Date header",
        offset_seconds: -7_200,
        limit_seconds: 3_600,
    }
    .into();
    assert_eq!(
        skew.to_string(),
        "the Date header is 2 hours behind the server's clock (limit 1 hour)"
    );
    assert_eq!(skew.kind(), ErrorKind::Policy);
    let cases: Vec<(SignatureError, &str, ErrorKind)> = vec![
        (
            PolicyViolation::NotCovered("`digest`").into(),
            "the signature does not cover `digest`",
            ErrorKind::Policy,
        ),
        (
            PolicyViolation::DigestMismatch { header: "Digest" }.into(),
            "the Digest header does not match the body",
            ErrorKind::Policy,
        ),
        (
            PolicyViolation::Expired { seconds_ago: 90 }.into(),
            "the signature expired 1 minute 30 seconds ago",
            ErrorKind::Policy,
        ),
        (
            SignatureError::UnsupportedAlgorithm("ed25519".to_owned()),
            "unsupported signature algorithm `ed25519`",
            ErrorKind::Unsupported,
        ),
        (
            Malformed::SignatureEncoding.into(),
            "malformed signature: the signature value is not valid base64",
            ErrorKind::Malformed,
        ),
        (
            SignatureError::BadSignature {
                key_id: KEY_ID.to_owned(),
            },
            "the signature does not verify with the key `https://remote.example/users/bob#main-key`",
            ErrorKind::BadSignature,
        ),
        (
            SignatureError::WrongKeyType {
                algorithm: "rsa-sha256".to_owned(),
                key: KeyKind::Ed25519,
            },
            "the signature algorithm `rsa-sha256` cannot be checked with an Ed25519 key",
            ErrorKind::BadSignature,
        ),
        (
            SignatureError::Missing,
            "the request is not signed: it has no Signature or Signature-Input header",
            ErrorKind::Missing,
        ),
    ];
    for (error, message, kind) in cases {
        assert_eq!(error.to_string(), message);
        assert_eq!(error.kind(), kind, "{message}");
    }
    let long = "x".repeat(500);
    let error = SignatureError::UnsupportedAlgorithm(excerpt(&long));
    assert!(error.to_string().len() < 120);
}

#[test]
fn key_ids_name_their_actor() {
    for (key_id, actor) in [
        (
            "https://a.example/users/x#main-key",
            "https://a.example/users/x",
        ),
        (
            "https://b.example/users/x/main-key",
            "https://b.example/users/x",
        ),
        ("https://c.example/actor", "https://c.example/actor"),
        (
            "https://d.example/users/x/main-key#k",
            "https://d.example/users/x/main-key",
        ),
    ] {
        assert_eq!(actor_id_from_key_id(key_id), actor, "{key_id}");
    }
}

#[test]
fn signers_produce_the_expected_headers() {
    let url =
        Url::parse("http://127.0.0.1:8080/users/alice/inbox?x=1").unwrap_or_else(|e| panic!("{e}"));
    let body = OutboundBody {
        content_type: ACTIVITY_JSON,
        bytes: BODY,
    };
    let headers = sign_cavage("POST", &url, Some(body), KEY_ID, &KEY.private, now())
        .unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["Host", "Date", "Digest", "Content-Type", "Signature"]
    );
    assert_eq!(headers[0].1, "127.0.0.1:8080");
    assert_eq!(headers[1].1, "Mon, 23 Nov 2026 19:05:11 GMT");
    assert_eq!(headers[2].1, digest::digest_header(BODY));
    assert!(headers[4].1.starts_with(&format!(
        r#"keyId="{KEY_ID}",algorithm="rsa-sha256",headers="(request-target) host date digest content-type",signature=""#
    )));
    let req = Req::to("POST", url.as_str(), headers, BODY);
    run(vec![case(
        "cavage over http with a port",
        req,
        &KEY.public,
        Ok(()),
    )]);

    let get = sign_cavage("GET", &url, None, KEY_ID, &KEY.private, now())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(get[2].1.contains(r#"headers="(request-target) host date""#));

    let headers = sign_rfc9421("POST", &url, Some(BODY), KEY_ID, &KEY.private, now())
        .unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["Content-Digest", "Signature-Input", "Signature"]);
    assert_eq!(headers[0].1, digest::content_digest_header(BODY));
    assert_eq!(
        headers[1].1,
        format!(
            r#"sig1=("@method" "@target-uri" "content-digest");created={};keyid="{KEY_ID}";alg="rsa-v1_5-sha256""#,
            now().timestamp()
        )
    );
    let req = Req::to("POST", url.as_str(), headers, BODY).set("date", "ignored: not covered");
    run(vec![case(
        "RFC 9421 over http with a port",
        req,
        &KEY.public,
        Ok(()),
    )]);

    let bad_id = sign_cavage("GET", &url, None, "a\"b", &KEY.private, now());
    assert_eq!(bad_id, Err(SigningError::KeyId));
    let no_host = Url::parse("data:text/plain,x").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        sign_rfc9421("GET", &no_host, None, KEY_ID, &KEY.private, now()),
        Err(SigningError::UrlWithoutHost)
    );
}

#[test]
fn keys_parse_from_the_usual_pem_forms() {
    // SPKI with Windows line ends and surrounding whitespace.
    let crlf = format!(
        "\n  {}\n\n",
        KEY.public_pem.replace("\r\n", "\n").replace('\n', "\r\n")
    );
    let spki = PublicKey::from_pem(&crlf).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spki.kind(), KeyKind::Rsa { bits: 2048 });
    assert_eq!(
        spki.to_pem().unwrap_or_else(|e| panic!("{e}")),
        KEY.public_pem
    );

    // PKCS#1 public key.
    let pkcs1 = pem::encode(&pem::Pem::new(
        "RSA PUBLIC KEY",
        KEY.pair.public_key().as_ref().to_vec(),
    ));
    let pkcs1 = PublicKey::from_pem(&pkcs1).unwrap_or_else(|e| panic!("{e}"));
    let req = cavage_post(now());
    let parts = req.parts();
    let sig = SignatureHeader::parse(&parts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sig.verify(&parts, &pkcs1), Ok(()));
    assert_eq!(sig.scheme(), "draft-cavage-rsa-sha256");
    assert_eq!(
        sig.covered(),
        ["(request-target)", "host", "date", "digest", "content-type"]
    );

    // PKCS#1 private key: the RSAPrivateKey inside the PKCS#8 envelope.
    let pkcs8: Pkcs8V1Der<'_> = KEY.pair.as_der().unwrap_or_else(|e| panic!("{e}"));
    let (info, _) = der::expect(pkcs8.as_ref(), der::SEQUENCE).unwrap_or_else(|e| panic!("{e}"));
    let (_version, rest) = der::expect(info, der::INTEGER).unwrap_or_else(|e| panic!("{e}"));
    let (_algorithm, rest) = der::expect(rest, der::SEQUENCE).unwrap_or_else(|e| panic!("{e}"));
    let (rsa_private, _) = der::expect(rest, der::OCTET_STRING).unwrap_or_else(|e| panic!("{e}"));
    let pkcs1_private = pem::encode(&pem::Pem::new("RSA PRIVATE KEY", rsa_private.to_vec()));
    let private = PrivateKey::from_pem(&pkcs1_private).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        private
            .public_key()
            .unwrap_or_else(|e| panic!("{e}"))
            .to_pem()
            .unwrap_or_else(|e| panic!("{e}")),
        KEY.public_pem
    );

    // Debug output shows no key material.
    let debug = format!("{:?} {:?}", KEY.private, KEY.public);
    assert_eq!(
        debug,
        "PrivateKey { bits: 2048, .. } PublicKey { kind: Rsa { bits: 2048 }, .. }"
    );
}

/// The RFC 9421 test keys (appendix B.1.3 and B.1.4).
const RFC9421_P256_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqIVYZVLCrPZHGHjP17CTW0/+D9Lf
w0EkjqF7xB4FivAxzic30tMM4GF+hR6Dxh71Z50VGGdldkkDXZCnTNnoXQ==
-----END PUBLIC KEY-----";
const RFC9421_ED25519_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=
-----END PUBLIC KEY-----";

/// The draft-cavage test key (appendix C): 1024 bits, too small to accept.
const CAVAGE_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDCFENGw33yGihy92pDjZQhl0C3
6rPJj+CvfSC8+q28hxA161QFNUd13wuCTUcq0Qd2qsBe/2hFyc2DCJJg0h1L78+6
Z4UMR7EOcpfdUE9Hf3m/hs+FUR45uBJeDK1HSFHD8bHKD6kv8FPGfJTotc+2xjJw
oYi+1hqp1fIekaxsyQIDAQAB
-----END PUBLIC KEY-----";

#[test]
fn keys_are_refused_with_a_reason() {
    let cases: Vec<(&str, KeyError)> = vec![
        (
            RFC9421_P256_PUBLIC,
            KeyError::UnsupportedType("an elliptic-curve (EC) key".to_owned()),
        ),
        (CAVAGE_PUBLIC, KeyError::RsaSize { bits: 1024 }),
        ("not a key", KeyError::Pem),
        (
            "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----",
            KeyError::UnexpectedPemLabel {
                expected: "`PUBLIC KEY` or `RSA PUBLIC KEY`",
                found: "CERTIFICATE".to_owned(),
            },
        ),
        (
            "-----BEGIN PUBLIC KEY-----\nAAEC\n-----END PUBLIC KEY-----",
            KeyError::Der,
        ),
    ];
    for (pem_text, expected) in cases {
        assert_eq!(PublicKey::from_pem(pem_text).err(), Some(expected));
    }
    assert_eq!(
        PrivateKey::from_pem(&KEY.public_pem).err(),
        Some(KeyError::UnexpectedPemLabel {
            expected: "`PRIVATE KEY` or `RSA PRIVATE KEY`",
            found: "PUBLIC KEY".to_owned(),
        })
    );
}

/// RFC 9421 appendix B.2.6: a request signed with Ed25519 by the RFC's
/// authors. It verifies; being a POST without a covered digest, it then
/// fails this server's policy.
#[test]
fn rfc9421_published_ed25519_example() {
    let req = Req {
        method: "POST".to_owned(),
        scheme: "https".to_owned(),
        authority: "example.com".to_owned(),
        path_and_query: "/foo?param=Value&Pet=dog".to_owned(),
        headers: [
            ("host", "example.com"),
            ("date", "Tue, 20 Apr 2021 02:07:55 GMT"),
            ("content-type", "application/json"),
            (
                "content-digest",
                "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:",
            ),
            ("content-length", "18"),
            (
                "signature-input",
                r#"sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#,
            ),
            (
                "signature",
                "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:",
            ),
        ]
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect(),
        body: br#"{"hello": "world"}"#.to_vec(),
    };
    let parts = req.parts();
    let sig = SignatureHeader::parse(&parts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sig.key_id(), "test-key-ed25519");
    assert_eq!(sig.scheme(), "rfc9421");
    let Parsed::Rfc9421(inner) = &sig.inner else {
        panic!("not read as RFC 9421");
    };
    assert_eq!(
        rfc9421::signature_base(&parts, &inner.components, &inner.signature_params)
            .unwrap_or_else(|e| panic!("{e}")),
        [
            r#""date": Tue, 20 Apr 2021 02:07:55 GMT"#,
            r#""@method": POST"#,
            r#""@path": /foo"#,
            r#""@authority": example.com"#,
            r#""content-type": application/json"#,
            r#""content-length": 18"#,
            r#""@signature-params": ("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#,
        ]
        .join("\n")
    );
    let key = PublicKey::from_pem(RFC9421_ED25519_PUBLIC).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(key.kind(), KeyKind::Ed25519);
    assert_eq!(sig.verify(&parts, &key), Ok(()));
    let tampered = req.clone().set("content-length", "19");
    assert_eq!(
        sig.verify(&tampered.parts(), &key),
        Err(SignatureError::BadSignature {
            key_id: "test-key-ed25519".to_owned()
        })
    );
    let signed_at = Utc
        .timestamp_opt(1_618_884_473, 0)
        .single()
        .unwrap_or_else(|| panic!("bad timestamp"));
    assert_eq!(
        sig.check_policy(&parts, signed_at, window()),
        not_covered("`content-digest`")
    );
}

/// draft-cavage appendix C.2 ("Basic Test"): the published signature over
/// `(request-target) host date` of `POST /foo?param=value&pet=dog`. The
/// test key has 1024 bits, which [`PublicKey`] refuses, so the signature is
/// checked with aws-lc-rs's legacy algorithm over our signing string.
#[test]
fn draft_cavage_published_example() {
    let req = Req {
        method: "POST".to_owned(),
        scheme: "https".to_owned(),
        authority: "example.com".to_owned(),
        path_and_query: "/foo?param=value&pet=dog".to_owned(),
        headers: vec![
            ("host".to_owned(), "example.com".to_owned()),
            ("date".to_owned(), "Sun, 05 Jan 2014 21:31:40 GMT".to_owned()),
            ("content-type".to_owned(), "application/json".to_owned()),
            (
                "digest".to_owned(),
                "SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=".to_owned(),
            ),
            ("content-length".to_owned(), "18".to_owned()),
            (
                "signature".to_owned(),
                r#"keyId="Test",algorithm="rsa-sha256",headers="(request-target) host date",signature="qdx+H7PHHDZgy4y/Ahn9Tny9V3GP6YgBPyUXMmoxWtLbHpUnXS2mg2+SbrQDMCJypxBLSPQR2aAjn7ndmw2iicw3HMbe8VfEdKFYRqzic+efkb3nndiv/x1xSHDJWeSWkx3ButlYSuBskLu6kd9Fswtemr3lgdDEmn04swr2Os0=""#.to_owned(),
            ),
        ],
        body: br#"{"hello": "world"}"#.to_vec(),
    };
    let parts = req.parts();
    let sig = SignatureHeader::parse(&parts).unwrap_or_else(|e| panic!("{e}"));
    let Parsed::Cavage(inner) = &sig.inner else {
        panic!("not read as draft-cavage");
    };
    let text = cavage::signing_string(&parts, &inner.headers, None, None, true)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        text,
        "(request-target): post /foo?param=value&pet=dog\nhost: example.com\ndate: Sun, 05 Jan 2014 21:31:40 GMT"
    );
    let spki = pem::parse(CAVAGE_PUBLIC).unwrap_or_else(|e| panic!("{e}"));
    let legacy = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
        spki.contents(),
    );
    assert!(legacy.verify(text.as_bytes(), &inner.signature).is_ok());
    // The example signs no digest, which this server requires on a POST.
    assert_eq!(
        sig.check_policy(
            &parts,
            Utc.with_ymd_and_hms(2014, 1, 5, 21, 31, 40)
                .single()
                .unwrap_or_else(|| panic!("bad date")),
            window()
        ),
        not_covered("`digest`")
    );
}
