//! `chorus serve` killed with SIGKILL while it has a backlog of deliveries,
//! then restarted: every job is delivered; a POST reaches an inbox twice
//! only if its job was not recorded as delivered at the kill (it was in
//! flight, or its success was being written), and a receiving Chorus stores
//! each activity once.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use chorus_tests::app::spawn_app;
use chorus_tests::cli::{create_account, free_port, wait_ready};
use chorus_tests::outbound::listen;
use chorus_tests::pg::test_db;
use chorus_tests::poll::until as eventually;
use chorus_tests::remote::{KeyStyle, RemoteServer, deliver};
use serde_json::{Value, json};

/// Posts alice makes before the kill.
const POSTS: usize = 60;
/// Deliveries in flight at once to one host.
const PER_HOST: usize = 4;

/// An inbox that answers slowly (so a backlog builds up) and counts every
/// POST by activity id, on arrival.
#[derive(Clone, Default)]
struct SlowInbox {
    received: Arc<Mutex<HashMap<String, usize>>>,
}

impl SlowInbox {
    async fn start(self) -> String {
        let app = Router::new()
            .fallback(post(receive))
            .with_state(self.clone());
        listen(app).await
    }

    /// POSTs of Create activities: (all, distinct).
    fn creates(&self) -> (usize, usize) {
        let received = self.received.lock().unwrap_or_else(|e| e.into_inner());
        let creates = received
            .iter()
            .filter(|(key, _)| key.starts_with("Create "));
        creates.fold((0, 0), |(all, distinct), (_, n)| (all + n, distinct + 1))
    }
}

async fn receive(State(inbox): State<SlowInbox>, body: Bytes) -> StatusCode {
    let activity: Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = format!(
        "{} {}",
        activity["type"].as_str().unwrap_or_default(),
        activity["id"].as_str().unwrap_or_default()
    );
    *inbox
        .received
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(id)
        .or_default() += 1;
    tokio::time::sleep(Duration::from_millis(150)).await;
    StatusCode::ACCEPTED
}

