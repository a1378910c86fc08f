//! The fetcher against real HTTP servers on loopback.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;

use super::address::non_public_reason;
use super::*;

const MIB: usize = 1024 * 1024;

/// A remote server: what it has seen, and where its redirect to a private
/// address points.
#[derive(Debug, Default)]
struct Remote {
    requests: AtomicUsize,
    /// The `X-Test-Signature` header of each request, in order.
    signatures: Mutex<Vec<String>>,
    /// The bodies posted to `/inbox`.
    posted: Mutex<Vec<Vec<u8>>>,
    private_target: String,
}

impl Remote {
    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn signatures(&self) -> Vec<String> {
        self.signatures
            .lock()
            .unwrap_or_else(|e| panic!("{e}"))
            .clone()
    }
}

fn actor() -> serde_json::Value {
    json!({
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": "https://remote.example/users/alice",
        "type": "Person",
        "preferredUsername": "alice",
        "inbox": "https://remote.example/users/alice/inbox",
    })
}

fn with_type(content_type: &'static str, body: impl Into<Body>) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body.into()).into_response()
}

fn redirect(status: StatusCode, location: &str) -> Response {
    (status, [(header::LOCATION, location.to_owned())]).into_response()
}

/// One handler for every path, so that every request is counted and its
/// signature recorded before anything else happens.
async fn serve(State(remote): State<Arc<Remote>>, request: Request) -> Response {
    remote.requests.fetch_add(1, Ordering::SeqCst);
    if let Some(signature) = request.headers().get("x-test-signature") {
        let signature = String::from_utf8_lossy(signature.as_bytes()).into_owned();
        remote
            .signatures
            .lock()
            .unwrap_or_else(|e| panic!("{e}"))
            .push(signature);
    }
    let path = request.uri().path().to_owned();
    let actor_json = actor().to_string();
    if let Some(n) = path.strip_prefix("/hop/") {
        let n: usize = n.parse().unwrap_or_else(|e| panic!("{e}"));
        return if n == 0 {
            with_type("application/activity+json", actor_json)
        } else {
            // Relative, so that resolving against the current URL is covered.
            redirect(StatusCode::FOUND, &format!("/hop/{}", n - 1))
        };
    }
    match path.as_str() {
        "/actor" => with_type("application/activity+json", actor_json),
        "/ld" => with_type(
            r#"application/ld+json; profile="https://www.w3.org/ns/activitystreams""#,
            actor_json,
        ),
        "/plain" => with_type("application/json; charset=utf-8", actor_json),
        "/html" => with_type("text/html; charset=utf-8", "<html><body>hi</body></html>"),
        "/untyped" => Response::new(Body::from(actor_json)),
        "/broken" => with_type("application/activity+json", "{\"id\": "),
        "/gone" => StatusCode::GONE.into_response(),
        "/teapot" => StatusCode::IM_A_TEAPOT.into_response(),
        "/unavailable" => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        "/no-location" => StatusCode::FOUND.into_response(),
        "/to-private" => redirect(StatusCode::MOVED_PERMANENTLY, &remote.private_target),
        "/huge" => with_type("application/activity+json", vec![b' '; 2 * MIB]),
        "/huge-stream" => {
            let chunks = futures::stream::iter(
                (0..32).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 64 * 1024]))),
            );
            with_type("application/activity+json", Body::from_stream(chunks))
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            with_type("application/activity+json", actor_json)
        }
        "/trickle" => {
            let first = futures::stream::once(async { Ok::<_, std::io::Error>(Bytes::from("{")) });
            let stalled = first.chain(futures::stream::pending());
            with_type("application/activity+json", Body::from_stream(stalled))
        }
        "/inbox" => {
            let body = axum::body::to_bytes(request.into_body(), MIB)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            remote
                .posted
                .lock()
                .unwrap_or_else(|e| panic!("{e}"))
                .push(body.to_vec());
            StatusCode::ACCEPTED.into_response()
        }
        "/busy" => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, HeaderValue::from_static("120"))],
            "slow down",
        )
            .into_response(),
        "/broken-inbox" => (StatusCode::INTERNAL_SERVER_ERROR, vec![b'x'; 2 * MIB]).into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Starts a remote server on `ip` with a random port.
