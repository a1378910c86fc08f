//! The public ActivityPub surface through the real router: WebFinger,
//! host-meta, NodeInfo, actor and post documents with content negotiation,
//! and paged collections.
//!
//! The read models are written the real way: events decided by the domain
//! are appended to the store and the real projections apply them. Only what
//! no event can express yet is written with SQL, in the `seed_*` helpers.

use std::fmt::Display;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{ACCEPT, ACCESS_CONTROL_ALLOW_ORIGIN, CONTENT_TYPE, HeaderMap, VARY};
use axum::http::{Request, StatusCode};
use chorus_api::http::{AppState, router};
use chorus_domain::actors::{self, ActorState, Handle, RegisterActor, actor_stream};
use chorus_domain::posts::{
    self, Author, CreatePost, EditPost, Mention, PostState, Visibility, post_stream, post_uri,
};
use chorus_domain::relationships::{self, Followee, RelationshipState, relationship_stream};
use chorus_domain::{DomainEvent, EventStore, ExpectedVersion, Position, StreamId};
use chorus_postgres::PgEventStore;
use chorus_projections::Projections;
use chorus_tests::pg::test_db;
use chrono::{DateTime, Utc};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

const BASE: &str = "http://127.0.0.1:8080";
const HOST: &str = "127.0.0.1:8080";
const AP: &str = "application/activity+json";
const LD: &str = r#"application/ld+json; profile="https://www.w3.org/ns/activitystreams""#;
const BROWSER: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
const WAIT: Duration = Duration::from_secs(30);

trait OrPanic<T> {
    fn or_panic(self) -> T;
}

impl<T, E: Display> OrPanic<T> for Result<T, E> {
    fn or_panic(self) -> T {
        self.unwrap_or_else(|e| panic!("{e}"))
    }
}

impl<T> OrPanic<T> for Option<T> {
    fn or_panic(self) -> T {
        self.unwrap_or_else(|| panic!("missing value"))
    }
}

fn user(handle: &str) -> String {
    format!("{BASE}/users/{handle}")
}

fn remote(name: &str) -> String {
    format!("https://remote.example/users/{name}")
}

/// One server: a database of its own, the store, the running projections
/// and the router.
struct Server {
    pool: PgPool,
    store: PgEventStore,
    projections: Projections,
    app: axum::Router,
    last: Position,
    ids: u32,
}

/// A response, with every body checked for private key material.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn header(&self, name: impl axum::http::header::AsHeaderName) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

impl Server {
    async fn new() -> Self {
        let db = test_db().await;
        let store = PgEventStore::new(db.pool.clone());
        let projections = Projections::start(store.clone()).await.or_panic();
        let base = url::Url::parse(BASE).or_panic();
        let app = router(AppState::new(db.pool.clone(), store.clone(), &base));
        Self {
            pool: db.pool,
            store,
            projections,
            app,
            last: Position::START,
            ids: 0,
        }
    }

    async fn append(&mut self, stream: &StreamId, events: &[DomainEvent]) {
        let events = events.iter().map(|e| e.to_new_event().or_panic()).collect();
        let outcome = self
            .store
            .append(stream, ExpectedVersion::Any, events)
            .await
            .or_panic();
        self.last = outcome.last_position().or_panic();
    }

    /// Waits until the read models show every append so far.
    async fn settle(&self) {
        assert!(
            self.projections.wait_for(self.last, WAIT).await,
            "projections did not reach {}: {:?}",
            self.last,
            self.projections.positions()
        );
    }

    async fn register(&mut self, handle: &str, display_name: &str, locked: bool) {
        let handle = Handle::parse(handle).or_panic();
        let command = RegisterActor {
            actor_id: Uuid::new_v4(),
            handle: handle.clone(),
            display_name: Some(display_name.to_owned()),
            locked,
            admin: false,
            public_key_pem: format!(
                "-----BEGIN PUBLIC KEY-----\nkey of {handle}\n-----END PUBLIC KEY-----\n"
            ),
        };
        let events = actors::register(&ActorState::default(), command, BASE, Utc::now()).or_panic();
        self.append(&actor_stream(&handle), &events).await;
    }

