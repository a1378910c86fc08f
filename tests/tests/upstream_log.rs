//! A server whose log of record is another Postgres database (as
//! `CHORUS_EVENT_STORE=postgres://…` runs `chorus serve`): everything it
//! appends goes there first, the mirror copies it into the server's own
//! database in the same order, and everything else reads the copy.

use std::time::Duration;

use chorus_api::app::App;
use chorus_domain::{EventStore, EventStoreError, ExpectedVersion, NewEvent, StreamId};
use chorus_postgres::{Mirror, PgEventStore};
use chorus_tests::app::{TestApp, spawn_app_with_upstream};
use chorus_tests::remote::{KeyStyle, RemoteServer, deliver};
use serde_json::json;
use sqlx::PgPool;

type Row = (uuid::Uuid, String, i64, String, i32, String, String);

/// Every event of a log, in log order, with what the mirror must keep.
async fn log(pool: &PgPool) -> Vec<Row> {
    sqlx::query_as(
        "SELECT event_id, stream_id, stream_version, event_type, schema_version,
                payload::text, recorded_at::text
         FROM events ORDER BY transaction_id, seq",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn upstream(app: &TestApp) -> &chorus_tests::upstream::Mirrored {
    app.upstream
        .as_ref()
        .unwrap_or_else(|| panic!("the app has no upstream"))
}

/// Waits for the mirror, then for every subscriber of the server.
async fn settle(app: &TestApp) {
    upstream(app).caught_up().await;
    app.settle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_and_inbox_writes_go_through_the_log_of_record() {
    let app = spawn_app_with_upstream().await;
    let alice = app.account("alice", false).await;
    let carol = app.account("carol", false).await;
    let created = app
        .ok(
            Some(&alice.token),
            "mutation { createPost(input: { text: \"hello upstream\" }) { id } }",
            json!({}),
        )
        .await;
    let post = created["createPost"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    app.ok(
        Some(&carol.token),
        "mutation($a: String!) { follow(actor: $a) { following } }",
        json!({ "a": alice.uri }),
    )
    .await;
    let favorited = app
        .ok(
            Some(&carol.token),
            "mutation($p: ID!) { favorite(post: $p) { favoritesCount favorited } }",
            json!({ "p": post }),
        )
        .await;
    assert_eq!(favorited["favorite"]["favoritesCount"], 1, "{favorited}");
    assert_eq!(favorited["favorite"]["favorited"], true, "{favorited}");

    // A signed Follow from another server, at alice's inbox.
    let remote = RemoteServer::start().await;
    let bob = remote.actor("bob", 0, KeyStyle::Fragment);
    let follow = json!({
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": format!("{}/activities/follow-1", remote.base_url),
        "type": "Follow",
        "actor": bob.uri,
        "object": alice.uri,
    });
    let inbox = format!("{}/users/alice/inbox", app.base_url);
    let (status, body) = deliver(&app.client, &bob, &inbox, &follow).await;
    assert_eq!(status, 202, "{body}");
    settle(&app).await;

    let followers = count(
        &app.pool,
        &format!(
            "SELECT count(*) FROM follows WHERE followee = '{}' AND state = 'accepted'",
            alice.uri
        ),
    )
    .await;
    assert_eq!(followers, 2, "carol and bob follow alice");
    let shown = app
        .ok(
            Some(&alice.token),
            "query($id: ID!) { post(id: $id) { content favoritesCount } }",
            json!({ "id": post }),
        )
        .await;
    assert_eq!(shown["post"]["favoritesCount"], 1, "{shown}");

    // Every event is in the log of record, and the mirror holds the same
    // events in the same order, with the same streams, versions, types,
    // schema versions, payloads and recorded times.
    let of_record = log(&upstream(&app).upstream_db.pool).await;
    let mirror = log(&app.pool).await;
    let types: Vec<&str> = of_record.iter().map(|r| r.3.as_str()).collect();
    for expected in [
        "ActorRegistered",
        "PostCreated",
        "FollowRequested",
        "Favorited",
        "ActivityReceived",
    ] {
        assert!(types.contains(&expected), "no {expected} in {types:?}");
    }
    assert_eq!(mirror, of_record);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_writer_of_the_log_of_record_shows_up_and_stale_versions_conflict() {
    let app = spawn_app_with_upstream().await;
    let alice = app.account("alice", false).await;
    let m = upstream(&app);

    // Another Chorus server appending to the same log of record (with its
    // own database for its secrets, here the upstream's).
    let other = App::new(m.upstream.clone(), &app.base_url);
    other
        .create_account("dave", None, false, false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    settle(&app).await;
    assert_eq!(
        count(
            &app.pool,
            "SELECT count(*) FROM actors WHERE handle = 'dave' AND local"
        )
        .await,
        1
    );

    // An append at a version the log of record has moved past is refused
    // there, and comes back as the usual conflict.
    let name: String = sqlx::query_scalar(
        "SELECT stream_id FROM events
         WHERE event_type = 'ActorRegistered' AND strpos(payload::text, $1) > 0",
    )
    .bind(&alice.uri)
    .fetch_one(&app.pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let stream = StreamId::new(name).unwrap_or_else(|e| panic!("{e}"));
    let event = || NewEvent::new("Tested", 1, &json!({ "n": 1 })).unwrap_or_else(|e| panic!("{e}"));
    let stale = app
        .store
        .append(&stream, ExpectedVersion::NoStream, vec![event()])
        .await;
    match stale {
        Err(EventStoreError::WrongExpectedVersion { actual, .. }) => {
            assert!(actual.is_some_and(|v| v >= 1), "{actual:?}");
        }
        other => panic!("expected a version conflict, got {other:?}"),
    }
    assert_eq!(log(&app.pool).await, log(&m.upstream_db.pool).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirror_resumes_where_it_stopped_without_copying_twice() {
    let mut app = spawn_app_with_upstream().await;
    app.account("alice", false).await;
    let m = app
        .upstream
        .take()
        .unwrap_or_else(|| panic!("the app has no upstream"));
    let chorus_tests::upstream::Mirrored {
        store,
        upstream,
        upstream_db,
        mirror,
    } = m;
    drop(mirror);
    // Written to the log of record while the mirror is down.
    let stream = StreamId::new("resumed").unwrap_or_else(|e| panic!("{e}"));
    for n in 0..5 {
        let event =
            NewEvent::new("Tested", 1, &json!({ "n": n })).unwrap_or_else(|e| panic!("{e}"));
        upstream
            .append(&stream, ExpectedVersion::Any, vec![event])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        count(
            &app.pool,
            "SELECT count(*) FROM events WHERE stream_id = 'resumed'"
        )
        .await,
        0
    );
    // A restart: a new store on the same databases, its mirror from the
    // saved position.
    let restarted = PgEventStore::with_upstream(app.pool.clone(), std::sync::Arc::new(upstream));
    chorus_api::events::upstream::check(
        &PgEventStore::new(app.pool.clone()),
        restarted
            .upstream()
            .map(|u| u.as_ref())
            .unwrap_or_else(|| panic!("no upstream")),
        "the test upstream",
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let mirror = Mirror::start(&restarted)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let last = chorus_tests::app::last_committed(&upstream_db.pool).await;
    assert!(mirror.reached(last, Duration::from_secs(10)).await);
    assert_eq!(log(&app.pool).await, log(&upstream_db.pool).await);
    assert_eq!(
        count(&app.pool, "SELECT count(*) FROM events").await,
        count(&app.pool, "SELECT count(DISTINCT event_id) FROM events").await,
    );
    drop(store);
}