async fn spawn_remote_on(ip: IpAddr, private_target: String) -> (SocketAddr, Arc<Remote>) {
    let remote = Arc::new(Remote {
        private_target,
        ..Remote::default()
    });
    let app = Router::new().fallback(serve).with_state(remote.clone());
    let listener = tokio::net::TcpListener::bind((ip, 0))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, remote)
}

async fn spawn_remote() -> (SocketAddr, Arc<Remote>) {
    spawn_remote_on(Ipv4Addr::LOCALHOST.into(), String::new()).await
}

fn local_policy() -> FetchPolicy {
    FetchPolicy {
        allow_private_addresses: true,
        ..FetchPolicy::default()
    }
}

fn fetcher(policy: FetchPolicy) -> Fetcher {
    Fetcher::new(policy, None).unwrap_or_else(|e| panic!("{e}"))
}

async fn get(fetcher: &Fetcher, addr: SocketAddr, path: &str) -> Result<Fetched, FetchError> {
    fetcher.get_activity(&format!("http://{addr}{path}")).await
}

/// Signs with a header naming the method, path, body length and content
/// type, so that the server can show which requests were signed with what.
#[derive(Debug, Default)]
struct TestSigner {
    calls: AtomicUsize,
}

impl RequestSigner for TestSigner {
    fn sign(
        &self,
        method: &str,
        url: &Url,
        body: Option<&[u8]>,
        content_type: Option<&str>,
    ) -> Vec<(String, String)> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let body = body.map_or(0, <[u8]>::len);
        let content_type = content_type.unwrap_or("-");
        vec![(
            "X-Test-Signature".to_owned(),
            format!("{method} {} {body} {content_type}", url.path()),
        )]
    }
}

#[derive(Debug)]
struct BrokenSigner;

impl RequestSigner for BrokenSigner {
    fn sign(&self, _: &str, _: &Url, _: Option<&[u8]>, _: Option<&str>) -> Vec<(String, String)> {
        vec![("Signature".to_owned(), "line\nbreak".to_owned())]
    }
}

#[tokio::test]
async fn fetches_an_actor() {
    let (addr, _) = spawn_remote().await;
    let fetched = get(&fetcher(local_policy()), addr, "/actor")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fetched.document, actor());
    assert_eq!(fetched.url.as_str(), format!("http://{addr}/actor"));
}

#[tokio::test]
async fn accepts_ld_json_and_plain_json() {
    let (addr, _) = spawn_remote().await;
    let fetcher = fetcher(local_policy());
    for path in ["/ld", "/plain"] {
        let fetched = get(&fetcher, addr, path)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(fetched.document, actor(), "{path}");
    }
}

#[tokio::test]
async fn follows_two_redirects_and_reports_the_final_url() {
    let (addr, remote) = spawn_remote().await;
    let fetched = get(&fetcher(local_policy()), addr, "/hop/2")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fetched.document, actor());
    assert_eq!(fetched.url.as_str(), format!("http://{addr}/hop/0"));
    assert_eq!(remote.requests(), 3);
}

#[tokio::test]
async fn refuses_a_chain_of_five_redirects() {
    let (addr, remote) = spawn_remote().await;
    let result = get(&fetcher(local_policy()), addr, "/hop/5").await;
    assert!(
        matches!(result, Err(FetchError::TooManyRedirects { limit: 3 })),
        "{result:?}"
    );
    // The first request and the three redirects it may follow.
    assert_eq!(remote.requests(), 4);
}

#[tokio::test]
async fn refuses_a_redirect_without_location() {
    let (addr, _) = spawn_remote().await;
    let result = get(&fetcher(local_policy()), addr, "/no-location").await;
    assert!(matches!(result, Err(FetchError::Status(302))), "{result:?}");
}

#[tokio::test]
async fn refuses_a_body_over_the_cap_with_content_length() {
    let (addr, _) = spawn_remote().await;
    let result = get(&fetcher(local_policy()), addr, "/huge").await;
    assert!(
        matches!(result, Err(FetchError::TooLarge { limit }) if limit == MIB),
        "{result:?}"
    );
}