    /// A post by local `author`, published at `at`.
    async fn post_at(
        &mut self,
        author: &str,
        text: &str,
        visibility: Visibility,
        mentions: Vec<Mention>,
        at: DateTime<Utc>,
    ) -> PostState {
        let author = user(author);
        let post_id = Uuid::new_v4();
        let command = CreatePost {
            post_id,
            text: text.to_owned(),
            summary: None,
            sensitive: false,
            visibility,
            mentions,
            audience: None,
        };
        let who = Author {
            followers: format!("{author}/followers"),
            uri: author,
        };
        let events = posts::create(&who, command, None, BASE, at).or_panic();
        self.append(&post_stream(post_id), &events).await;
        let mut state = PostState::default();
        for event in &events {
            state.apply(event);
        }
        state
    }

    async fn post(&mut self, author: &str, text: &str, visibility: Visibility) -> PostState {
        self.post_at(author, text, visibility, Vec::new(), Utc::now())
            .await
    }

    async fn edit(&mut self, post: &mut PostState, text: &str) {
        let created = post.created.clone().or_panic();
        let command = EditPost {
            text: text.to_owned(),
            summary: Some("CW".to_owned()),
            sensitive: true,
            mentions: Vec::new(),
        };
        let events = posts::edit(post, &created.author, command, BASE, Utc::now()).or_panic();
        self.append(&post_stream(created.post_id), &events).await;
        for event in &events {
            post.apply(event);
        }
    }

    async fn delete(&mut self, post: &mut PostState) {
        let created = post.created.clone().or_panic();
        let events = posts::delete(post, &created.author, Utc::now()).or_panic();
        self.append(&post_stream(created.post_id), &events).await;
        for event in &events {
            post.apply(event);
        }
    }

    /// `follower` (any actor id) follows local, unlocked `followee` (a
    /// handle), which accepts at once.
    async fn follow(&mut self, follower: &str, followee: &str) {
        let followee = Followee {
            uri: user(followee),
            locked: false,
            local: true,
        };
        self.ids += 1;
        let follow_id = format!("{follower}#follows/{}", self.ids);
        let accept_id = format!("{}#accepts/{}", followee.uri, self.ids);
        let events = relationships::follow(
            &RelationshipState::default(),
            follower,
            &followee,
            &follow_id,
            &accept_id,
        )
        .or_panic();
        self.append(&relationship_stream(follower, &followee.uri), &events)
            .await;
    }

    /// `follower` asks to follow a locked (or remote) actor, which has not
    /// answered yet.
    async fn request_follow(&mut self, follower: &str, followee: &str) {
        let followee = Followee {
            uri: followee.to_owned(),
            locked: true,
            local: false,
        };
        self.ids += 1;
        let follow_id = format!("{follower}#follows/{}", self.ids);
        let events = relationships::follow(
            &RelationshipState::default(),
            follower,
            &followee,
            &follow_id,
            "unused",
        )
        .or_panic();
        self.append(&relationship_stream(follower, &followee.uri), &events)
            .await;
    }

    async fn get(&self, path: &str, accept: Option<&str>) -> Reply {
        let mut request = Request::get(path);
        if let Some(accept) = accept {
            request = request.header(ACCEPT, accept);
        }
        let response = self
            .app
            .clone()
            .oneshot(request.body(Body::empty()).or_panic())
            .await
            .unwrap_or_else(|e| match e {});
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .or_panic();
        let body = String::from_utf8(bytes.to_vec()).or_panic();
        assert!(
            !body.contains("PRIVATE KEY"),
            "{path} leaks private key material: {body}"
        );
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let reply = self.get(path, Some(AP)).await;
        (reply.status, reply.json())
    }
}

/// Deleting an account has no event yet: marks the actor deleted in the
/// read model directly, as the projection of that event will.
async fn seed_actor_deletion(pool: &PgPool, handle: &str) {
    sqlx::query("UPDATE actors SET deleted_at = now() WHERE local AND handle = $1")
        .bind(handle)
        .execute(pool)
        .await
        .or_panic();
}

/// A private key in `actor_keys`, where registration keeps it, so that any
/// leak would show in a response.
async fn seed_private_key(pool: &PgPool, handle: &str) {
    sqlx::query(
        "INSERT INTO actor_keys (actor_id, private_key_pem)
         SELECT actor_id, '-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n'
         FROM actors WHERE local AND handle = $1",
    )
    .bind(handle)
    .execute(pool)
    .await
    .or_panic();
}