/// `chorus serve` on `port`, against `database_url`.
fn serve(database_url: &str, port: u16) -> Child {
    let log = std::fs::File::create(
        std::env::temp_dir().join(format!("chorus-delivery-crash-{port}.log")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    Command::new(env!("CARGO_BIN_EXE_chorus"))
        .arg("serve")
        .env_remove("CHORUS_CONFIG")
        .env("DATABASE_URL", database_url)
        .env("CHORUS_BIND", format!("127.0.0.1:{port}"))
        .env("CHORUS_BASE_URL", format!("http://127.0.0.1:{port}"))
        .env("CHORUS_ALLOW_PRIVATE_ADDRESSES", "true")
        .env("CHORUS_DELIVERY_PER_HOST", PER_HOST.to_string())
        // Long enough that a loaded machine does not time a POST out (its
        // retry would be a repeat the kill did not cause), short enough
        // that what was leased at the kill is sent again soon.
        .env("CHORUS_REQUEST_TIMEOUT_SECS", "5")
        .env("CHORUS_DELIVERY_LEASE_SECS", "8")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start chorus: {e}"))
}

#[tokio::test]
async fn a_server_killed_with_a_backlog_delivers_everything_once_restarted() {
    let db = test_db().await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = serve(&db.url, port);

    let token = create_account(env!("CARGO_BIN_EXE_chorus"), &db.url, &base, "alice", &[]);
    let alice = format!("{base}/users/alice");
    wait_ready(&mut server, &base).await;

    // Two followers: a remote actor whose inbox is slow, and bob on another
    // Chorus (followed through the API, accepted through federation).
    let slow = SlowInbox::default();
    let slow_base = slow.clone().start().await;
    let remote = RemoteServer::start().await;
    let carol = remote.actor("carol", 0, KeyStyle::Fragment);
    remote.patch_actor(
        "carol",
        json!({ "inbox": format!("{slow_base}/users/carol/inbox"), "endpoints": {} }),
    );
    let client = reqwest::Client::new();
    let follow = json!({
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": format!("{}#follow", carol.uri),
        "type": "Follow",
        "actor": carol.uri,
        "object": alice,
    });
    let (status, body) = deliver(&client, &carol, &format!("{base}/inbox"), &follow).await;
    assert_eq!(status, 202, "{body}");
    let other = spawn_app().await;
    let bob = other.account("bob", false).await;
    other
        .ok(
            Some(&bob.token),
            "mutation($a: String!) { follow(actor: $a) { following } }",
            json!({ "a": alice }),
        )
        .await;
    let pool = sqlx::PgPool::connect(&db.url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eventually(30, "alice never had both followers", || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM follows WHERE followee = $1 AND state = 'accepted'",
        )
        .bind(&alice)
        .fetch_one(&pool)
        .await
        .unwrap_or(0);
        n == 2
    })
    .await;

    // A backlog: posts come faster than the slow inbox takes them.
    let graphql = format!("{base}/graphql");
    let posts = futures::future::join_all((0..POSTS).map(|n| {
        let (client, graphql, token) = (client.clone(), graphql.clone(), token.clone());
        async move {
            let response: Value = client
                .post(&graphql)
                .bearer_auth(&token)
                .json(&json!({
                    "query": "mutation($t: String!) { createPost(input: { text: $t }) { uri } }",
                    "variables": { "t": format!("post {n}") },
                }))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .json()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(response["errors"].is_null(), "{response}");
        }
    }));
    posts.await;
    eventually(30, "no post was delivered before the kill", || async {
        slow.creates().1 >= 10
    })
    .await;
    server.kill().unwrap_or_else(|e| panic!("{e}"));
    let _ = server.wait();
    let (_, at_kill) = slow.creates();
    assert!(
        at_kill < POSTS,
        "no backlog left at the kill ({at_kill} of {POSTS} delivered): the test proves nothing"
    );
    // A POST that arrived is sent again only if its job was not yet
    // recorded as delivered: it was in flight, or its success was still
    // being written with others.
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM delivery_jobs j JOIN delivery_activities a USING (event_id)
         WHERE j.inbox LIKE $1 AND a.activity_type = 'Create' AND j.state = 'delivered'",
    )
    .bind(format!("{slow_base}/%"))
    .fetch_one(&pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let unrecorded = at_kill - usize::try_from(recorded).unwrap_or_default();

    let mut server = serve(&db.url, port);
    wait_ready(&mut server, &base).await;
    eventually(60, "not every post reached the slow inbox", || async {
        slow.creates().1 == POSTS
    })
    .await;
    eventually(60, "not every post reached the other Chorus", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM posts WHERE author = $1")
            .bind(&alice)
            .fetch_one(&other.pool)
            .await
            .unwrap_or(0);
        n == POSTS as i64
    })
    .await;
    let (all, distinct) = slow.creates();
    assert_eq!(distinct, POSTS);
    assert!(
        all - distinct <= unrecorded,
        "{} repeated POSTs; {unrecorded} arrived before the kill without being recorded",
        all - distinct
    );
    // Most are recorded at once: few are unrecorded beyond those in flight.
    assert!(
        unrecorded <= 2 * PER_HOST,
        "{unrecorded} POSTs arrived without being recorded as delivered; {PER_HOST} at most were in flight"
    );
    // Every job ends delivered: a post to each follower, an Accept to each.
    eventually(30, "not every job was recorded as delivered", || async {
        let jobs: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, count(*) FROM delivery_jobs GROUP BY state")
                .fetch_all(&pool)
                .await
                .unwrap_or_default();
        jobs == [("delivered".to_owned(), 2 * POSTS as i64 + 2)]
    })
    .await;

    // The other Chorus stored each Create once, however often it came.
    other.settle().await;
    let stored: Vec<(i64,)> = sqlx::query_as(
        "SELECT count(*) FROM events WHERE event_type = 'ActivityReceived'
           AND payload->>'activity_type' = 'Create'
         GROUP BY payload->>'activity_id'",
    )
    .fetch_all(&other.pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stored.len(), POSTS);
    assert!(stored.iter().all(|(n,)| *n == 1), "{stored:?}");

    let _ = server.kill();
    let _ = server.wait();
}