#[tokio::test]
async fn refuses_a_streamed_body_over_the_cap() {
    let (addr, _) = spawn_remote().await;
    let result = get(&fetcher(local_policy()), addr, "/huge-stream").await;
    assert!(
        matches!(result, Err(FetchError::TooLarge { limit }) if limit == MIB),
        "{result:?}"
    );
}

#[tokio::test]
async fn times_out_on_a_slow_answer() {
    let (addr, _) = spawn_remote().await;
    let policy = FetchPolicy {
        timeout: Duration::from_millis(300),
        ..local_policy()
    };
    let started = Instant::now();
    let result = get(&fetcher(policy), addr, "/slow").await;
    assert!(matches!(result, Err(FetchError::Timeout)), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn times_out_on_a_body_that_stalls() {
    let (addr, _) = spawn_remote().await;
    let policy = FetchPolicy {
        timeout: Duration::from_millis(300),
        ..local_policy()
    };
    let result = get(&fetcher(policy), addr, "/trickle").await;
    assert!(matches!(result, Err(FetchError::Timeout)), "{result:?}");
}

#[tokio::test]
async fn refuses_html_and_untyped_answers() {
    let (addr, _) = spawn_remote().await;
    let fetcher = fetcher(local_policy());
    let result = get(&fetcher, addr, "/html").await;
    assert!(
        matches!(&result, Err(FetchError::NotActivityJson(t)) if t == "text/html; charset=utf-8"),
        "{result:?}"
    );
    let result = get(&fetcher, addr, "/untyped").await;
    assert!(
        matches!(&result, Err(FetchError::NotActivityJson(t)) if t.is_empty()),
        "{result:?}"
    );
}

#[tokio::test]
async fn reports_broken_json() {
    let (addr, _) = spawn_remote().await;
    let result = get(&fetcher(local_policy()), addr, "/broken").await;
    assert!(matches!(result, Err(FetchError::Json(_))), "{result:?}");
}

#[tokio::test]
async fn maps_statuses_to_errors() {
    let (addr, _) = spawn_remote().await;
    let fetcher = fetcher(local_policy());
    let gone = get(&fetcher, addr, "/gone").await;
    assert!(matches!(gone, Err(FetchError::Gone)), "{gone:?}");
    let missing = get(&fetcher, addr, "/missing").await;
    assert!(matches!(missing, Err(FetchError::NotFound)), "{missing:?}");
    let teapot = get(&fetcher, addr, "/teapot").await;
    assert!(matches!(teapot, Err(FetchError::Status(418))), "{teapot:?}");
    let unavailable = get(&fetcher, addr, "/unavailable").await;
    assert!(
        matches!(unavailable, Err(FetchError::Status(503))),
        "{unavailable:?}"
    );
}

#[tokio::test]
async fn refuses_loopback_literals_without_sending_anything() {
    let (addr, remote) = spawn_remote().await;
    let fetcher = fetcher(FetchPolicy::default());
    let result = fetcher
        .get_activity(&format!("http://127.0.0.1:{}/actor", addr.port()))
        .await;
    assert!(
        matches!(&result, Err(FetchError::PrivateAddress { host, addr })
            if host == "127.0.0.1" && *addr == IpAddr::from(Ipv4Addr::LOCALHOST)),
        "{result:?}"
    );
    for url in [
        format!("http://[::1]:{}/actor", addr.port()),
        format!("http://[::ffff:127.0.0.1]:{}/actor", addr.port()),
        // The URL parser turns this old shorthand into 127.0.0.1.
        format!("http://0x7f.1:{}/actor", addr.port()),
    ] {
        let result = fetcher.get_activity(&url).await;
        assert!(
            matches!(result, Err(FetchError::PrivateAddress { .. })),
            "{url}: {result:?}"
        );
    }
    let posted = fetcher
        .post_activity(&format!("http://127.0.0.1:{}/inbox", addr.port()), b"{}")
        .await;
    assert!(
        matches!(posted, Err(FetchError::PrivateAddress { .. })),
        "{posted:?}"
    );
    assert_eq!(remote.requests(), 0);
}

#[tokio::test]
async fn refuses_names_that_resolve_to_loopback_without_sending_anything() {
    let (addr, remote) = spawn_remote().await;
    let fetcher = fetcher(FetchPolicy::default());
    let result = fetcher
        .get_activity(&format!("http://localhost:{}/actor", addr.port()))
        .await;
    assert!(
        matches!(&result, Err(FetchError::PrivateAddress { host, addr })
            if host == "localhost" && addr.is_loopback()),
        "{result:?}"
    );
    assert!(result.as_ref().is_err_and(FetchError::is_permanent));
    assert_eq!(remote.requests(), 0);
}

/// Treats 127.0.0.1 as a public address so that a redirect from there to
/// another loopback address stands for a redirect from a public host to a
/// private one.
fn loopback_one_is_public(ip: IpAddr) -> Option<&'static str> {
    if ip == IpAddr::from(Ipv4Addr::LOCALHOST) {
        None
    } else {
        non_public_reason(ip)
    }
}

#[tokio::test]
async fn refuses_a_redirect_to_a_private_address() {
    let (private_addr, private) =
        spawn_remote_on(Ipv4Addr::new(127, 0, 0, 2).into(), String::new()).await;
    let (public_addr, public) = spawn_remote_on(
        Ipv4Addr::LOCALHOST.into(),
        format!("http://{private_addr}/actor"),
    )
    .await;
    let fetcher = Fetcher::with_classifier(FetchPolicy::default(), None, loopback_one_is_public)
        .unwrap_or_else(|e| panic!("{e}"));
    // The stand-in for a public host answers normally ...
    let fetched = get(&fetcher, public_addr, "/actor")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fetched.document, actor());
    // ... but its redirect to a private address is not followed.
    let result = get(&fetcher, public_addr, "/to-private").await;
    assert!(
        matches!(&result, Err(FetchError::PrivateAddress { addr, .. })
            if *addr == IpAddr::from(Ipv4Addr::new(127, 0, 0, 2))),
        "{result:?}"
    );
    assert_eq!(public.requests(), 2);
    assert_eq!(private.requests(), 0);
}