fn post_path(post: &PostState) -> String {
    format!("/posts/{}", post.created.as_ref().or_panic().post_id)
}

fn uri_of(post: &PostState) -> String {
    post.created.as_ref().or_panic().uri.clone()
}

#[tokio::test]
async fn webfinger_resolves_local_accounts() {
    let mut server = Server::new().await;
    server.register("alice", "Alice", false).await;
    server.register("gone", "Gone", false).await;
    server.settle().await;
    seed_actor_deletion(&server.pool, "gone").await;

    let reply = server
        .get(
            "/.well-known/webfinger?resource=acct:alice@127.0.0.1:8080",
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply
            .header(CONTENT_TYPE)
            .starts_with("application/jrd+json")
    );
    assert_eq!(reply.header(ACCESS_CONTROL_ALLOW_ORIGIN), "*");
    assert_eq!(
        reply.json(),
        json!({
            "subject": format!("acct:alice@{HOST}"),
            "aliases": [user("alice")],
            "links": [
                { "rel": "self", "type": "application/activity+json", "href": user("alice") },
                { "rel": "http://webfinger.net/rel/profile-page", "type": "text/html", "href": user("alice") },
            ],
        })
    );

    // The same account by other spellings.
    for resource in [
        "acct%3AAlice%40127.0.0.1%3A8080",
        "alice@127.0.0.1:8080",
        "acct:alice@127.0.0.1",
        "http%3A%2F%2F127.0.0.1%3A8080%2Fusers%2Falice",
    ] {
        let reply = server
            .get(&format!("/.well-known/webfinger?resource={resource}"), None)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{resource}");
        assert_eq!(reply.json()["subject"], format!("acct:alice@{HOST}"));
    }

    for (query, status) in [
        ("resource=acct:alice@example.com", StatusCode::NOT_FOUND),
        ("resource=acct:alice@127.0.0.1:9999", StatusCode::NOT_FOUND),
        (
            "resource=https://example.com/users/alice",
            StatusCode::NOT_FOUND,
        ),
        ("resource=acct:nobody@127.0.0.1:8080", StatusCode::NOT_FOUND),
        ("resource=acct:gone@127.0.0.1:8080", StatusCode::GONE),
        ("", StatusCode::BAD_REQUEST),
        ("rel=self", StatusCode::BAD_REQUEST),
        ("resource=", StatusCode::BAD_REQUEST),
        ("resource=acct:alice", StatusCode::BAD_REQUEST),
        ("resource=mailto:alice@127.0.0.1", StatusCode::BAD_REQUEST),
    ] {
        let reply = server
            .get(&format!("/.well-known/webfinger?{query}"), None)
            .await;
        assert_eq!(reply.status, status, "{query}");
        assert_eq!(reply.header(ACCESS_CONTROL_ALLOW_ORIGIN), "*", "{query}");
        let error = reply.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(!error.is_empty(), "{query}: {}", reply.body);
    }
    let missing = server.get("/.well-known/webfinger", None).await;
    assert!(
        missing.json()["error"]
            .as_str()
            .or_panic()
            .contains("resource")
    );

    let host_meta = server.get("/.well-known/host-meta", None).await;
    assert_eq!(host_meta.status, StatusCode::OK);
    assert!(
        host_meta
            .header(CONTENT_TYPE)
            .starts_with("application/xrd+xml")
    );
    assert!(host_meta.body.contains(&format!(
        "<Link rel=\"lrdd\" template=\"{BASE}/.well-known/webfinger?resource={{uri}}\"/>"
    )));
}

