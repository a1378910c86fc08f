//! Reprocessing inbound history through the GraphQL admin API: activities
//! stored as unsupported by older code are interpreted with today's, what
//! they would send is held until an admin releases it, and doing it again
//! changes nothing.

use std::time::Duration;

use chorus_domain::remote::{ActivityNotApplied, NotApplied, received_stream};
use chorus_domain::{DomainEvent, EventId, EventStore, ExpectedVersion, Metadata, Position};
use chorus_postgres::checkpoints;
use chorus_tests::app::{TestApp, last_committed, spawn_app_without_interpreter};
use chorus_tests::history::{admin, post};
use chorus_tests::remote::{KeyStyle, RemoteServer, deliver};
use serde_json::{Value, json};

const RUN: &str = "id requestedBy selected finished activities applied unchanged notApplied failed
    held { eventType activityType actor recipients } releasedAt";

/// Records what older code made of every stored activity: "unsupported",
/// exactly as the interpreter records an outcome.
async fn older_code_did_not_support(app: &TestApp) {
    let events = app
        .store
        .read_all(Position::START, 10_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for event in events.iter().filter(|e| e.event_type == "ActivityReceived") {
        let Ok(Some(DomainEvent::ActivityReceived(received))) = DomainEvent::from_recorded(event)
        else {
            panic!("unreadable received activity");
        };
        let stream = received_stream(&received.activity_id);
        let outcome = DomainEvent::ActivityNotApplied(ActivityNotApplied {
            activity_id: received.activity_id.clone(),
            activity_type: received.activity_type.clone(),
            outcome: NotApplied::Unsupported,
            reason: format!("{} is not supported yet", received.activity_type),
        })
        .to_new_event()
        .unwrap_or_else(|e| panic!("{e}"))
        .with_id(EventId::derived(event.id, &format!("{stream}#outcome")))
        .with_metadata(Metadata::caused_by(event));
        app.store
            .append(&stream, ExpectedVersion::Any, vec![outcome])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

async fn finished(app: &TestApp, token: &str, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let run = app
            .ok(
                Some(token),
                &format!("query($id: UUID!) {{ reprocessing(id: $id) {{ {RUN} }} }}"),
                json!({ "id": id }),
            )
            .await["reprocessing"]
            .clone();
        if run["finished"] == true {
            app.settle().await;
            return run;
        }
        assert!(tokio::time::Instant::now() < deadline, "{run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn reprocess(app: &TestApp, token: &str, selection: Value) -> Value {
    let started = app
        .ok(
            Some(token),
            &format!(
                "mutation($s: InboundSelectionInput!) {{ reprocessInbound(selection: $s) {{ {RUN} }} }}"
            ),
            json!({ "s": selection }),
        )
        .await["reprocessInbound"]
        .clone();
    finished(app, token, started["id"].as_str().unwrap_or_default()).await
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&app.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn activities_stored_as_unsupported_are_applied_by_reprocessing_and_their_effects_held() {
    let mut app = spawn_app_without_interpreter().await;
    let root = admin(&app).await;
    let alice = app.account("alice", false).await;
    let note = post(&app, &alice, "hello").await;
    let note_uri: String = sqlx::query_scalar("SELECT uri FROM posts WHERE post_id = $1::uuid")
        .bind(&note)
        .fetch_one(&app.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let remote = RemoteServer::start().await;
    let carol = remote.actor("carol", 0, KeyStyle::Fragment);
    let inbox = format!("{}/users/alice/inbox", app.base_url);
    for activity in [
        json!({"@context": "https://www.w3.org/ns/activitystreams", "id": format!("{}/follows/1", carol.uri),
               "type": "Follow", "actor": carol.uri, "object": alice.uri}),
        json!({"@context": "https://www.w3.org/ns/activitystreams", "id": format!("{}/likes/1", carol.uri),
               "type": "Like", "actor": carol.uri, "object": note_uri}),
        json!({"@context": "https://www.w3.org/ns/activitystreams", "id": format!("{}/flags/1", carol.uri),
               "type": "Flag", "actor": carol.uri, "object": alice.uri, "content": "spam"}),
    ] {
        let (status, body) = deliver(&app.client, &carol, &inbox, &activity).await;
        assert_eq!(status, 202, "{body}");
    }
    // Reads of the log stop below the cluster's oldest running transaction:
    // wait until the received activities are readable.
    app.settle().await;
    older_code_did_not_support(&app).await;
    // The newer code starts after what the older one did.
    checkpoints::save(&app.pool, "interpreter", last_committed(&app.pool).await)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    app.start_interpreter().await;
    app.settle().await;
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM received_activities WHERE outcome = 'unsupported'"
        )
        .await,
        3
    );
    assert_eq!(count(&app, "SELECT count(*) FROM follows").await, 0);

    // A dry run says what it would take.
    let preview = app
        .ok(
            Some(&root.token),
            "{ reprocessPreview(selection: { outcome: \"unsupported\" }) { activities byType { activityType activities } } }",
            json!({}),
        )
        .await;
    assert_eq!(preview["reprocessPreview"]["activities"], 3);
    assert_eq!(
        preview["reprocessPreview"]["byType"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );

    // Only admins; bad selections are refused.
    assert_eq!(
        app.error_code(
            Some(&alice.token),
            "mutation { reprocessInbound { id } }",
            json!({})
        )
        .await,
        "FORBIDDEN"
    );
    assert_eq!(
        app.error_code(
            Some(&root.token),
            "mutation { reprocessInbound(selection: { outcome: \"odd\" }) { id } }",
            json!({})
        )
        .await,
        "INVALID_INPUT"
    );
    assert_eq!(
        app.error_code(
            Some(&root.token),
            "mutation { reprocessInbound(selection: { after: \"x\" }) { id } }",
            json!({})
        )
        .await,
        "INVALID_INPUT"
    );

    let run = reprocess(&app, &root.token, json!({ "outcome": "unsupported" })).await;
    assert_eq!(run["requestedBy"], root.uri.as_str());
    assert_eq!(
        (
            run["activities"].as_i64(),
            run["applied"].as_i64(),
            run["unchanged"].as_i64()
        ),
        (Some(3), Some(2), Some(1)),
        "{run}"
    );
    assert_eq!(run["failed"], 0);
    // The follow and the favorite are in the read models now.
    let state: String = sqlx::query_scalar("SELECT state FROM follows WHERE follower = $1")
        .bind(&carol.uri)
        .fetch_one(&app.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(state, "accepted");
    assert_eq!(count(&app, "SELECT count(*) FROM favorites").await, 1);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM received_activities WHERE outcome IS NULL"
        )
        .await,
        2
    );
    // The Accept alice owes carol is held, not sent.
    let held = run["held"].as_array().cloned().unwrap_or_default();
    assert_eq!(held.len(), 1, "{run}");
    assert_eq!(held[0]["activityType"], "Accept");
    assert_eq!(held[0]["actor"], alice.uri.as_str());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(remote.received().is_empty(), "{:?}", remote.received());
    assert_eq!(count(&app, "SELECT count(*) FROM delivery_jobs").await, 0);

    // Doing it again appends nothing but its own record.
    let events = count(
        &app,
        "SELECT count(*) FROM events WHERE stream_id NOT LIKE 'admin-%'",
    )
    .await;
    let again = reprocess(&app, &root.token, json!({})).await;
    assert_eq!(
        (again["activities"].as_i64(), again["unchanged"].as_i64()),
        (Some(3), Some(3)),
        "{again}"
    );
    assert_eq!(again["held"].as_array().map(Vec::len), Some(0));
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM events WHERE stream_id NOT LIKE 'admin-%'"
        )
        .await,
        events
    );

    // Released, the Accept is sent, once.
    let id = run["id"].as_str().unwrap_or_default();
    let released = app
        .ok(
            Some(&root.token),
            &format!("mutation($id: UUID!) {{ releaseReprocessedEffects(id: $id) {{ {RUN} }} }}"),
            json!({ "id": id }),
        )
        .await;
    assert!(released["releaseReprocessedEffects"]["releasedAt"].is_string());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while remote.received().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Accept never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = remote.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].2["type"], "Accept");
    assert_eq!(
        received[0].2["object"]["id"],
        format!("{}/follows/1", carol.uri).as_str()
    );
    assert_eq!(
        app.error_code(
            Some(&root.token),
            "mutation($id: UUID!) { releaseReprocessedEffects(id: $id) { id } }",
            json!({ "id": id })
        )
        .await,
        "ALREADY_RELEASED"
    );
    assert_eq!(
        app.error_code(
            Some(&root.token),
            "mutation($id: UUID!) { releaseReprocessedEffects(id: $id) { id } }",
            json!({ "id": again["id"] })
        )
        .await,
        "NOTHING_HELD"
    );
    // Every admin action is in the log.
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE stream_id LIKE 'admin-%' ORDER BY transaction_id, seq",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        actions,
        [
            "InboundReprocessingRequested",
            "InboundReprocessed",
            "InboundReprocessingRequested",
            "InboundReprocessed",
            "ReprocessedEffectsReleased"
        ]
    );
}
