//! A remote fediverse server for tests: a real HTTP server on 127.0.0.1
//! serving actor documents (with their keys) and collecting what is posted
//! to its inboxes, and a signer for requests its actors send.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chorus_domain::signatures::{OutboundBody, PrivateKey, sign_cavage, sign_rfc9421};
use serde_json::{Value, json};

/// A key pair, PEM-encoded.
#[derive(Clone)]
pub struct TestKey {
    pub private_pem: String,
    pub public_pem: String,
}

impl std::fmt::Debug for TestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestKey")
    }
}

impl TestKey {
    /// A fresh RSA-2048 pair (slow-ish: tests reuse [`TestKey::shared`]).
    pub fn generate() -> Self {
        let pair = KeyPair::generate(KeySize::Rsa2048).unwrap_or_else(|e| panic!("{e}"));
        let private: Pkcs8V1Der<'_> = pair.as_der().unwrap_or_else(|e| panic!("{e}"));
        let public: PublicKeyX509Der<'_> =
            pair.public_key().as_der().unwrap_or_else(|e| panic!("{e}"));
        Self {
            private_pem: pem::encode(&pem::Pem::new("PRIVATE KEY", private.as_ref().to_vec())),
            public_pem: pem::encode(&pem::Pem::new("PUBLIC KEY", public.as_ref().to_vec())),
        }
    }

    /// One of a few keys generated once per test process.
    pub fn shared(n: usize) -> Self {
        static KEYS: LazyLock<Vec<TestKey>> =
            LazyLock::new(|| (0..3).map(|_| TestKey::generate()).collect());
        KEYS[n % KEYS.len()].clone()
    }

    pub fn private(&self) -> PrivateKey {
        PrivateKey::from_pem(&self.private_pem).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// How an actor publishes its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyStyle {
    /// `…/users/x#main-key`, embedded in the actor (Mastodon).
    Fragment,
    /// `…/users/x/main-key`, a document of its own naming its owner (GoToSocial).
    Document,
}

/// An actor of the remote server.
#[derive(Clone, Debug)]
pub struct RemoteActor {
    pub name: String,
    pub uri: String,
    pub key_id: String,
    pub inbox: String,
    pub key: TestKey,
    pub style: KeyStyle,
}

#[derive(Debug, Default)]
struct Inner {
    actors: HashMap<String, RemoteActor>,
    /// Documents served verbatim at a path (objects, notes).
    documents: HashMap<String, Value>,
    /// What was posted to inboxes: (path, headers, body).
    received: Vec<(String, HeaderMap, Value)>,
    /// Actor documents fetched, by name.
    fetches: HashMap<String, usize>,
    /// Fields merged into an actor's document, by name.
    patches: HashMap<String, Value>,
    /// The `resource`s WebFinger was asked about, in order.
    webfingers: Vec<String>,
}

/// The running server.
#[derive(Clone, Debug)]
pub struct RemoteServer {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    inner: Arc<Mutex<Inner>>,
}

impl RemoteServer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("cannot bind: {e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let server = Self {
            base_url: format!("http://127.0.0.1:{port}"),
            inner: Arc::new(Mutex::new(Inner::default())),
        };
        let app = Router::new()
            .route("/users/{name}", get(actor_document).post(inbox))
            .route("/users/{name}/main-key", get(key_document))
            .route("/users/{name}/inbox", axum::routing::post(inbox))
            .route("/inbox", axum::routing::post(inbox))
            .route("/objects/{*path}", get(object_document))
            .route("/.well-known/webfinger", get(webfinger))
            .with_state(server.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        server
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an actor named `name` with key number `key` (see [`TestKey::shared`]).
    pub fn actor(&self, name: &str, key: usize, style: KeyStyle) -> RemoteActor {
        let uri = format!("{}/users/{name}", self.base_url);
        let actor = RemoteActor {
            name: name.to_owned(),
            key_id: match style {
                KeyStyle::Fragment => format!("{uri}#main-key"),
                KeyStyle::Document => format!("{uri}/main-key"),
            },
            inbox: format!("{uri}/inbox"),
            uri,
            key: TestKey::shared(key),
            style,
        };
        self.lock().actors.insert(name.to_owned(), actor.clone());
        actor
    }

    /// Replaces an actor's key (a rotation): its documents serve the new one.
    pub fn rotate(&self, name: &str, key: TestKey) -> RemoteActor {
        let mut inner = self.lock();
        let actor = inner
            .actors
            .get_mut(name)
            .unwrap_or_else(|| panic!("no actor {name}"));
        actor.key = key;
        actor.clone()
    }

    /// Serves `document` at `/objects/{path}`; returns its URL.
    pub fn serve_object(&self, path: &str, document: Value) -> String {
        self.lock().documents.insert(path.to_owned(), document);
        format!("{}/objects/{path}", self.base_url)
    }

    /// Merges `fields` (a JSON object) into the document served for the
    /// actor `name`: a profile page (`url`), `manuallyApprovesFollowers`, ...
    pub fn patch_actor(&self, name: &str, fields: Value) {
        let mut inner = self.lock();
        let patch = inner.patches.entry(name.to_owned()).or_insert(json!({}));
        if let (Some(patch), Some(fields)) = (patch.as_object_mut(), fields.as_object()) {
            patch.extend(fields.clone());
        }
    }

    /// The `resource`s WebFinger was asked about so far.
    pub fn webfingers(&self) -> Vec<String> {
        self.lock().webfingers.clone()
    }

    /// This server's host and port, as addresses name it (`bob@{host}`).
    pub fn host(&self) -> &str {
        self.base_url
            .split_once("://")
            .map_or(self.base_url.as_str(), |(_, host)| host)
    }

    /// How many times `name`'s actor or key document was fetched.
    pub fn fetches(&self, name: &str) -> usize {
        self.lock().fetches.get(name).copied().unwrap_or_default()
    }

    /// What was posted to this server's inboxes.
    pub fn received(&self) -> Vec<(String, HeaderMap, Value)> {
        self.lock().received.clone()
    }

    /// The actor document of `actor`.
    pub fn document(actor: &RemoteActor) -> Value {
        let base = actor.uri.rsplit_once("/users/").map_or("", |(b, _)| b);
        json!({
            "@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1"],
            "id": actor.uri,
            "type": "Person",
            "preferredUsername": actor.name,
            "name": format!("{} (remote)", actor.name),
            "summary": "<p>remote <script>alert(1)</script>actor</p>",
            "inbox": actor.inbox,
            "outbox": format!("{}/outbox", actor.uri),
            "followers": format!("{}/followers", actor.uri),
            "following": format!("{}/following", actor.uri),
            "endpoints": { "sharedInbox": format!("{base}/inbox") },
            "manuallyApprovesFollowers": false,
            "publicKey": {
                "id": actor.key_id,
                "owner": actor.uri,
                "publicKeyPem": actor.key.public_pem,
            },
        })
    }
}