#[tokio::test]
async fn nodeinfo_describes_the_server_with_real_counts() {
    let mut server = Server::new().await;
    for handle in ["alice", "bob", "carol", "dan", "gone"] {
        server.register(handle, handle, false).await;
    }
    // alice: active this month; carol: two months ago; bob and dan: never.
    server.post("alice", "one", Visibility::Public).await;
    server.post("alice", "two", Visibility::FollowersOnly).await;
    let mut deleted = server.post("alice", "three", Visibility::Public).await;
    server.delete(&mut deleted).await;
    let two_months_ago = Utc::now() - chrono::Duration::days(60);
    server
        .post_at(
            "carol",
            "old",
            Visibility::Public,
            Vec::new(),
            two_months_ago,
        )
        .await;
    server
        .post("gone", "a deleted account's post", Visibility::Public)
        .await;
    server.settle().await;
    seed_actor_deletion(&server.pool, "gone").await;

    let discovery = server.get("/.well-known/nodeinfo", None).await;
    assert_eq!(discovery.status, StatusCode::OK);
    assert!(
        discovery
            .header(CONTENT_TYPE)
            .starts_with("application/json")
    );
    assert_eq!(
        discovery.json(),
        json!({ "links": [
            { "rel": "http://nodeinfo.diaspora.software/ns/schema/2.0", "href": format!("{BASE}/nodeinfo/2.0") },
            { "rel": "http://nodeinfo.diaspora.software/ns/schema/2.1", "href": format!("{BASE}/nodeinfo/2.1") },
        ]})
    );

    let usage = json!({
        "users": { "total": 4, "activeMonth": 1, "activeHalfyear": 2 },
        // Every local post not deleted, whatever its visibility (the deleted
        // account's post included: the account, not the post, is gone).
        "localPosts": 4,
    });
    for version in ["2.0", "2.1"] {
        let reply = server.get(&format!("/nodeinfo/{version}"), None).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.header(CONTENT_TYPE),
            format!(
                "application/json; profile=\"http://nodeinfo.diaspora.software/ns/schema/{version}#\""
            )
        );
        let document = reply.json();
        assert_eq!(document["version"], version);
        assert_eq!(document["software"]["name"], "chorus");
        assert_eq!(document["software"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(document["protocols"], json!(["activitypub"]));
        assert_eq!(
            document["services"],
            json!({ "inbound": [], "outbound": [] })
        );
        assert_eq!(document["openRegistrations"], false);
        assert_eq!(document["usage"], usage, "{version}");
        assert_eq!(document["metadata"], json!({}));
        if version == "2.0" {
            assert!(document["software"].get("repository").is_none());
        }
    }
}

#[tokio::test]
async fn actors_are_negotiated_between_json_ld_and_html() {
    let mut server = Server::new().await;
    server.register("alice", "Alice <b>& co</b>", true).await;
    server.register("bob", "Bob", false).await;
    server.register("carol", "Carol", false).await;
    server.register("gone", "Gone", false).await;
    server.follow(&user("bob"), "alice").await;
    server.follow(&remote("dave"), "alice").await;
    server.follow(&user("alice"), "carol").await;
    server.request_follow(&user("alice"), &remote("zed")).await;
    server
        .post("alice", "Hello <world>", Visibility::Public)
        .await;
    server.post("alice", "quiet", Visibility::Unlisted).await;
    server
        .post("alice", "secret words", Visibility::FollowersOnly)
        .await;
    server.settle().await;
    seed_private_key(&server.pool, "alice").await;
    seed_actor_deletion(&server.pool, "gone").await;

    let expected = json!({
        "@context": chorus_domain::activitypub::context(),
        "id": user("alice"),
        "type": "Person",
        "preferredUsername": "alice",
        "name": "Alice <b>& co</b>",
        "summary": "",
        "url": user("alice"),
        "inbox": format!("{}/inbox", user("alice")),
        "outbox": format!("{}/outbox", user("alice")),
        "followers": format!("{}/followers", user("alice")),
        "following": format!("{}/following", user("alice")),
        "endpoints": { "sharedInbox": format!("{BASE}/inbox") },
        "manuallyApprovesFollowers": true,
        "publicKey": {
            "id": format!("{}#main-key", user("alice")),
            "owner": user("alice"),
            "publicKeyPem": "-----BEGIN PUBLIC KEY-----\nkey of alice\n-----END PUBLIC KEY-----\n",
        },
    });
    for accept in [
        AP,
        LD,
        "application/ld+json",
        "text/html;q=0.5, application/activity+json",
    ] {
        let reply = server.get("/users/alice", Some(accept)).await;
        assert_eq!(reply.status, StatusCode::OK, "{accept}");
        assert_eq!(
            reply.header(CONTENT_TYPE),
            "application/activity+json; charset=utf-8"
        );
        assert_eq!(reply.header(VARY), "Accept");
        let mut person = reply.json();
        let published = person
            .as_object_mut()
            .and_then(|p| p.remove("published"))
            .or_panic();
        assert!(
            published
                .as_str()
                .or_panic()
                .parse::<DateTime<Utc>>()
                .is_ok(),
            "{published}"
        );
        assert_eq!(person, expected, "{accept}");
    }

    for accept in [Some(BROWSER), Some("text/html"), None] {
        let reply = server.get("/users/alice", accept).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header(CONTENT_TYPE), "text/html; charset=utf-8");
        assert_eq!(reply.header(VARY), "Accept");
        let page = &reply.body;
        assert!(page.contains("Alice &lt;b&gt;&amp; co&lt;/b&gt;"), "{page}");
        assert!(!page.contains("<b>"), "{page}");
        assert!(page.contains(&format!("@alice@{HOST}")));
        assert!(page.contains("<strong>2</strong> posts"), "{page}");
        assert!(page.contains("<strong>2</strong> followers"), "{page}");
        assert!(page.contains("<strong>1</strong> following"), "{page}");
        assert!(page.contains("Hello &lt;world&gt;"), "{page}");
        // Unlisted posts stay off the page; followers-only ones are private.
        assert!(!page.contains("quiet"), "{page}");
        assert!(!page.contains("secret words"), "{page}");
    }

    for (path, status) in [
        ("/users/nobody", StatusCode::NOT_FOUND),
        ("/users/not.a.handle", StatusCode::NOT_FOUND),
        ("/users/gone", StatusCode::GONE),
    ] {
        let reply = server.get(path, Some(AP)).await;
        assert_eq!(reply.status, status, "{path}");
        assert_eq!(reply.header(VARY), "Accept");
        let page = server.get(path, Some(BROWSER)).await;
        assert_eq!(page.status, status, "{path}");
        assert_eq!(page.header(CONTENT_TYPE), "text/html; charset=utf-8");
        if status == StatusCode::NOT_FOUND {
            assert!(reply.json()["error"].is_string(), "{path}");
        }
    }
    let (_, tombstone) = server.get_json("/users/gone").await;
    assert_eq!(tombstone["type"], "Tombstone");
    assert_eq!(tombstone["id"], user("gone"));
    assert!(tombstone["deleted"].is_string());
}