#[tokio::test]
async fn names_the_policy_resolves_reach_its_address_with_the_port_of_the_url() {
    let (addr, remote) = spawn_remote().await;
    let policy = FetchPolicy {
        resolve: vec![("alpha.localhost".to_owned(), addr.ip())],
        ..local_policy()
    };
    let url = format!("http://alpha.localhost:{}/actor", addr.port());
    let fetched = fetcher(policy)
        .get_activity(&url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fetched.document, actor());
    assert_eq!(fetched.url.as_str(), url);
    assert_eq!(remote.requests(), 1);
}

#[tokio::test]
async fn names_the_policy_resolves_are_still_refused_a_private_address() {
    let (addr, remote) = spawn_remote().await;
    let policy = FetchPolicy {
        resolve: vec![("alpha.localhost".to_owned(), addr.ip())],
        ..FetchPolicy::default()
    };
    let url = format!("http://Alpha.localhost:{}/actor", addr.port());
    let result = fetcher(policy).get_activity(&url).await;
    assert!(
        matches!(&result, Err(FetchError::PrivateAddress { addr: refused, .. }) if *refused == addr.ip()),
        "{result:?}"
    );
    assert_eq!(remote.requests(), 0);
}

#[tokio::test]
async fn refuses_other_schemes_and_bad_urls() {
    let fetcher = fetcher(local_policy());
    let result = fetcher.get_activity("ftp://remote.example/actor").await;
    assert!(
        matches!(&result, Err(FetchError::UnsupportedScheme(s)) if s == "ftp"),
        "{result:?}"
    );
    let result = fetcher.get_activity("file:///etc/passwd").await;
    assert!(
        matches!(result, Err(FetchError::UnsupportedScheme(_))),
        "{result:?}"
    );
    let result = fetcher.get_activity("not a url").await;
    assert!(
        matches!(result, Err(FetchError::InvalidUrl { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn signs_every_redirect_hop() {
    let (addr, remote) = spawn_remote().await;
    let signer = Arc::new(TestSigner::default());
    let fetcher =
        Fetcher::new(local_policy(), Some(signer.clone())).unwrap_or_else(|e| panic!("{e}"));
    get(&fetcher, addr, "/hop/2")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(signer.calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        remote.signatures(),
        ["GET /hop/2 0 -", "GET /hop/1 0 -", "GET /hop/0 0 -"]
    );
}

#[tokio::test]
async fn refuses_a_signer_header_that_is_not_valid() {
    let (addr, remote) = spawn_remote().await;
    let fetcher = Fetcher::new(local_policy(), Some(Arc::new(BrokenSigner)))
        .unwrap_or_else(|e| panic!("{e}"));
    let result = get(&fetcher, addr, "/actor").await;
    assert!(
        matches!(&result, Err(FetchError::InvalidSignatureHeader(name)) if name == "signature"),
        "{result:?}"
    );
    assert_eq!(remote.requests(), 0);
}

#[tokio::test]
async fn posts_a_signed_delivery() {
    let (addr, remote) = spawn_remote().await;
    let signer = Arc::new(TestSigner::default());
    let fetcher =
        Fetcher::new(local_policy(), Some(signer.clone())).unwrap_or_else(|e| panic!("{e}"));
    let body = br#"{"type":"Follow"}"#;
    let delivered = fetcher
        .post_activity(&format!("http://{addr}/inbox"), body)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        delivered,
        Delivered {
            status: 202,
            retry_after: None,
            accept_signature: false,
            body_excerpt: String::new(),
        }
    );
    assert!(delivered.is_success());
    assert_eq!(
        remote.signatures(),
        [format!(
            "POST /inbox {} application/activity+json",
            body.len()
        )]
    );
    let posted = remote
        .posted
        .lock()
        .unwrap_or_else(|e| panic!("{e}"))
        .clone();
    assert_eq!(posted, [body.to_vec()]);
}

#[tokio::test]
async fn reports_retry_after_and_error_answers_of_deliveries() {
    let (addr, _) = spawn_remote().await;
    let fetcher = fetcher(local_policy());
    let busy = fetcher
        .post_activity(&format!("http://{addr}/busy"), b"{}")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(busy.status, 429);
    assert_eq!(busy.retry_after, Some(Duration::from_secs(120)));
    assert_eq!(busy.body_excerpt, "slow down");
    assert!(!busy.is_success() && !busy.is_permanent_failure());

    let broken = fetcher
        .post_activity(&format!("http://{addr}/broken-inbox"), b"{}")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(broken.status, 500);
    assert_eq!(broken.body_excerpt, "x".repeat(EXCERPT_BYTES));

    let missing = fetcher
        .post_activity(&format!("http://{addr}/nowhere"), b"{}")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(missing.status, 404);
    assert!(missing.is_permanent_failure());
}

#[test]
fn parses_retry_after() {
    assert_eq!(parse_retry_after("30"), Some(Duration::from_secs(30)));
    assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
    assert_eq!(
        parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
        Some(Duration::ZERO)
    );
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let parsed = parse_retry_after(&later.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .unwrap_or_else(|| panic!("a date an hour ahead did not parse"));
    assert!(parsed > Duration::from_secs(3500) && parsed <= Duration::from_secs(3600));
    assert_eq!(parse_retry_after("soon"), None);
}

/// Asserts whether an error counts as permanent.
fn check(error: FetchError, expected: bool) {
    assert_eq!(error.is_permanent(), expected, "{error:?}");
}

#[test]
fn sorts_errors_into_permanent_and_transient() {
    let table = [
        (FetchError::NotFound, true),
        (FetchError::Gone, true),
        (FetchError::Status(400), true),
        (FetchError::Status(401), true),
        (FetchError::Status(403), true),
        (FetchError::Status(408), false),
        (FetchError::Status(429), false),
        (FetchError::Status(500), false),
        (FetchError::Status(502), false),
        (FetchError::Status(503), false),
        (FetchError::Timeout, false),
        (
            FetchError::PrivateAddress {
                host: "localhost".into(),
                addr: Ipv4Addr::LOCALHOST.into(),
            },
            true,
        ),
        (FetchError::UnsupportedScheme("ftp".into()), true),
        (FetchError::TooLarge { limit: MIB }, true),
        (FetchError::TooManyRedirects { limit: 3 }, true),
        (FetchError::NotActivityJson("text/html".into()), true),
    ];
    for (error, expected) in table {
        check(error, expected);
    }
    let invalid = Url::parse("nope").map_err(|source| FetchError::InvalidUrl {
        url: "nope".into(),
        source,
    });
    check(invalid.err().unwrap_or_else(|| panic!("parsed")), true);
}
