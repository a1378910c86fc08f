//! What the inbox refuses, end to end: requests from a real remote server on
//! 127.0.0.1 to a real Chorus, each refused with the status and reason a
//! remote admin can act on, counted at `/metrics` by reason, and leaving no
//! trace in the log. Each table of cases goes through one `check`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeyPair;
use aws_lc_rs::signature::RSA_PKCS1_SHA256;
use chorus_api::config::FederationSettings;
use chorus_domain::{EventStore, Position};
use chorus_tests::app::{Account, TestApp, spawn_app, spawn_app_with};
use chorus_tests::remote::{
    KeyStyle, RemoteActor, RemoteServer, Scheme, TestKey, post_with, signed_post_headers,
};
use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Every refusal label `/metrics` reports.
const REASONS: [&str; 8] = [
    "malformed",
    "signature",
    "unknown_key",
    "actor_mismatch",
    "blocked_instance",
    "too_large",
    "rate_limited",
    "internal",
];

// ---------------------------------------------------------------------------
// Helpers shared by the tables.

/// Request headers, name and value, as the signers return them.
type Headers = Vec<(String, String)>;

/// What the inbox answered.
#[derive(Debug)]
struct Reply {
    status: u16,
    retry_after: Option<String>,
    body: String,
}

impl Reply {
    /// The `error` of a JSON error body (empty when there is none).
    fn error(&self) -> String {
        serde_json::from_str::<Value>(&self.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// Posts `body` to `url` with exactly `headers` (reqwest sets `Host` and
/// `Content-Length`), keeping the `Retry-After` header of the answer.
async fn send(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    headers: &[(String, String)],
) -> Reply {
    let mut request = client.post(url).body(body);
    for (name, value) in headers {
        if !name.eq_ignore_ascii_case("host") {
            request = request.header(name, value);
        }
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Reply {
        status,
        retry_after,
        body: response.text().await.unwrap_or_default(),
    }
}

/// Posts `body` to `url` over a bare HTTP/1.1 connection with
/// `Transfer-Encoding: chunked`, so the server learns the size only by
/// reading (reqwest here has no streaming bodies).
async fn send_chunked(url: &str, body: &[u8], headers: &[(String, String)]) -> Reply {
    let url = url::Url::parse(url).unwrap_or_else(|e| panic!("{e}"));
    let authority = format!(
        "{}:{}",
        url.host_str().unwrap_or_default(),
        url.port().unwrap_or(80)
    );
    let mut stream = tokio::net::TcpStream::connect(&authority)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {authority}: {e}"));
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {authority}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n",
        url.path()
    );
    for (name, value) in headers {
        if !name.eq_ignore_ascii_case("host") {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("\r\n");
    let mut wire = head.into_bytes();
    for chunk in body.chunks(1000) {
        wire.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        wire.extend_from_slice(chunk);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before reading everything: a failed
    // write or a reset after the answer is not a failure of the test.
    let _ = stream.write_all(&wire).await;
    let mut response = Vec::new();
    let mut buffer = [0_u8; 4096];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&buffer[..n]),
        }
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_ascii_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP response: {text:?}"));
    Reply {
        status,
        retry_after: None,
        body: body.to_owned(),
    }
}

/// A Follow of `object` by `actor`, with an id of its own on `remote`.
fn follow(remote: &RemoteServer, actor: &str, object: &str, slug: &str) -> Value {
    json!({
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": format!("{}/activities/{slug}", remote.base_url),
        "type": "Follow",
        "actor": actor,
        "object": object,
    })
}

fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|e| panic!("{e}"))
}

/// The activity ids of every `ActivityReceived` in the log.
async fn logged(app: &TestApp) -> BTreeSet<String> {
    app.store
        .read_all(Position::START, 100_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|e| e.event_type == "ActivityReceived")
        .map(|e| {
            e.payload.decode::<Value>().unwrap_or_default()["activity_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// The activity ids in the `received_activities` read model.
async fn listed(app: &TestApp) -> BTreeSet<String> {
    sqlx::query_scalar::<_, String>("SELECT activity_id FROM received_activities")
        .fetch_all(&app.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .collect()
}

/// Asserts that the log and its read model hold exactly `accepted`.
async fn assert_stored_exactly(app: &TestApp, accepted: &BTreeSet<String>) {
    app.settle().await;
    assert_eq!(&logged(app).await, accepted, "ActivityReceived events");
    assert_eq!(&listed(app).await, accepted, "received_activities rows");
}

/// `GET /metrics`, parsed into one value per counter line.
async fn metrics(app: &TestApp) -> Vec<(String, u64)> {
    let response = app
        .client
        .get(format!("{}/metrics", app.base_url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn counter(metrics: &[(String, u64)], name: &str) -> u64 {
    metrics
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no {name} in {metrics:?}"))
}

/// Asserts every refusal counter: `expected` lists the non-zero ones.
fn assert_refusals(metrics: &[(String, u64)], expected: &[(&str, u64)]) {
    for reason in REASONS {
        let want = expected
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n);
        assert_eq!(
            counter(
                metrics,
                &format!("chorus_inbox_refused_total{{reason=\"{reason}\"}}")
            ),
            want,
            "refusals for {reason}"
        );
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map_or_else(|| panic!("no {name} in {headers:?}"), |(_, v)| v.as_str())
}

fn without(mut headers: Vec<(String, String)>, name: &str) -> Vec<(String, String)> {
    let before = headers.len();
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    assert_ne!(headers.len(), before, "there was no {name} to remove");
    headers
}

/// Standard base64 with padding (the test crate has no base64 dependency).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..4_usize {
            if i <= chunk.len() {
                let sextet = (n >> (18 - 6 * i)) & 63;
                out.push(char::from(ALPHABET[usize::try_from(sextet).unwrap_or(0)]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A draft-cavage `rsa-sha256` signature made by hand, covering exactly
/// `covered`: a genuine signature whose only fault can be what it covers.
/// The other headers (Host, Date, Digest, Content-Type) are those the
/// library's signer sets.
fn sign_covering(
    actor: &RemoteActor,
    url: &str,
    body: &[u8],
    covered: &[&str],
    now: chrono::DateTime<Utc>,
) -> Vec<(String, String)> {
    let headers = without(
        signed_post_headers(actor, url, body, Scheme::Cavage, now),
        "signature",
    );
    let path = url::Url::parse(url)
        .unwrap_or_else(|e| panic!("{e}"))
        .path()
        .to_owned();
    let signing_string = covered
        .iter()
        .map(|name| match *name {
            "(request-target)" => format!("(request-target): post {path}"),
            name => format!("{name}: {}", header(&headers, name)),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let pem = pem::parse(&actor.key.private_pem).unwrap_or_else(|e| panic!("{e}"));
    let pair = KeyPair::from_pkcs8(pem.contents()).unwrap_or_else(|e| panic!("{e}"));
    let mut signature = vec![0; pair.public_modulus_len()];
    pair.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        signing_string.as_bytes(),
        &mut signature,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut headers = headers;
    headers.push((
        "Signature".to_owned(),
        format!(
            r#"keyId="{}",algorithm="rsa-sha256",headers="{}",signature="{}""#,
            actor.key_id,
            covered.join(" "),
            base64(&signature)
        ),
    ));
    headers
}

fn bob(remote: &RemoteServer) -> RemoteActor {
    remote.actor("bob", 0, KeyStyle::Fragment)
}

fn settings() -> FederationSettings {
    FederationSettings {
        allow_private_addresses: true,
        ..FederationSettings::default()
    }
}

// ---------------------------------------------------------------------------
// 1. Signatures.

/// How a row's request is made.
#[derive(Clone, Copy, Debug)]
enum Build {
    /// Signed by the library's signer with this scheme, sent as signed.
    Signed(Scheme),
    /// Signed as if our clock read `hours` later (negative: earlier).
    Dated(Scheme, i64),
    /// Signed, then the body changed: the signed digest no longer matches.
    TamperedBody(Scheme),
    /// Signed, then the body changed and its digest header recomputed to
    /// match: only the signature can tell.
    TamperedDigest(Scheme),
    /// Signed (draft-cavage), then the covered `Digest` header dropped.
    DigestRemoved,
    /// A genuine draft-cavage signature covering exactly these headers.
    Covering(&'static [&'static str]),
    /// Signed (draft-cavage), then the `Signature` header dropped.
    Unsigned,
}

/// A case of the signature table.
struct SignatureCase {
    name: &'static str,
    /// Whose key id and key sign (may change the remote server, as a
    /// rotation does).
    signer: fn(&RemoteServer) -> RemoteActor,
    /// The activity's actor by name on the remote server, when not the signer.
    actor: Option<&'static str>,
    build: Build,
    status: u16,
    /// What the error must say; `{signer}`, `{actor}` and `{key_id}` stand
    /// for the signer's id, the activity's actor and the signer's key id.
    error: &'static [&'static str],
    /// The refusal counter this case adds to.
    reason: Option<&'static str>,
    /// How many more times this remote actor's documents were fetched.
    fetched: (&'static str, usize),
}

/// The body of `build`'s request and its headers.
fn build_request(
    build: Build,
    signer: &RemoteActor,
    url: &str,
    body: Vec<u8>,
) -> (Vec<u8>, Vec<(String, String)>) {
    let now = Utc::now();
    let tamper = |body: &[u8]| {
        let mut activity: Value = serde_json::from_slice(body).unwrap_or_default();
        activity["content"] = json!("words put in the signer's mouth");
        bytes(&activity)
    };
    match build {
        Build::Signed(scheme) => {
            let headers = signed_post_headers(signer, url, &body, scheme, now);
            (body, headers)
        }
        Build::Dated(scheme, hours) => {
            let at = now + TimeDelta::hours(hours);
            let headers = signed_post_headers(signer, url, &body, scheme, at);
            (body, headers)
        }
        Build::TamperedBody(scheme) => {
            let headers = signed_post_headers(signer, url, &body, scheme, now);
            (tamper(&body), headers)
        }
        Build::TamperedDigest(scheme) => {
            let digest = match scheme {
                Scheme::Cavage => "Digest",
                Scheme::Rfc9421 => "Content-Digest",
            };
            let headers = signed_post_headers(signer, url, &body, scheme, now);
            let forged = tamper(&body);
            let honest = signed_post_headers(signer, url, &forged, scheme, now);
            let mut headers = without(headers, digest);
            headers.push((digest.to_owned(), header(&honest, digest).to_owned()));
            (forged, headers)
        }
        Build::DigestRemoved => {
            let headers = signed_post_headers(signer, url, &body, Scheme::Cavage, now);
            (body, without(headers, "digest"))
        }
        Build::Covering(covered) => {
            let headers = sign_covering(signer, url, &body, covered, now);
            (body, headers)
        }
        Build::Unsigned => {
            let headers = signed_post_headers(signer, url, &body, Scheme::Cavage, now);
            (body, without(headers, "signature"))
        }
    }
}

/// Sends `case` as the `n`th request (a Follow of `alice`) to `inbox` and
/// checks the answer; returns the activity's id.
async fn check(
    app: &TestApp,
    remote: &RemoteServer,
    alice: &Account,
    inbox: &str,
    n: usize,
    case: &SignatureCase,
) -> String {
    let name = case.name;
    let signer = (case.signer)(remote);
    let actor = case.actor.map_or_else(
        || signer.uri.clone(),
        |actor| format!("{}/users/{actor}", remote.base_url),
    );
    let activity = follow(remote, &actor, &alice.uri, &format!("signature-{n}"));
    let (fetched_name, fetched_more) = case.fetched;
    let fetches_before = remote.fetches(fetched_name);

    let (body, headers) = build_request(case.build, &signer, inbox, bytes(&activity));
    let reply = send(&app.client, inbox, body, &headers).await;

    assert_eq!(reply.status, case.status, "{name}: {reply:?}");
    let error = reply.error();
    if case.status == 202 {
        assert!(reply.body.is_empty(), "{name}: {reply:?}");
    } else {
        assert!(!error.is_empty(), "{name}: no error message in {reply:?}");
    }
    for wanted in case.error {
        let wanted = wanted
            .replace("{signer}", &signer.uri)
            .replace("{actor}", &actor)
            .replace("{key_id}", &signer.key_id);
        assert!(
            error.contains(&wanted),
            "{name}: {error:?} lacks {wanted:?}"
        );
    }
    assert_eq!(
        remote.fetches(fetched_name) - fetches_before,
        fetched_more,
        "{name}: fetches of {fetched_name}"
    );
    activity["id"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn signatures_are_checked_and_refused_requests_leave_no_trace() {
    let app = spawn_app().await;
    let alice = app.account("alice", false).await;
    let remote = RemoteServer::start().await;
    bob(&remote);
    remote.actor("gts", 1, KeyStyle::Document);
    remote.actor("carol", 1, KeyStyle::Fragment);
    remote.actor("dave", 2, KeyStyle::Fragment);
    let inbox = format!("{}/users/alice/inbox", app.base_url);

    let full: &[&str] = &["(request-target)", "host", "date", "digest"];
    let cases = [
        SignatureCase {
            name: "valid draft-cavage",
            signer: bob,
            actor: None,
            build: Build::Signed(Scheme::Cavage),
            status: 202,
            error: &[],
            reason: None,
            // The first request fetches the actor, which embeds the key.
            fetched: ("bob", 1),
        },
        SignatureCase {
            name: "valid RFC 9421",
            signer: bob,
            actor: None,
            build: Build::Signed(Scheme::Rfc9421),
            status: 202,
            error: &[],
            reason: None,
            fetched: ("bob", 0),
        },
        SignatureCase {
            name: "GoToSocial-style key document",
            signer: |r| r.actor("gts", 1, KeyStyle::Document),
            actor: None,
            build: Build::Signed(Scheme::Cavage),
            status: 202,
            error: &[],
            reason: None,
            // The key document, then the actor it names.
            fetched: ("gts", 2),
        },
        SignatureCase {
            name: "hand-made signature covering what is required",
            signer: bob,
            actor: None,
            build: Build::Covering(full),
            status: 202,
            error: &[],
            reason: None,
            fetched: ("bob", 0),
        },
        SignatureCase {
            name: "signed with a key the actor does not publish",
            signer: |r| RemoteActor {
                key: TestKey::shared(2),
                ..bob(r)
            },
            actor: None,
            build: Build::Signed(Scheme::Cavage),
            status: 401,
            error: &["does not verify with the key", "{key_id}"],
            reason: Some("signature"),
            // Perhaps a rotation: the key is fetched again, once.
            fetched: ("bob", 1),
        },
        SignatureCase {
            name: "body changed after signing (draft-cavage)",
            signer: bob,
            actor: None,
            build: Build::TamperedBody(Scheme::Cavage),
            status: 401,
            error: &["Digest header does not match the body"],
            reason: Some("signature"),
            fetched: ("bob", 0),
        },
        SignatureCase {
            name: "body changed after signing (RFC 9421)",
            signer: bob,
            actor: None,
            build: Build::TamperedBody(Scheme::Rfc9421),
            status: 401,
            error: &["Content-Digest header does not match the body"],
            reason: Some("signature"),
            fetched: ("bob", 0),
        },
        SignatureCase {
            name: "body and Digest both replaced",
            signer: bob,
            actor: None,
            build: Build::TamperedDigest(Scheme::Cavage),
            status: 401,
            error: &["does not verify with the key", "{key_id}"],
            reason: Some("signature"),
            // The key was re-fetched under a minute ago: not again.
            fetched: ("bob", 0),
        },
        SignatureCase {
            name: "body and Content-Digest both replaced",
            signer: bob,
            actor: None,
            build: Build::TamperedDigest(Scheme::Rfc9421),
            status: 401,
            error: &["does not verify with the key", "{key_id}"],
            reason: Some("signature"),
            fetched: ("bob", 0),
        },
        SignatureCase {
            name: "covered Digest header removed",
            signer: bob,
            actor: None,
            build: Build::DigestRemoved,
            status: 401,
            error: &["covers `digest` but the request has no such header"],
            reason: Some("signature"),
            fetched: ("bob", 0),
        },
        SignatureCase {
            name: "signature not covering the digest",
            signer: bob,
            actor: None,
            build: Build::Covering(&["(request-target)", "host", "date", "content-type"]),
            status: 401,
            error: &["does not cover `digest`"],
            reason: Some("signature"),
            fetched: ("bob", 0),
        },
        SignatureCase {
            name: "signature not covering (request-target)",
            signer: bob,
            actor: None,
            build: Build::Covering(&["host", "date", "digest", "content-type"]),
            status: 401,
            error: &["does not cover `(request-target)`"],
            reason: Some("signature"),
            fetched: ("bob", 0),
        },
        SignatureCase {
            name: "Date two hours old",
            signer: bob,
            actor: None,
            build: Build::Dated(Scheme::Cavage, -2),
            status: 401,
            error: &["Date header is 2 hours behind the server's clock"],
            reason: Some("signature"),
            fetched: ("bob", 0),
        },
        SignatureCase {
            name: "Date two hours ahead",
            signer: bob,
            actor: None,
            build: Build::Dated(Scheme::Cavage, 2),
            status: 401,
            error: &["Date header is", "ahead of the server's clock"],
            reason: Some("signature"),
            fetched: ("bob", 0),
        },
        SignatureCase {
            name: "RFC 9421 created two hours ago",
            signer: bob,
            actor: None,
            build: Build::Dated(Scheme::Rfc9421, -2),
            status: 401,
            error: &["creation time is 2 hours behind the server's clock"],
            reason: Some("signature"),
            fetched: ("bob", 0),
        },
        SignatureCase {
            name: "no Signature header",
            signer: bob,
            actor: None,
            build: Build::Unsigned,
            status: 401,
            error: &["not signed"],
            reason: Some("signature"),
            fetched: ("bob", 0),
        },
        SignatureCase {
            name: "signed by one actor for another of its server",
            signer: bob,
            actor: Some("dave"),
            build: Build::Signed(Scheme::Cavage),
            status: 401,
            error: &["signed by {signer}", "actor is {actor}"],
            reason: Some("actor_mismatch"),
            fetched: ("dave", 0),
        },
        SignatureCase {
            name: "key id that the remote server does not serve",
            signer: |r| {
                let uri = format!("{}/users/ghost", r.base_url);
                chorus_tests::remote::signer(&uri, &format!("{uri}#main-key"), TestKey::shared(0))
            },
            actor: None,
            build: Build::Signed(Scheme::Cavage),
            status: 401,
            error: &["{key_id}", "could not be fetched"],
            reason: Some("unknown_key"),
            fetched: ("ghost", 1),
        },
        SignatureCase {
            name: "carol before her key rotates",
            signer: |r| r.actor("carol", 1, KeyStyle::Fragment),
            actor: None,
            build: Build::Signed(Scheme::Cavage),
            status: 202,
            error: &[],
            reason: None,
            fetched: ("carol", 1),
        },
        SignatureCase {
            name: "carol signing with her rotated key",
            signer: |r| r.rotate("carol", TestKey::shared(2)),
            actor: None,
            build: Build::Signed(Scheme::Cavage),
            status: 202,
            error: &[],
            reason: None,
            // The cached key fails, the new one is fetched exactly once.
            fetched: ("carol", 1),
        },
    ];

    let mut accepted = BTreeSet::new();
    let mut refused = BTreeSet::new();
    for (n, case) in cases.iter().enumerate() {
        let id = check(&app, &remote, &alice, &inbox, n, case).await;
        if case.status == 202 {
            accepted.insert(id);
        } else {
            refused.insert(id);
        }
    }
    assert_eq!(accepted.len() + refused.len(), cases.len());

    assert_stored_exactly(&app, &accepted).await;
    let metrics = metrics(&app).await;
    let count = |reason: &str| {
        u64::try_from(cases.iter().filter(|c| c.reason == Some(reason)).count()).unwrap_or(0)
    };
    assert_refusals(
        &metrics,
        &[
            ("signature", count("signature")),
            ("actor_mismatch", count("actor_mismatch")),
            ("unknown_key", count("unknown_key")),
        ],
    );
    assert_eq!(
        counter(&metrics, "chorus_inbox_accepted_total"),
        u64::try_from(accepted.len()).unwrap_or(0)
    );
    assert_eq!(counter(&metrics, "chorus_inbox_duplicates_total"), 0);
}

// ---------------------------------------------------------------------------
// 2. Bodies that are not activities.

#[tokio::test]
async fn bodies_that_are_not_activities_get_400_with_the_reason() {
    let app = spawn_app().await;
    let alice = app.account("alice", false).await;
    let remote = RemoteServer::start().await;
    let bob = bob(&remote);
    let inbox = format!("{}/users/alice/inbox", app.base_url);
    let activity = follow(&remote, &bob.uri, &alice.uri, "malformed");
    let without_field = |field: &str| {
        let mut body = activity.clone();
        body.as_object_mut()
            .unwrap_or_else(|| panic!("not an object"))
            .remove(field);
        bytes(&body)
    };

    // Each body is validly signed, so nothing but its content is at fault.
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "not JSON",
            b"this is not JSON".to_vec(),
            "the body is not JSON",
        ),
        (
            "not UTF-8",
            vec![0xff, 0xfe, b'{', b'}'],
            "the body is not UTF-8",
        ),
        ("without id", without_field("id"), "has no `id`"),
        ("without type", without_field("type"), "has no `type`"),
        ("without actor", without_field("actor"), "has no `actor`"),
        (
            "a JSON array",
            bytes(&json!([activity.clone()])),
            "not a JSON object",
        ),
    ];
    let check = |name: &'static str, body: Vec<u8>, wanted: &'static str| {
        let (app, bob, inbox) = (&app, &bob, &inbox);
        async move {
            let headers = signed_post_headers(bob, inbox, &body, Scheme::Cavage, Utc::now());
            let reply = send(&app.client, inbox, body, &headers).await;
            assert_eq!(reply.status, 400, "{name}: {reply:?}");
            let error = reply.error();
            assert!(error.contains(wanted), "{name}: {error:?} lacks {wanted:?}");
        }
    };
    let total = u64::try_from(cases.len()).unwrap_or(0);
    for (name, body, wanted) in cases {
        check(name, body, wanted).await;
    }

    assert_stored_exactly(&app, &BTreeSet::new()).await;
    let metrics = metrics(&app).await;
    assert_refusals(&metrics, &[("malformed", total)]);
    assert_eq!(counter(&metrics, "chorus_inbox_accepted_total"), 0);
}

// ---------------------------------------------------------------------------
// 3. Bodies over the limit.

#[tokio::test]
async fn bodies_over_the_limit_get_413_with_or_without_a_length() {
    let app = spawn_app_with(FederationSettings {
        inbox_body_limit: 4096,
        ..settings()
    })
    .await;
    let alice = app.account("alice", false).await;
    let remote = RemoteServer::start().await;
    let bob = bob(&remote);
    let inbox = format!("{}/users/alice/inbox", app.base_url);
    let activity = |slug: &str, padding: usize| {
        let mut activity = follow(&remote, &bob.uri, &alice.uri, slug);
        activity["summary"] = json!("x".repeat(padding));
        activity
    };

    // (name, activity, chunked, expected status)
    let cases = [
        ("small, with a length", activity("small", 100), false, 202),
        ("small, chunked", activity("small-chunked", 100), true, 202),
        ("large, with a length", activity("large", 5000), false, 413),
        ("large, chunked", activity("large-chunked", 5000), true, 413),
    ];
    let mut accepted = BTreeSet::new();
    for (name, activity, chunked, status) in &cases {
        let body = bytes(activity);
        assert_eq!(body.len() > 4096, *status == 413, "{name}: body size");
        let headers = signed_post_headers(&bob, &inbox, &body, Scheme::Cavage, Utc::now());
        let reply = if *chunked {
            send_chunked(&inbox, &body, &headers).await
        } else {
            send(&app.client, &inbox, body, &headers).await
        };
        assert_eq!(reply.status, *status, "{name}: {reply:?}");
        if *status == 413 {
            let error = reply.error();
            assert!(
                error.contains("larger than 4096 bytes"),
                "{name}: {error:?}"
            );
        } else {
            accepted.insert(activity["id"].as_str().unwrap_or_default().to_owned());
        }
    }

    assert_stored_exactly(&app, &accepted).await;
    let metrics = metrics(&app).await;
    assert_refusals(&metrics, &[("too_large", 2)]);
    assert_eq!(counter(&metrics, "chorus_inbox_accepted_total"), 2);
}

// ---------------------------------------------------------------------------
// 4. Rate limits.

#[tokio::test]
async fn an_instance_over_its_rate_is_told_when_to_retry_and_nothing_accepted_is_lost() {
    let app = spawn_app_with(FederationSettings {
        inbox_rate_per_instance: 1,
        ..settings()
    })
    .await;
    let alice = app.account("alice", false).await;
    let remote = RemoteServer::start().await;
    let bob = bob(&remote);
    let inbox = format!("{}/users/alice/inbox", app.base_url);
    let domain = remote.base_url.trim_start_matches("http://").to_owned();

    // Signed beforehand, so that they go out as fast as the server answers.
    let requests: Vec<(String, Vec<u8>, Headers)> = (0..10)
        .map(|n| {
            let activity = follow(&remote, &bob.uri, &alice.uri, &format!("rate-{n}"));
            let body = bytes(&activity);
            let headers = signed_post_headers(&bob, &inbox, &body, Scheme::Cavage, Utc::now());
            (
                activity["id"].as_str().unwrap_or_default().to_owned(),
                body,
                headers,
            )
        })
        .collect();
    let started = Instant::now();
    let mut replies = Vec::new();
    for (id, body, headers) in requests {
        replies.push((id, send(&app.client, &inbox, body, &headers).await));
    }
    let elapsed = started.elapsed();

    // 1/s with a burst of 5: five at once, then one a second.
    let statuses: Vec<u16> = replies.iter().map(|(_, r)| r.status).collect();
    assert_eq!(statuses[..5], [202; 5], "{replies:?}");
    let accepted: BTreeSet<String> = replies
        .iter()
        .filter(|(_, r)| r.status == 202)
        .map(|(id, _)| id.clone())
        .collect();
    let limited: Vec<&Reply> = replies
        .iter()
        .map(|(_, r)| r)
        .filter(|r| r.status == 429)
        .collect();
    assert_eq!(accepted.len() + limited.len(), replies.len(), "{replies:?}");
    assert!(
        u64::try_from(accepted.len()).unwrap_or(0) <= 5 + elapsed.as_secs(),
        "{} accepted in {elapsed:?}",
        accepted.len()
    );
    assert!(!limited.is_empty(), "{replies:?}");
    let mut wait = 0;
    for reply in &limited {
        let after: u64 = reply
            .retry_after
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no Retry-After in seconds: {reply:?}"));
        assert!((1..=5).contains(&after), "{reply:?}");
        wait = wait.max(after);
        let error = reply.error();
        assert!(
            error.contains(&format!("too many requests from {domain}")),
            "{error:?}"
        );
    }

    // After the wait it says, the instance is heard again.
    tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(100)).await;
    let later = follow(&remote, &bob.uri, &alice.uri, "rate-later");
    let body = bytes(&later);
    let headers = signed_post_headers(&bob, &inbox, &body, Scheme::Cavage, Utc::now());
    let reply = send(&app.client, &inbox, body, &headers).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let mut accepted = accepted;
    accepted.insert(later["id"].as_str().unwrap_or_default().to_owned());

    assert_stored_exactly(&app, &accepted).await;
    let metrics = metrics(&app).await;
    assert_refusals(
        &metrics,
        &[("rate_limited", u64::try_from(limited.len()).unwrap_or(0))],
    );
    assert_eq!(
        counter(&metrics, "chorus_inbox_accepted_total"),
        u64::try_from(accepted.len()).unwrap_or(0)
    );
}

// ---------------------------------------------------------------------------
// 5. Instance blocks.

const BLOCK: &str = "mutation($d: String!, $r: String) { blockInstance(domain: $d, reason: $r) { domain blocked reason } }";
const UNBLOCK: &str = "mutation($d: String!) { unblockInstance(domain: $d) { domain blocked } }";
const BLOCKED: &str = "{ blockedInstances { domain blocked reason } }";
const POST: &str = "query($id: ID!) { post(id: $id) { uri content } }";

/// The post uris of a timeline as `token`'s owner sees it.
async fn timeline(app: &TestApp, token: Option<&str>, kind: &str) -> Vec<String> {
    let data = app
        .ok(
            token,
            &format!("{{ timeline(kind: {kind}, first: 50) {{ edges {{ node {{ post {{ uri }} }} }} }} }}"),
            json!({}),
        )
        .await;
    data["timeline"]["edges"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["node"]["post"]["uri"].as_str().map(str::to_owned))
        .collect()
}

/// Whether the remote post shows through `post(id:)` and in the timelines
/// (public for anyone, home for alice, whom it mentions).
async fn post_visibility(app: &TestApp, alice: &Account, note: &str) -> [bool; 4] {
    let anonymous = app.ok(None, POST, json!({ "id": note })).await;
    let as_alice = app
        .ok(Some(&alice.token), POST, json!({ "id": note }))
        .await;
    [
        anonymous["post"]["uri"] == note,
        as_alice["post"]["uri"] == note,
        timeline(app, None, "PUBLIC")
            .await
            .contains(&note.to_owned()),
        timeline(app, Some(&alice.token), "HOME")
            .await
            .contains(&note.to_owned()),
    ]
}

/// The inbox reads the blocked domains at most once a second.
async fn wait_for_block_cache() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

#[tokio::test]
async fn a_blocked_instance_is_refused_and_its_posts_hidden_until_unblocked() {
    let app = spawn_app().await;
    let alice = app.account("alice", false).await;
    let root = app
        .app
        .create_account("moderator", None, false, true)
        .await
        .unwrap_or_else(|e| panic!("cannot create the admin: {e}"));
    let root = root.token.secret;
    app.settle().await;
    let remote = RemoteServer::start().await;
    let bob = bob(&remote);
    let domain = remote.base_url.trim_start_matches("http://").to_owned();
    let inbox = format!("{}/inbox", app.base_url);
    let post = |app: &TestApp, activity: Value| {
        let body = bytes(&activity);
        let headers = signed_post_headers(&bob, &inbox, &body, Scheme::Cavage, Utc::now());
        let (client, inbox) = (app.client.clone(), inbox.clone());
        async move { post_with(&client, &inbox, body, &headers).await }
    };

    // A post delivered before the block.
    let note = format!("{}/notes/1", remote.base_url);
    let create = json!({
        "id": format!("{note}/activity"),
        "type": "Create",
        "actor": bob.uri,
        "to": ["https://www.w3.org/ns/activitystreams#Public"],
        "object": {
            "id": note,
            "type": "Note",
            "attributedTo": bob.uri,
            "to": ["https://www.w3.org/ns/activitystreams#Public"],
            "content": "<p>hello @alice</p>",
            "tag": [{ "type": "Mention", "href": alice.uri }],
            "published": "2026-11-23T10:00:00Z",
        },
    });
    let (status, body) = post(&app, create.clone()).await;
    assert_eq!(status, 202, "{body}");
    app.settle().await;
    assert_eq!(
        post_visibility(&app, &alice, &note).await,
        [true; 4],
        "before the block"
    );

    // Only admins block, and only admins see the blocks.
    let variables = json!({ "d": domain, "r": "spam" });
    assert_eq!(
        app.error_code(Some(&alice.token), BLOCK, variables.clone())
            .await,
        "FORBIDDEN"
    );
    assert_eq!(
        app.error_code(None, BLOCK, variables.clone()).await,
        "UNAUTHENTICATED"
    );
    assert_eq!(
        app.error_code(Some(&alice.token), BLOCKED, json!({})).await,
        "FORBIDDEN"
    );
    assert_eq!(
        app.ok(Some(&root), BLOCKED, json!({})).await["blockedInstances"],
        json!([]),
        "alice's attempt blocked nothing"
    );

    let blocked = app.ok(Some(&root), BLOCK, variables).await;
    assert_eq!(
        blocked["blockInstance"],
        json!({ "domain": domain, "blocked": true, "reason": "spam" })
    );
    assert_eq!(
        app.ok(Some(&root), BLOCKED, json!({})).await["blockedInstances"],
        json!([{ "domain": domain, "blocked": true, "reason": "spam" }])
    );
    app.settle().await;
    assert_eq!(
        post_visibility(&app, &alice, &note).await,
        [false; 4],
        "while blocked"
    );

    wait_for_block_cache().await;
    let refused = follow(&remote, &bob.uri, &alice.uri, "while-blocked");
    let (status, body) = post(&app, refused.clone()).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("this instance is blocked"), "{body}");

    let unblocked = app.ok(Some(&root), UNBLOCK, json!({ "d": domain })).await;
    assert_eq!(
        unblocked["unblockInstance"],
        json!({ "domain": domain, "blocked": false })
    );
    assert_eq!(
        app.ok(Some(&root), BLOCKED, json!({})).await["blockedInstances"],
        json!([])
    );
    app.settle().await;
    assert_eq!(
        post_visibility(&app, &alice, &note).await,
        [true; 4],
        "after the unblock"
    );
    wait_for_block_cache().await;
    let welcome = follow(&remote, &bob.uri, &alice.uri, "after-unblock");
    let (status, body) = post(&app, welcome.clone()).await;
    assert_eq!(status, 202, "{body}");

    let accepted: BTreeSet<String> = [&create, &welcome]
        .iter()
        .map(|a| a["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_stored_exactly(&app, &accepted).await;
    let metrics = metrics(&app).await;
    assert_refusals(&metrics, &[("blocked_instance", 1)]);
}

// ---------------------------------------------------------------------------
// 6. Unknown inboxes.

#[tokio::test]
async fn the_inbox_of_nobody_is_404() {
    let app = spawn_app().await;
    let alice = app.account("alice", false).await;
    let remote = RemoteServer::start().await;
    let bob = bob(&remote);
    let inbox = format!("{}/users/nobody/inbox", app.base_url);
    let activity = follow(&remote, &bob.uri, &alice.uri, "to-nobody");
    let body = bytes(&activity);
    let headers = signed_post_headers(&bob, &inbox, &body, Scheme::Cavage, Utc::now());
    let reply = send(&app.client, &inbox, body, &headers).await;
    assert_eq!(reply.status, 404, "{reply:?}");
    assert_eq!(reply.error(), "no such actor");
    assert_eq!(remote.fetches("bob"), 0, "nothing was verified");
    assert_stored_exactly(&app, &BTreeSet::new()).await;
}

// ---------------------------------------------------------------------------
// A known product bug, kept here to check its fix.

/// Requests that no key of an instance signed must not use up that
/// instance's allowance: otherwise one address, within its own rate, can
/// keep a real server's deliveries answered 429.
#[tokio::test]
async fn unverified_requests_do_not_spend_the_named_instances_allowance() {
    let app = spawn_app_with(FederationSettings {
        inbox_rate_per_instance: 1,
        ..settings()
    })
    .await;
    let alice = app.account("alice", false).await;
    let remote = RemoteServer::start().await;
    let bob = bob(&remote);
    let inbox = format!("{}/inbox", app.base_url);

    // Someone holding no key of bob's server names bob as the actor.
    for n in 0..5 {
        let forged = follow(&remote, &bob.uri, &alice.uri, &format!("forged-{n}"));
        let body = bytes(&forged);
        let mut headers = without(
            signed_post_headers(&bob, &inbox, &body, Scheme::Cavage, Utc::now()),
            "signature",
        );
        headers.push((
            "Signature".to_owned(),
            r#"keyId="https://attacker.invalid/key",headers="date",signature="AAAA""#.to_owned(),
        ));
        let reply = send(&app.client, &inbox, body, &headers).await;
        assert_eq!(reply.status, 401, "{reply:?}");
    }

    let genuine = follow(&remote, &bob.uri, &alice.uri, "genuine");
    let body = bytes(&genuine);
    let headers = signed_post_headers(&bob, &inbox, &body, Scheme::Cavage, Utc::now());
    let reply = send(&app.client, &inbox, body, &headers).await;
    assert_eq!(reply.status, 202, "{reply:?}");
}