#[tokio::test]
async fn posts_are_notes_and_deleted_ones_tombstones() {
    let mut server = Server::new().await;
    server.register("alice", "Alice", false).await;
    server.register("bob", "Bob", false).await;
    let mention = vec![Mention {
        acct: "bob".to_owned(),
        uri: user("bob"),
        url: None,
    }];
    let note = server
        .post_at(
            "alice",
            "Hi @bob, look at #Rust",
            Visibility::Public,
            mention,
            Utc::now(),
        )
        .await;
    let mut edited = server
        .post("alice", "first draft", Visibility::Unlisted)
        .await;
    server.edit(&mut edited, "second draft").await;
    let followers_only = server
        .post("alice", "friends only", Visibility::FollowersOnly)
        .await;
    let direct = server
        .post_at(
            "alice",
            "psst @bob",
            Visibility::Direct,
            vec![Mention {
                acct: "bob".to_owned(),
                uri: user("bob"),
                url: None,
            }],
            Utc::now(),
        )
        .await;
    let mut deleted = server.post("alice", "regrets", Visibility::Public).await;
    server.delete(&mut deleted).await;
    server.settle().await;

    let reply = server.get(&post_path(&note), Some(AP)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header(CONTENT_TYPE),
        "application/activity+json; charset=utf-8"
    );
    assert_eq!(reply.header(VARY), "Accept");
    let document = reply.json();
    let created = note.created.as_ref().or_panic();
    assert_eq!(document["@context"], chorus_domain::activitypub::context());
    assert_eq!(document["id"], created.uri);
    assert_eq!(document["type"], "Note");
    assert_eq!(document["attributedTo"], user("alice"));
    assert_eq!(document["content"], created.content);
    assert_eq!(document["summary"], Value::Null);
    assert_eq!(document["sensitive"], false);
    assert_eq!(document["inReplyTo"], Value::Null);
    assert_eq!(document["url"], created.uri);
    assert_eq!(document["to"], json!(created.to));
    assert_eq!(document["cc"], json!(created.cc));
    assert_eq!(document["to"], json!([chorus_domain::activitypub::PUBLIC]));
    assert!(document.get("updated").is_none());
    assert_eq!(
        document["tag"],
        json!([
            { "type": "Mention", "href": user("bob"), "name": "@bob" },
            { "type": "Hashtag", "href": format!("{BASE}/tags/rust"), "name": "#rust" },
        ])
    );
    // The document served is the object the Create delivered.
    assert_eq!(
        document["published"],
        created.activity["object"]["published"]
    );

    let (status, edited_note) = server.get_json(&post_path(&edited)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(edited_note["content"], "<p>second draft</p>");
    assert_eq!(edited_note["summary"], "CW");
    assert_eq!(edited_note["sensitive"], true);
    assert!(edited_note["updated"].is_string(), "{edited_note}");

    for hidden in [&followers_only, &direct] {
        for accept in [Some(AP), Some(BROWSER)] {
            let reply = server.get(&post_path(hidden), accept).await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND);
            assert!(!reply.body.contains("friends only") && !reply.body.contains("psst"));
        }
        let activity = server
            .get(&format!("{}/activity", post_path(hidden)), Some(AP))
            .await;
        assert_eq!(activity.status, StatusCode::NOT_FOUND);
    }

    let reply = server.get(&post_path(&deleted), Some(LD)).await;
    assert_eq!(reply.status, StatusCode::GONE);
    assert_eq!(reply.header(VARY), "Accept");
    let tombstone = reply.json();
    assert_eq!(tombstone["@context"], chorus_domain::activitypub::context());
    assert_eq!(tombstone["id"], uri_of(&deleted));
    assert_eq!(tombstone["type"], "Tombstone");
    assert!(
        tombstone["deleted"]
            .as_str()
            .or_panic()
            .parse::<DateTime<Utc>>()
            .is_ok()
    );
    let page = server.get(&post_path(&deleted), Some(BROWSER)).await;
    assert_eq!(page.status, StatusCode::GONE);
    assert_eq!(page.header(CONTENT_TYPE), "text/html; charset=utf-8");
    assert!(!page.body.contains("regrets"));
    let activity = server
        .get(&format!("{}/activity", post_path(&deleted)), Some(AP))
        .await;
    assert_eq!(activity.status, StatusCode::GONE);

    for path in [
        "/posts/not-a-uuid".to_owned(),
        format!("/posts/{}", Uuid::new_v4()),
        format!("/posts/{}/activity", Uuid::new_v4()),
        "/posts/not-a-uuid/activity".to_owned(),
    ] {
        let reply = server.get(&path, Some(AP)).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert!(reply.json()["error"].is_string());
    }

    let page = server.get(&post_path(&note), Some(BROWSER)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.header(VARY), "Accept");
    assert!(
        page.body.contains("Hi @bob, look at #Rust"),
        "{}",
        page.body
    );
    assert!(page.body.contains(&format!("@alice@{HOST}")));

    let activity = server
        .get(&format!("{}/activity", post_path(&note)), Some(AP))
        .await;
    assert_eq!(activity.status, StatusCode::OK);
    assert_eq!(activity.header(VARY), "Accept");
    assert_eq!(activity.json(), created.activity);
    assert_eq!(
        activity.json()["id"],
        format!("{}/activity", post_uri(BASE, created.post_id))
    );
}

