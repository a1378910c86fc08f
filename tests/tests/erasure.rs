//! Erasure of deleted content, end to end: posts, a reply, remote posts
//! received through the signed inbox and a remote actor's profile, each with
//! marker strings of its own, are deleted (GraphQL `deletePost`, inbox
//! Delete{Note} and Delete{Person}, `deleteAccount`), and afterwards no
//! text, json or jsonb column of any table of the database holds a marker,
//! while the log keeps every event where it was.

use std::sync::Arc;
use std::time::Duration;

use chorus_api::app::App;
use chorus_api::federation::interpret::Interpreter;
use chorus_domain::erasure::{ContentErased, ERASED_REASON};
use chorus_domain::remote::ActivityNotApplied;
use chorus_domain::{DomainEvent, EventStore, Position, RecordedEvent};
use chorus_tests::app::{Account, TestApp, last_committed, spawn_app};
use chorus_tests::outbound::{accepted, deliveries, follow, remote_follower, trust_local};
use chorus_tests::pg::test_db;
use chorus_tests::remote::{KeyStyle, RemoteActor, RemoteServer};
use chorus_tests::sink::Sink;
use chorus_workers::erasure::{Erasure, ErasureOptions};
use serde_json::{Value, json};
use sqlx::PgPool;

const WAIT: Duration = Duration::from_secs(20);

const CREATE: &str = "mutation($text: String!, $summary: String, $reply: ID) {
    createPost(input: { text: $text, summary: $summary, inReplyTo: $reply }) { id uri }
}";
const EDIT: &str =
    "mutation($id: ID!, $text: String!) { editPost(id: $id, input: { text: $text }) { id } }";
const DELETE_POST: &str = "mutation($id: ID!) { deletePost(id: $id) }";
const DELETE_ACCOUNT: &str = "mutation($h: String) { deleteAccount(handle: $h) }";

/// A string that appears nowhere but where the scenario put it.
fn marker(what: &str) -> String {
    format!("qzmark{what}qz")
}

/// Every marker, with what it was written into.
fn markers() -> Vec<(&'static str, String)> {
    [
        ("a local post", "localpost"),
        ("a local post's content warning", "localcw"),
        ("a local post's edit", "localedit"),
        ("a reply by the deleted account", "reply"),
        ("the deleted account's display name", "carolname"),
        ("a remote post", "remotepost"),
        ("a remote post's attachment", "remotealt"),
        ("a remote post's Update", "remoteedit"),
        ("a deleted remote actor's other post", "bobpost"),
        ("a remote actor's name", "bobname"),
        ("a remote actor's summary", "bobbio"),
        ("a remote actor's icon", "bobicon"),
    ]
    .into_iter()
    .map(|(what, name)| (what, marker(name)))
    .collect()
}

/// Where `needle` is found: `schema.table.column` of every text, varchar,
/// json and jsonb column (and arrays of them) of every table in every
/// schema but Postgres' own.
async fn found(pool: &PgPool, needle: &str) -> Vec<String> {
    let columns: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT c.table_schema::text, c.table_name::text, c.column_name::text
         FROM information_schema.columns c
         JOIN information_schema.tables t
           ON t.table_schema = c.table_schema AND t.table_name = c.table_name
         WHERE t.table_type = 'BASE TABLE'
           AND c.table_schema NOT IN ('pg_catalog', 'information_schema')
           AND c.table_schema NOT LIKE 'pg\\_toast%'
           AND c.table_schema NOT LIKE 'pg\\_temp%'
           AND c.udt_name IN ('text', 'varchar', 'bpchar', 'json', 'jsonb',
                              '_text', '_varchar', '_json', '_jsonb')
         ORDER BY 1, 2, 3",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        columns
            .iter()
            .any(|(_, t, c)| t == "events" && c == "payload"),
        "the search covers the log"
    );
    let quote = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
    let mut places = Vec::new();
    for (schema, table, column) in columns {
        let count: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {}.{} WHERE strpos({}::text, $1) > 0",
            quote(&schema),
            quote(&table),
            quote(&column)
        ))
        .bind(needle)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{schema}.{table}.{column}: {e}"));
        if count > 0 {
            places.push(format!("{schema}.{table}.{column} ({count})"));
        }
    }
    places
}

