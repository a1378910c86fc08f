//! Rebuilding read models through the GraphQL admin API, while the server
//! serves: the rebuilt read models equal the live ones, nothing is sent, and
//! the request and its outcome are recorded in the log.

use std::time::Duration;

use chorus_tests::app::{TestApp, spawn_app};
use chorus_tests::history::{admin, post, read_models, some_history};
use serde_json::{Value, json};

const REBUILD_FIELDS: &str = "id projection state requestedBy eventsDone eventsTotal eventsPerSecond etaSeconds startedAt finishedAt error";

async fn wait_swapped(app: &TestApp, token: &str, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let data = app
            .ok(
                Some(token),
                &format!("query($id: UUID!) {{ rebuild(id: $id) {{ {REBUILD_FIELDS} }} }}"),
                json!({ "id": id }),
            )
            .await;
        let rebuild = data["rebuild"].clone();
        match rebuild["state"].as_str() {
            Some("SWAPPED") => return rebuild,
            Some("FAILED") => panic!("rebuild failed: {rebuild}"),
            _ => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rebuild never ended: {rebuild}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_read_model_rebuilt_through_graphql_equals_the_live_one_and_is_recorded() {
    let app = spawn_app().await;
    let root = admin(&app).await;
    let (alice, ..) = some_history(&app).await;
    let before = read_models(&app.pool).await;
    assert!(before.len() > 30, "too little history to compare");
    let jobs_before: i64 = sqlx::query_scalar("SELECT count(*) FROM delivery_jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // Only admins.
    assert_eq!(
        app.error_code(
            Some(&alice.token),
            "mutation { rebuildAllProjections { id } }",
            json!({})
        )
        .await,
        "FORBIDDEN"
    );
    assert_eq!(
        app.error_code(None, "{ projections { name } }", json!({}))
            .await,
        "UNAUTHENTICATED"
    );
    assert_eq!(
        app.error_code(
            Some(&root.token),
            "mutation { rebuildProjection(name: \"nope\") { id } }",
            json!({})
        )
        .await,
        "NOT_FOUND"
    );

    let started = app
        .ok(
            Some(&root.token),
            &format!("mutation {{ rebuildAllProjections {{ {REBUILD_FIELDS} }} }}"),
            json!({}),
        )
        .await;
    let started = started["rebuildAllProjections"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(started.len(), chorus_projections::all().len());
    for rebuild in &started {
        assert_eq!(rebuild["requestedBy"], root.uri.as_str());
        let done = wait_swapped(
            &app,
            &root.token,
            rebuild["id"].as_str().unwrap_or_default(),
        )
        .await;
        assert!(done["finishedAt"].is_string());
        assert!(
            done["eventsDone"].as_i64().unwrap_or_default()
                >= done["eventsTotal"].as_i64().unwrap_or(1).min(1)
        );
    }
    app.settle().await;
    assert_eq!(
        read_models(&app.pool).await,
        before,
        "the rebuilt read models differ"
    );

    // The server carries on over the new tables.
    let later = post(&app, &alice, "after the rebuild").await;
    app.settle().await;
    let seen = app
        .ok(
            Some(&alice.token),
            "query($id: ID!) { post(id: $id) { id } }",
            json!({ "id": later }),
        )
        .await;
    assert_eq!(seen["post"]["id"], later.as_str());

    // Nothing was sent again; the request and its outcome are in the log.
    let jobs_after: i64 = sqlx::query_scalar("SELECT count(*) FROM delivery_jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(jobs_after, jobs_before);
    let recorded: Vec<(String, String)> = sqlx::query_as(
        "SELECT event_type, coalesce(metadata->>'actor', '') FROM events
         WHERE stream_id LIKE 'admin-%' ORDER BY transaction_id, seq",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let n = chorus_projections::all().len();
    assert_eq!(recorded.len(), 2 * n, "{recorded:?}");
    assert!(
        recorded[..n]
            .iter()
            .all(|(t, a)| t == "ProjectionRebuildRequested" && *a == root.uri)
    );
    assert!(
        recorded[n..]
            .iter()
            .all(|(t, _)| t == "ProjectionRebuildFinished")
    );

    // The projections query shows each one caught up, with its rebuild.
    let projections = app
        .ok(
            Some(&root.token),
            "{ projections { name position lagEvents lagSeconds lastRebuild { state } } }",
            json!({}),
        )
        .await;
    for p in projections["projections"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        assert!(p["position"].is_string(), "{p}");
        assert_eq!(p["lastRebuild"]["state"], "SWAPPED", "{p}");
    }
}