async fn actor_document(State(server): State<RemoteServer>, Path(name): Path<String>) -> Response {
    let (actor, patch) = {
        let mut inner = server.lock();
        *inner.fetches.entry(name.clone()).or_default() += 1;
        (
            inner.actors.get(&name).cloned(),
            inner.patches.get(&name).cloned(),
        )
    };
    match actor {
        Some(actor) => {
            let mut document = RemoteServer::document(&actor);
            if let (Some(document), Some(Value::Object(patch))) = (document.as_object_mut(), patch)
            {
                document.extend(patch);
            }
            activity_json(document)
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `GET /.well-known/webfinger?resource=acct:name@host`, answered as
/// Mastodon answers it (`application/jrd+json`).
async fn webfinger(State(server): State<RemoteServer>, uri: axum::http::Uri) -> Response {
    let resource = uri
        .query()
        .and_then(|query| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(name, _)| name == "resource")
                .map(|(_, value)| value.into_owned())
        })
        .unwrap_or_default();
    let actor = {
        let mut inner = server.lock();
        inner.webfingers.push(resource.clone());
        let name = resource
            .strip_prefix("acct:")
            .and_then(|acct| acct.strip_suffix(&format!("@{}", server.host())))
            .unwrap_or_default();
        inner.actors.get(name).cloned()
    };
    let Some(actor) = actor else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let jrd = json!({
        "subject": resource,
        "aliases": [actor.uri],
        "links": [
            { "rel": "http://webfinger.net/rel/profile-page", "type": "text/html", "href": actor.uri },
            { "rel": "self", "type": "application/activity+json", "href": actor.uri },
        ],
    });
    (
        [(header::CONTENT_TYPE, "application/jrd+json; charset=utf-8")],
        jrd.to_string(),
    )
        .into_response()
}

async fn key_document(State(server): State<RemoteServer>, Path(name): Path<String>) -> Response {
    let actor = {
        let mut inner = server.lock();
        *inner.fetches.entry(name.clone()).or_default() += 1;
        inner.actors.get(&name).cloned()
    };
    match actor {
        Some(actor) if actor.style == KeyStyle::Document => activity_json(json!({
            "@context": "https://w3id.org/security/v1",
            "id": actor.key_id,
            "type": "CryptographicKey",
            "owner": actor.uri,
            "publicKeyPem": actor.key.public_pem,
        })),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn object_document(State(server): State<RemoteServer>, Path(path): Path<String>) -> Response {
    match server.lock().documents.get(&path).cloned() {
        Some(document) => activity_json(document),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn inbox(
    State(server): State<RemoteServer>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    server
        .lock()
        .received
        .push((uri.path().to_owned(), headers, body));
    StatusCode::ACCEPTED
}

fn activity_json(document: Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/activity+json")],
        document.to_string(),
    )
        .into_response()
}

/// How a test request is signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Cavage,
    Rfc9421,
}

/// The headers that sign a POST of `body` to `url` as `actor`.
pub fn signed_post_headers(
    actor: &RemoteActor,
    url: &str,
    body: &[u8],
    scheme: Scheme,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<(String, String)> {
    let url = url::Url::parse(url).unwrap_or_else(|e| panic!("{e}"));
    let key = actor.key.private();
    match scheme {
        Scheme::Cavage => sign_cavage(
            "POST",
            &url,
            Some(OutboundBody {
                content_type: "application/activity+json",
                bytes: body,
            }),
            &actor.key_id,
            &key,
            now,
        ),
        Scheme::Rfc9421 => {
            sign_rfc9421("POST", &url, Some(body), &actor.key_id, &key, now).map(|mut h| {
                h.push(("Content-Type".into(), "application/activity+json".into()));
                h
            })
        }
    }
    .unwrap_or_else(|e| panic!("cannot sign: {e}"))
}

/// Posts `activity` to `url`, signed by `actor`; returns the status and body.
pub async fn deliver(
    client: &reqwest::Client,
    actor: &RemoteActor,
    url: &str,
    activity: &Value,
) -> (u16, String) {
    let body = serde_json::to_vec(activity).unwrap_or_default();
    post_signed(client, actor, url, body, Scheme::Cavage).await
}

/// Posts raw `body` to `url`, signed by `actor` with `scheme`.
pub async fn post_signed(
    client: &reqwest::Client,
    actor: &RemoteActor,
    url: &str,
    body: Vec<u8>,
    scheme: Scheme,
) -> (u16, String) {
    let headers = signed_post_headers(actor, url, &body, scheme, chrono::Utc::now());
    post_with(client, url, body, &headers).await
}

/// Posts `body` to `url` with exactly `headers`.
pub async fn post_with(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    headers: &[(String, String)],
) -> (u16, String) {
    let mut request = client.post(url).body(body);
    for (name, value) in headers {
        if !name.eq_ignore_ascii_case("host") {
            request = request.header(name, value);
        }
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("request failed: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// A remote server laid out like a real one, for replaying captured
/// payloads: it serves documents at any path and query (`/@alice`, `/u/bob`,
/// `/?author=0`, `/`), answers 404 for the rest and takes every POST with
/// 202. A test replaying a payload starts one per host the payload names, so
/// that the hosts' origins stay apart. It stops when dropped.
#[derive(Debug)]
pub struct DocumentServer {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    documents: Arc<Mutex<Documents>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Documents {
    /// By path and query, as a client requests them.
    served: HashMap<String, Value>,
    /// Every GET, by path and query.
    fetched: Vec<String>,
}

impl Drop for DocumentServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DocumentServer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("cannot bind: {e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let documents = Arc::new(Mutex::new(Documents::default()));
        let app = Router::new()
            .fallback(serve_document)
            .with_state(documents.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base_url: format!("http://127.0.0.1:{port}"),
            documents,
            task,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Documents> {
        self.documents.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves `document` at `url`, a URL of this server (its fragment is
    /// not part of a request, so `…/users/a#main-key` is `/users/a`).
    pub fn serve(&self, url: &str, document: Value) {
        self.lock().served.insert(request_target(url), document);
    }

    /// The paths (with queries) fetched so far, in order.
    pub fn fetched(&self) -> Vec<String> {
        self.lock().fetched.clone()
    }
}

/// What a client asks a server for to get `url`: its path and query, encoded
/// as the URL parser encodes them (so `{{nickname}}` is `%7B%7Bnickname%7D%7D`).
fn request_target(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(url) => match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        },
        Err(_) => url.to_owned(),
    }
}

async fn serve_document(
    State(documents): State<Arc<Mutex<Documents>>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> Response {
    if method == axum::http::Method::POST {
        return StatusCode::ACCEPTED.into_response();
    }
    let target = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    let document = {
        let mut documents = documents.lock().unwrap_or_else(|e| e.into_inner());
        documents.fetched.push(target.clone());
        documents.served.get(&target).cloned()
    };
    match document {
        Some(document) => activity_json(document),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// An actor that signs as `uri` with `key`, which its document publishes as
/// `key_id`; whoever serves that document decides where it lives.
pub fn signer(uri: &str, key_id: &str, key: TestKey) -> RemoteActor {
    let name = uri
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    RemoteActor {
        name,
        uri: uri.to_owned(),
        key_id: key_id.to_owned(),
        inbox: format!("{}/inbox", uri.trim_end_matches('/')),
        key,
        style: KeyStyle::Fragment,
    }
}

/// A Mastodon-shaped document of `actor` (see [`signer`]), wherever it lives.
pub fn signer_document(actor: &RemoteActor) -> Value {
    json!({
        "@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1"],
        "id": actor.uri,
        "type": "Person",
        "preferredUsername": actor.name,
        "name": format!("{} (remote)", actor.name),
        "inbox": actor.inbox,
        "manuallyApprovesFollowers": false,
        "publicKey": {
            "id": actor.key_id,
            "owner": actor.uri,
            "publicKeyPem": actor.key.public_pem,
        },
    })
}