/// The log without payloads and metadata: what erasure must keep.
async fn envelopes(pool: &PgPool) -> Vec<(i64, i64, uuid::Uuid, String, i64, String, i32)> {
    sqlx::query_as(
        "SELECT transaction_id, seq, event_id, stream_id, stream_version, event_type, schema_version
         FROM events ORDER BY transaction_id, seq",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

async fn log(app: &TestApp) -> Vec<RecordedEvent> {
    app.settle().await;
    app.store
        .read_all(Position::START, 100_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// What the scenario left.
struct World {
    app: TestApp,
    alice: Account,
    carol: Account,
    bob: RemoteActor,
    /// Alice's post that is deleted, and the one that stays.
    deleted_post: String,
    kept_post: String,
    /// Bob's first note (deleted by itself) and second (with bob).
    note: String,
    /// The log's envelopes before the deletions.
    before: Vec<(i64, i64, uuid::Uuid, String, i64, String, i32)>,
}

async fn post(
    app: &TestApp,
    token: &str,
    text: &str,
    summary: Option<&str>,
    reply: Option<&str>,
) -> String {
    let data = app
        .ok(
            Some(token),
            CREATE,
            json!({ "text": text, "summary": summary, "reply": reply }),
        )
        .await;
    data["createPost"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{data}"))
        .to_owned()
}

fn note(remote: &RemoteServer, author: &RemoteActor, n: u32, content: &str) -> Value {
    json!({
        "id": format!("{}/objects/notes/{n}", remote.base_url),
        "type": "Note",
        "attributedTo": author.uri,
        "to": ["https://www.w3.org/ns/activitystreams#Public"],
        "content": content,
        "published": "2026-12-01T10:00:00Z",
    })
}

/// Creates content with markers (and checks each is stored somewhere),
/// then deletes all of it and waits until everything settled.
async fn scenario() -> World {
    let app = spawn_app().await;
    let alice = app.account("alice", false).await;
    let erin = app.account("erin", false).await;
    let created = app
        .app
        .create_account(
            "carol",
            Some(format!("Carol {}", marker("carolname"))),
            false,
            false,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let carol = Account {
        handle: "carol".into(),
        uri: created.actor.uri,
        token: created.token.secret,
    };

    let remote = RemoteServer::start().await;
    let bob = remote.actor("bob", 0, KeyStyle::Fragment);
    remote.patch_actor(
        "bob",
        json!({
            "name": format!("Bob {}", marker("bobname")),
            "summary": format!("<p>about {}</p>", marker("bobbio")),
            "icon": { "type": "Image", "url": format!("{}/media/{}.png", remote.base_url, marker("bobicon")) },
        }),
    );
    let dave = remote.actor("dave", 1, KeyStyle::Fragment);
    // Bob follows alice: her posts are delivered to him (the delivery
    // queue holds copies of them).
    follow(&app, &bob, &alice.uri, 1).await;

    let deleted_post = post(
        &app,
        &alice.token,
        &format!("first {}", marker("localpost")),
        Some(&format!("cw {}", marker("localcw"))),
        None,
    )
    .await;
    app.ok(
        Some(&alice.token),
        EDIT,
        json!({ "id": deleted_post, "text": format!("second {}", marker("localedit")) }),
    )
    .await;
    let kept_post = post(&app, &alice.token, "still here", None, None).await;
    post(
        &app,
        &carol.token,
        &format!("@alice {}", marker("reply")),
        None,
        Some(&deleted_post),
    )
    .await;
    for (mutation, argument) in [
        (
            "mutation($a: String!) { follow(actor: $a) { actor } }",
            "alice",
        ),
        (
            "mutation($a: String!) { block(actor: $a) { actor } }",
            "erin",
        ),
    ] {
        app.ok(Some(&carol.token), mutation, json!({ "a": argument }))
            .await;
    }
    for mutation in [
        "mutation($p: ID!) { favorite(post: $p) { uri } }",
        "mutation($p: ID!) { reblog(post: $p) { uri } }",
    ] {
        app.ok(Some(&carol.token), mutation, json!({ "p": kept_post }))
            .await;
    }
    let _ = erin;

    // Bob's note, with an attachment, then its Update; his second note;
    // dave's Announce of the first with the note inline.
    let mut first = note(
        &remote,
        &bob,
        1,
        &format!("<p>{}</p>", marker("remotepost")),
    );
    first["attachment"] = json!([{
        "type": "Document",
        "mediaType": "image/png",
        "url": format!("{}/media/1.png", remote.base_url),
        "name": format!("alt {}", marker("remotealt")),
    }]);
    let note_id = first["id"].as_str().unwrap_or_default().to_owned();
    let create = |object: &Value, n: u32| {
        json!({
            "@context": "https://www.w3.org/ns/activitystreams",
            "id": format!("{}/activities/create-{n}", remote.base_url),
            "type": "Create",
            "actor": bob.uri,
            "to": ["https://www.w3.org/ns/activitystreams#Public"],
            "object": object,
        })
    };
    accepted(&app, &bob, &create(&first, 1)).await;
    let mut edited = note(
        &remote,
        &bob,
        1,
        &format!("<p>{}</p>", marker("remoteedit")),
    );
    edited["updated"] = json!("2026-12-01T11:00:00Z");
    accepted(
        &app,
        &bob,
        &json!({
            "@context": "https://www.w3.org/ns/activitystreams",
            "id": format!("{}/activities/update-1", remote.base_url),
            "type": "Update",
            "actor": bob.uri,
            "object": edited,
        }),
    )
    .await;
    let second = note(&remote, &bob, 2, &format!("<p>{}</p>", marker("bobpost")));
    accepted(&app, &bob, &create(&second, 2)).await;
    accepted(
        &app,
        &dave,
        &json!({
            "@context": "https://www.w3.org/ns/activitystreams",
            "id": format!("{}/activities/announce-1", remote.base_url),
            "type": "Announce",
            "actor": dave.uri,
            "to": ["https://www.w3.org/ns/activitystreams#Public"],
            "object": first,
        }),
    )
    .await;
    app.settle().await;

    // Every marker is stored somewhere now, so finding none later means
    // something.
    for (what, needle) in markers() {
        let places = found(&app.pool, &needle).await;
        assert!(!places.is_empty(), "{what} ({needle}) is not stored at all");
    }
    let reblogs: i64 = sqlx::query_scalar("SELECT count(*) FROM reblogs WHERE actor = $1")
        .bind(&carol.uri)
        .fetch_one(&app.pool)
        .await
        .unwrap_or_default();
    assert_eq!(reblogs, 1);
    let before = envelopes(&app.pool).await;

    // The deletions.
    app.ok(
        Some(&alice.token),
        DELETE_POST,
        json!({ "id": deleted_post }),
    )
    .await;
    accepted(
        &app,
        &bob,
        &json!({
            "@context": "https://www.w3.org/ns/activitystreams",
            "id": format!("{note_id}/delete"),
            "type": "Delete",
            "actor": bob.uri,
            "object": { "id": note_id, "type": "Tombstone" },
        }),
    )
    .await;
    accepted(
        &app,
        &bob,
        &json!({
            "@context": "https://www.w3.org/ns/activitystreams",
            "id": format!("{}#delete", bob.uri),
            "type": "Delete",
            "actor": bob.uri,
            "to": ["https://www.w3.org/ns/activitystreams#Public"],
            "object": bob.uri,
        }),
    )
    .await;
    let deleted = app.ok(Some(&carol.token), DELETE_ACCOUNT, json!({})).await;
    assert_eq!(deleted["deleteAccount"], carol.uri);
    app.settle().await;
    World {
        app,
        alice,
        carol,
        bob,
        deleted_post,
        kept_post,
        note: note_id,
        before,
    }
}

#[tokio::test]
async fn deleted_content_leaves_no_trace_in_any_table_and_the_log_keeps_its_events() {
    let w = scenario().await;
    let app = &w.app;
    for (what, needle) in markers() {
        let places = found(&app.pool, &needle).await;
        assert!(
            places.is_empty(),
            "{what} ({needle}) is still in {places:?}"
        );
    }

    // Every event is still there, where it was, with its id, stream,
    // version and type; the erasure only added events.
    let after = envelopes(&app.pool).await;
    let kept: Vec<_> = after
        .iter()
        .filter(|e| w.before.iter().any(|b| b.2 == e.2))
        .cloned()
        .collect();
    assert_eq!(kept, w.before);

    // One ContentErased per deletion, caused by it.
    let events = log(app).await;
    let deletions: Vec<&RecordedEvent> = events
        .iter()
        .filter(|e| {
            matches!(
                e.event_type.as_str(),
                "PostDeleted" | "RemotePostDeleted" | "RemoteActorDeleted" | "ActorDeleted"
            )
        })
        .collect();
    assert_eq!(
        deletions.len(),
        4,
        "{:?}",
        deletions.iter().map(|e| &e.event_type).collect::<Vec<_>>()
    );
    for deletion in deletions {
        let erased: Vec<ContentErased> = events
            .iter()
            .filter(|e| e.metadata.causation_id == Some(deletion.id))
            .filter_map(|e| match DomainEvent::from_recorded(e) {
                Ok(Some(DomainEvent::ContentErased(erased))) => Some(erased),
                _ => None,
            })
            .collect();
        assert_eq!(erased.len(), 1, "{} was erased once", deletion.event_type);
        assert!(!erased[0].redacted.is_empty(), "{:?}", erased[0]);
        assert_eq!(erased[0].deletion, deletion.id);
        // Each redacted event says so, and still decodes.
        for id in &erased[0].redacted {
            let event = events
                .iter()
                .find(|e| e.id == *id)
                .unwrap_or_else(|| panic!("{id} is in the log"));
            assert!(
                chorus_domain::erasure::is_redacted(&event.metadata),
                "{event:?}"
            );
            DomainEvent::from_recorded(event).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let bob_erased = events
        .iter()
        .filter_map(|e| match DomainEvent::from_recorded(e) {
            Ok(Some(DomainEvent::ContentErased(erased))) if erased.subject == w.bob.uri => {
                Some(erased)
            }
            _ => None,
        })
        .next()
        .unwrap_or_else(|| panic!("bob was erased"));
    assert!(bob_erased.posts.contains(&w.note), "{bob_erased:?}");

    // The deleted account is gone from the read models.
    for (table, column) in [
        ("follows", "follower"),
        ("favorites", "actor"),
        ("reblogs", "actor"),
        ("blocks", "blocker"),
        ("home_timeline", "owner"),
        ("notifications", "actor"),
    ] {
        let rows: i64 =
            sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE {column} = $1"))
                .bind(&w.carol.uri)
                .fetch_one(&app.pool)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows, 0, "{table} still has carol");
    }
    // What was not deleted stays.
    let kept = app
        .ok(
            Some(&w.alice.token),
            "query($id: ID!) { post(id: $id) { content } }",
            json!({ "id": w.kept_post }),
        )
        .await;
    assert_eq!(kept["post"]["content"], "<p>still here</p>", "{kept}");
    let (status, _) = app
        .activitypub(&format!("{}/posts/{}", app.base_url, w.deleted_post))
        .await;
    assert_eq!(status, 410);

    // Erasing again (from the start of the log) appends and changes nothing.
    let events_before = log(app).await.len();
    let payloads_before: Vec<(uuid::Uuid, String, String)> = payloads(&app.pool).await;
    sqlx::query("DELETE FROM subscriber_checkpoints WHERE subscriber = 'erasure'")
        .execute(&app.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let again = Erasure::start(
        app.store.clone(),
        Arc::new(app.delivery.planner.clone()),
        ErasureOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(again.reached(last_committed(&app.pool).await, WAIT).await);
    drop(again);
    assert_eq!(log(app).await.len(), events_before);
    assert_eq!(payloads(&app.pool).await, payloads_before);
}

async fn payloads(pool: &PgPool) -> Vec<(uuid::Uuid, String, String)> {
    sqlx::query_as("SELECT event_id, payload::text, metadata::text FROM events ORDER BY event_id")
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The posts read model, in a stable order.
async fn posts_dump(pool: &PgPool) -> (String, String) {
    let posts: String =
        sqlx::query_scalar("SELECT coalesce(json_agg(p ORDER BY uri), '[]')::text FROM posts p")
            .fetch_one(pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    let edits: String = sqlx::query_scalar(
        "SELECT coalesce(json_agg(e ORDER BY post_uri, version), '[]')::text FROM post_edits e",
    )
    .fetch_one(pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    (posts, edits)
}

#[tokio::test]
async fn a_rebuild_from_the_redacted_log_equals_the_live_read_model() {
    let w = scenario().await;
    let app = &w.app;
    let live = posts_dump(&app.pool).await;
    // The deleted posts are tombstones without content, live.
    let tombstones: Vec<(String, String)> =
        sqlx::query_as("SELECT uri, content FROM posts WHERE deleted_at IS NOT NULL ORDER BY uri")
            .fetch_all(&app.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(tombstones.len(), 4, "{tombstones:?}");
    assert!(tombstones.iter().all(|(_, content)| content.is_empty()));

    for statement in [
        "DELETE FROM post_edits",
        "DELETE FROM posts",
        "DELETE FROM subscriber_checkpoints WHERE subscriber = 'posts'",
    ] {
        sqlx::query(statement)
            .execute(&app.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let (mut progress, task) = chorus_projections::run(
        app.store.clone(),
        Arc::new(chorus_projections::posts::Posts),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let last = last_committed(&app.pool).await;
    assert!(
        tokio::time::timeout(WAIT, progress.reached(last))
            .await
            .unwrap_or(false),
        "the rebuild did not finish"
    );
    task.abort();
    assert_eq!(posts_dump(&app.pool).await, live);
}

#[tokio::test]
async fn reprocessing_redacted_activities_brings_nothing_back() {
    let w = scenario().await;
    let app = &w.app;
    let before = log(app).await;
    let last = before.last().map(|e| e.position).unwrap_or(Position::START);
    let redacted = before
        .iter()
        .filter(|e| e.event_type == "ActivityReceived")
        .filter(|e| chorus_domain::erasure::is_redacted(&e.metadata))
        .count();
    assert!(redacted >= 5, "the received activities were redacted");

    // The whole log interpreted again, from the start.
    sqlx::query("DELETE FROM subscriber_checkpoints WHERE subscriber = 'interpreter'")
        .execute(&app.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let again = Interpreter::start(
        App::new(app.store.clone(), &app.base_url),
        app.federation.clone(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(again.reached(last, WAIT).await);
    app.settle().await;

    let after = log(app).await;
    // Read again, an applied activity records no second outcome (its
    // meaning is in the log); anything appended is an "erased" outcome.
    let new: Vec<&RecordedEvent> = after.iter().filter(|e| e.position > last).collect();
    for event in &new {
        let Ok(Some(DomainEvent::ActivityNotApplied(ActivityNotApplied {
            outcome, reason, ..
        }))) = DomainEvent::from_recorded(event)
        else {
            panic!("only outcomes are appended, not {}", event.event_type);
        };
        assert_eq!(outcome, chorus_domain::remote::NotApplied::Ignored);
        assert_eq!(reason, ERASED_REASON);
    }
    for (what, needle) in markers() {
        assert!(
            found(&app.pool, &needle).await.is_empty(),
            "{what} came back"
        );
    }
    // The remote post stays a tombstone, bob stays deleted.
    let (status, _) = app.activitypub(&w.note).await;
    assert_ne!(status, 200);
    let live: i64 =
        sqlx::query_scalar("SELECT count(*) FROM posts WHERE author = $1 AND deleted_at IS NULL")
            .bind(&w.bob.uri)
            .fetch_one(&app.pool)
            .await
            .unwrap_or_default();
    assert_eq!(live, 0);
}

#[tokio::test]
async fn the_log_refuses_every_rewrite_but_the_erasure_of_a_payload() {
    let db = test_db().await;
    let store = chorus_postgres::PgEventStore::new(db.pool.clone());
    let stream = chorus_domain::StreamId::new("guard-1").unwrap_or_else(|e| panic!("{e}"));
    let event = chorus_domain::NewEvent::new("Something", 1, &json!({ "text": "secret" }))
        .unwrap_or_else(|e| panic!("{e}"));
    let id = event.id.0;
    store
        .append(
            &stream,
            chorus_domain::ExpectedVersion::NoStream,
            vec![event],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    /// Runs `statements` in one transaction; the error code of the first
    /// that fails, if any.
    async fn run(pool: &PgPool, statements: &[&str], id: uuid::Uuid) -> Option<String> {
        let mut tx = pool.begin().await.unwrap_or_else(|e| panic!("{e}"));
        for statement in statements {
            if let Err(error) = sqlx::query(statement).bind(id).execute(&mut *tx).await {
                return error
                    .as_database_error()
                    .and_then(|e| e.code())
                    .map(|c| c.into_owned());
            }
        }
        tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
        None
    }
    let erasure = "SET LOCAL chorus.erasure = 'on'";
    let redact = "UPDATE events SET payload = '{\"text\": \"\"}',
                  metadata = metadata || '{\"redacted\": {}}' WHERE event_id = $1";
    let refused = Some("42501".to_owned());
    let cases: &[(&[&str], &Option<String>)] = &[
        // Outside the erasure, nothing changes an event.
        (&[redact], &refused),
        (&["DELETE FROM events WHERE event_id = $1"], &refused),
        (&["TRUNCATE events"], &refused),
        (
            &["UPDATE events SET payload = payload WHERE event_id <> $1"],
            &refused,
        ),
        // Inside it, deletes stay refused, and so does anything but the
        // payload and the `redacted` marker, or a rewrite without it.
        (
            &[erasure, "DELETE FROM events WHERE event_id = $1"],
            &refused,
        ),
        (&[erasure, "TRUNCATE events"], &refused),
        (
            &[
                erasure,
                "UPDATE events SET stream_id = 'other', metadata = metadata || '{\"redacted\": {}}' WHERE event_id = $1",
            ],
            &refused,
        ),
        (
            &[
                erasure,
                "UPDATE events SET event_type = 'Other', metadata = metadata || '{\"redacted\": {}}' WHERE event_id = $1",
            ],
            &refused,
        ),
        (
            &[
                erasure,
                "UPDATE events SET recorded_at = now() - interval '1 day', metadata = metadata || '{\"redacted\": {}}' WHERE event_id = $1",
            ],
            &refused,
        ),
        (
            &[
                erasure,
                "UPDATE events SET metadata = metadata || '{\"actor\": \"x\", \"redacted\": {}}' WHERE event_id = $1",
            ],
            &refused,
        ),
        (
            &[
                erasure,
                "UPDATE events SET payload = '{}' WHERE event_id = $1",
            ],
            &refused,
        ),
        // The erasure's own rewrite.
        (&[erasure, redact], &None),
    ];
    for (statements, expected) in cases {
        assert_eq!(
            &run(&db.pool, statements, id).await,
            *expected,
            "{statements:?}"
        );
    }
    let (payload, metadata): (Value, Value) =
        sqlx::query_as("SELECT payload, metadata FROM events WHERE event_id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(payload, json!({ "text": "" }));
    assert!(metadata.get("redacted").is_some());
    // The declaration ends with its transaction.
    assert_eq!(run(&db.pool, &[redact], id).await, refused);
}

#[tokio::test]
async fn a_deleted_account_cannot_sign_in_answers_gone_and_its_delete_is_delivered() {
    let app = spawn_app().await;
    let alice = app.account("alice", false).await;
    let remote = RemoteServer::start().await;
    let sink = Sink::start().await;
    trust_local(&app, &sink, &alice.uri).await;
    let key_id = format!("{}#main-key", alice.uri);
    let bob = remote_follower(&app, &remote, &sink.base_url, "bob").await;
    follow(&app, &bob, &alice.uri, 1).await;
    let post_id = post(&app, &alice.token, "hello", None, None).await;
    app.settle().await;
    let accepts = deliveries(&sink, 2).await;
    assert!(accepts.iter().all(|d| d.verified.is_ok()), "{accepts:?}");
    let actor_id: uuid::Uuid = sqlx::query_scalar("SELECT actor_id FROM actors WHERE uri = $1")
        .bind(&alice.uri)
        .fetch_one(&app.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let deleted = app.ok(Some(&alice.token), DELETE_ACCOUNT, json!({})).await;
    assert_eq!(deleted["deleteAccount"], alice.uri);

    // The token is refused at once.
    let response = app
        .graphql(Some(&alice.token), "{ me { id } }", json!({}))
        .await;
    assert_eq!(
        response["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{response}"
    );
    // The actor and its posts answer 410 with Tombstones.
    let (status, tombstone) = app.activitypub(&alice.uri).await;
    assert_eq!(status, 410);
    assert_eq!(tombstone["type"], "Tombstone");
    assert_eq!(tombstone["formerType"], "Person");
    for url in [
        format!("{}/posts/{post_id}", app.base_url),
        format!("{}/outbox", alice.uri),
        format!("{}/followers", alice.uri),
        format!(
            "{}/.well-known/webfinger?resource=acct:alice@{}",
            app.base_url,
            app.base_url.trim_start_matches("http://")
        ),
    ] {
        let (status, _) = app.activitypub(&url).await;
        assert_eq!(status, 410, "{url}");
    }
    // Bob's server gets the Delete{Person}, signed with alice's key.
    let delivered = deliveries(&sink, 3).await;
    let delete = delivered
        .iter()
        .find(|d| d.body["type"] == "Delete")
        .unwrap_or_else(|| panic!("no Delete: {delivered:?}"));
    assert_eq!(delete.body["object"], alice.uri);
    assert_eq!(delete.body["actor"], alice.uri);
    assert_eq!(delete.verified, Ok(key_id));
    // No Delete of each post: the Delete{Person} stands for them.
    assert_eq!(
        delivered
            .iter()
            .filter(|d| d.body["type"] == "Delete")
            .count(),
        1
    );
    // Once it is delivered, the private key is destroyed; tokens are gone.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM actor_keys WHERE actor_id = $1")
            .bind(actor_id)
            .fetch_one(&app.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if keys == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the key was kept");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tokens: i64 = sqlx::query_scalar("SELECT count(*) FROM api_tokens WHERE actor_id = $1")
        .bind(actor_id)
        .fetch_one(&app.pool)
        .await
        .unwrap_or_default();
    assert_eq!(tokens, 0);
    let follows: i64 = sqlx::query_scalar("SELECT count(*) FROM follows WHERE followee = $1")
        .bind(&alice.uri)
        .fetch_one(&app.pool)
        .await
        .unwrap_or_default();
    assert_eq!(follows, 0);
    // The handle stays taken.
    let again = app.app.create_account("alice", None, false, false).await;
    assert!(again.is_err());
}

#[tokio::test]
async fn only_the_account_itself_or_an_admin_deletes_it() {
    let app = spawn_app().await;
    let dan = app.account("dan", false).await;
    let erin = app.account("erin", false).await;
    let admin = app
        .app
        .create_account("moderator", None, false, true)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let check = |token: Option<String>, handle: Option<&'static str>, expected: &'static str| {
        let app = &app;
        async move {
            let code = app
                .error_code(token.as_deref(), DELETE_ACCOUNT, json!({ "h": handle }))
                .await;
            assert_eq!(code, expected, "{handle:?}");
        }
    };
    check(None, Some("erin"), "UNAUTHENTICATED").await;
    check(Some(dan.token.clone()), Some("erin"), "FORBIDDEN").await;
    check(
        Some(admin.token.secret.clone()),
        Some("nobody"),
        "NOT_FOUND",
    )
    .await;
    check(
        Some(admin.token.secret.clone()),
        Some("not a handle"),
        "NOT_FOUND",
    )
    .await;
    let deleted = app
        .ok(
            Some(&admin.token.secret),
            DELETE_ACCOUNT,
            json!({ "h": "erin" }),
        )
        .await;
    assert_eq!(deleted["deleteAccount"], erin.uri);
    check(Some(admin.token.secret.clone()), Some("erin"), "DELETED").await;
    check(Some(erin.token.clone()), None, "UNAUTHENTICATED").await;
    // Dan could still act; erin's posts can no longer be acted on.
    app.ok(Some(&dan.token), "{ me { id } }", json!({})).await;
}

#[tokio::test]
async fn content_that_comes_again_after_its_deletion_is_erased_when_it_arrives() {
    let app = spawn_app().await;
    app.account("alice", false).await;
    let remote = RemoteServer::start().await;
    let bob = remote.actor("bob", 0, KeyStyle::Fragment);
    let create = |n: u32, content: &str| {
        json!({
            "@context": "https://www.w3.org/ns/activitystreams",
            "id": format!("{}/activities/create-{n}", remote.base_url),
            "type": "Create",
            "actor": bob.uri,
            "to": ["https://www.w3.org/ns/activitystreams#Public"],
            "object": note(&remote, &bob, 1, content),
        })
    };
    let note_id = format!("{}/objects/notes/1", remote.base_url);
    accepted(&app, &bob, &create(1, "<p>first</p>")).await;
    accepted(
        &app,
        &bob,
        &json!({
            "@context": "https://www.w3.org/ns/activitystreams",
            "id": format!("{note_id}/delete"),
            "type": "Delete",
            "actor": bob.uri,
            "object": note_id,
        }),
    )
    .await;
    // The same note again, in another activity (a late retry): stored,
    // refused as deleted, and erased.
    let late = marker("late");
    accepted(&app, &bob, &create(2, &format!("<p>{late}</p>"))).await;
    app.settle().await;
    assert!(
        found(&app.pool, &late).await.is_empty(),
        "{:?}",
        found(&app.pool, &late).await
    );
    let events = log(&app).await;
    let received = events
        .iter()
        .find(|e| {
            e.id == chorus_domain::remote::received_event_id(&format!(
                "{}/activities/create-2",
                remote.base_url
            ))
        })
        .unwrap_or_else(|| panic!("the late Create is stored"));
    assert!(chorus_domain::erasure::is_redacted(&received.metadata));
    let erased: Vec<ContentErased> = events
        .iter()
        .filter(|e| e.metadata.causation_id == Some(received.id))
        .filter_map(|e| match DomainEvent::from_recorded(e) {
            Ok(Some(DomainEvent::ContentErased(erased))) => Some(erased),
            _ => None,
        })
        .collect();
    assert_eq!(erased.len(), 1, "{erased:?}");
    assert_eq!(erased[0].subject, note_id);
    assert_eq!(erased[0].redacted, [received.id]);
}