#[tokio::test]
async fn outboxes_page_through_public_posts_newest_first() {
    let mut server = Server::new().await;
    server.register("alice", "Alice", false).await;
    server.register("bob", "Bob", false).await;
    let mut posts = Vec::new();
    for n in 0..25 {
        let visibility = if n % 5 == 0 {
            Visibility::Unlisted
        } else {
            Visibility::Public
        };
        posts.push(server.post("alice", &format!("post {n}"), visibility).await);
    }
    server
        .post("alice", "friends only", Visibility::FollowersOnly)
        .await;
    let mut deleted = server.post("alice", "deleted", Visibility::Public).await;
    server.delete(&mut deleted).await;
    server.settle().await;

    let outbox = format!("{}/outbox", user("alice"));
    let reply = server.get("/users/alice/outbox", Some(AP)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header(VARY), "Accept");
    assert_eq!(
        reply.json(),
        json!({
            "@context": chorus_domain::activitypub::context(),
            "id": outbox,
            "type": "OrderedCollection",
            "totalItems": 25,
            "first": format!("{outbox}?page=true"),
        })
    );

    let newest_first: Vec<Value> = posts
        .iter()
        .rev()
        .map(|p| p.created.as_ref().or_panic().activity.clone())
        .collect();
    let (status, first) = server.get_json("/users/alice/outbox?page=true").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["type"], "OrderedCollectionPage");
    assert_eq!(first["id"], format!("{outbox}?page=true"));
    assert_eq!(first["partOf"], outbox);
    assert_eq!(first["orderedItems"], json!(newest_first[..20]));
    let next = first["next"].as_str().or_panic();
    assert!(
        next.starts_with(&format!("{outbox}?page=true&max_id=")),
        "{next}"
    );

    let (status, second) = server.get_json(next.trim_start_matches(BASE)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second["id"], next);
    assert_eq!(second["orderedItems"], json!(newest_first[20..]));
    assert!(second.get("next").is_none(), "{second}");

    let (status, empty) = server.get_json("/users/bob/outbox?page=true").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(empty["orderedItems"], json!([]));
    assert!(empty.get("next").is_none());

    for (path, status) in [
        (
            "/users/alice/outbox?page=true&max_id=bogus",
            StatusCode::BAD_REQUEST,
        ),
        ("/users/nobody/outbox", StatusCode::NOT_FOUND),
        ("/users/nobody/outbox?page=true", StatusCode::NOT_FOUND),
    ] {
        let (found, body) = server.get_json(path).await;
        assert_eq!(found, status, "{path}");
        assert!(body["error"].is_string(), "{path}");
    }
}

#[tokio::test]
async fn followers_and_following_page_through_accepted_follows() {
    let mut server = Server::new().await;
    server.register("alice", "Alice", false).await;
    server.register("gone", "Gone", false).await;
    let followers: Vec<String> = (0..45).map(|n| remote(&format!("f{n:02}"))).collect();
    for follower in &followers {
        server.follow(follower, "alice").await;
    }
    for n in 0..3 {
        let handle = format!("friend{n}");
        server.register(&handle, &handle, false).await;
        server.follow(&user("alice"), &handle).await;
    }
    // A pending request is not a follow yet.
    server
        .request_follow(&user("alice"), &remote("locked"))
        .await;
    server.settle().await;
    seed_actor_deletion(&server.pool, "gone").await;

    let collection = format!("{}/followers", user("alice"));
    let (status, summary) = server.get_json("/users/alice/followers").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        summary,
        json!({
            "@context": chorus_domain::activitypub::context(),
            "id": collection,
            "type": "OrderedCollection",
            "totalItems": 45,
            "first": format!("{collection}?page=true"),
        })
    );

    let newest_first: Vec<&String> = followers.iter().rev().collect();
    let (_, first) = server.get_json("/users/alice/followers?page=true").await;
    assert_eq!(first["partOf"], collection);
    assert_eq!(first["orderedItems"], json!(newest_first[..40]));
    let next = first["next"].as_str().or_panic();
    let (_, second) = server.get_json(next.trim_start_matches(BASE)).await;
    assert_eq!(second["orderedItems"], json!(newest_first[40..]));
    assert!(second.get("next").is_none());

    let (_, following) = server.get_json("/users/alice/following").await;
    assert_eq!(following["totalItems"], 3);
    assert_eq!(following["id"], format!("{}/following", user("alice")));
    let (_, page) = server.get_json("/users/alice/following?page=true").await;
    assert_eq!(
        page["orderedItems"],
        json!([user("friend2"), user("friend1"), user("friend0")])
    );
    assert!(page.get("next").is_none());

    let reply = server
        .get("/users/alice/followers?page=true", Some(BROWSER))
        .await;
    assert_eq!(reply.header(VARY), "Accept");
    assert_eq!(
        reply.header(CONTENT_TYPE),
        "application/activity+json; charset=utf-8"
    );

    for path in ["/users/gone/followers", "/users/gone/following?page=true"] {
        assert_eq!(server.get_json(path).await.0, StatusCode::GONE, "{path}");
    }
    for path in [
        "/users/nobody/followers",
        "/users/nobody/following?page=true",
    ] {
        assert_eq!(
            server.get_json(path).await.0,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
}
