//! Auditing, replaying and redelivering through the GraphQL admin API.

use std::time::Duration;

use chorus_domain::Position;
use chorus_tests::app::{TestApp, last_committed, spawn_app};
use chorus_tests::history::{admin, post, read_models};
use chorus_tests::remote::{KeyStyle, RemoteServer, deliver};
use serde_json::json;

const AUDIT: &str = "query($k: AuditKind!, $s: String!, $o: String) {
    audit(kind: $k, subject: $s, object: $o) {
        event { eventType actor remoteHost signature payload }
        causes { eventType actor remoteHost receivedAt signature }
    }
}";

async fn accepts(remote: &RemoteServer, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = remote
            .received()
            .iter()
            .filter(|(_, _, body)| body["type"] == "Accept")
            .count();
        if got >= n {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let got = remote
                .received()
                .iter()
                .filter(|(_, _, body)| body["type"] == "Accept")
                .count();
            assert_eq!(got, n, "{:?}", remote.received());
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{got} of {n} Accepts arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn checkpoint(app: &TestApp, name: &str) -> Option<String> {
    sqlx::query_scalar(
        "SELECT position_major || '.' || position_minor FROM subscriber_checkpoints WHERE subscriber = $1",
    )
    .bind(name)
    .fetch_optional(&app.pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn rows_are_audited_back_to_their_request_subscribers_replayed_and_activities_redelivered() {
    let app = spawn_app().await;
    let root = admin(&app).await;
    let alice = app.account("alice", false).await;
    let bob = app.account("bob", false).await;
    let remote = RemoteServer::start().await;
    let carol = remote.actor("carol", 0, KeyStyle::Fragment);
    let follow = json!({"@context": "https://www.w3.org/ns/activitystreams",
        "id": format!("{}/follows/1", carol.uri), "type": "Follow", "actor": carol.uri, "object": alice.uri});
    let (status, body) = deliver(
        &app.client,
        &carol,
        &format!("{}/inbox", app.base_url),
        &follow,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    app.settle().await;
    accepts(&remote, 1).await;

    // The follow: asked for by a signed inbound request, accepted because
    // alice's account is not locked.
    let audit = app
        .ok(
            Some(&root.token),
            AUDIT,
            json!({ "k": "FOLLOW", "s": carol.uri, "o": alice.uri }),
        )
        .await["audit"]
        .clone();
    let entries = audit.as_array().cloned().unwrap_or_default();
    let types: Vec<&str> = entries
        .iter()
        .map(|e| e["event"]["eventType"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(types, ["FollowRequested", "FollowAccepted"], "{audit}");
    let host = remote.host().to_owned();
    for entry in &entries {
        let cause = &entry["causes"][0];
        assert_eq!(cause["eventType"], "ActivityReceived", "{entry}");
        assert_eq!(cause["remoteHost"], host.as_str());
        assert!(cause["receivedAt"].is_string());
        assert_eq!(cause["signature"]["verdict"], "verified");
        assert_eq!(cause["signature"]["signer"], carol.uri.as_str());
    }
    // A local favorite: the GraphQL mutation's own event, by its actor.
    let note = post(&app, &bob, "hi").await;
    app.ok(
        Some(&alice.token),
        "mutation($p: ID!) { favorite(post: $p) { id } }",
        json!({ "p": note }),
    )
    .await;
    let note_uri = format!("{}/posts/{note}", app.base_url);
    let audit = app
        .ok(
            Some(&root.token),
            AUDIT,
            json!({ "k": "FAVORITE", "s": alice.uri, "o": note_uri }),
        )
        .await["audit"]
        .clone();
    assert_eq!(audit[0]["event"]["eventType"], "Favorited", "{audit}");
    assert_eq!(audit[0]["event"]["actor"], alice.uri.as_str());
    assert_eq!(audit[0]["causes"], json!([]));
    let audit = app
        .ok(
            Some(&root.token),
            AUDIT,
            json!({ "k": "POST", "s": note_uri }),
        )
        .await["audit"]
        .clone();
    assert_eq!(audit[0]["event"]["eventType"], "PostCreated", "{audit}");
    assert_eq!(
        app.error_code(
            Some(&root.token),
            AUDIT,
            json!({ "k": "BLOCK", "s": alice.uri })
        )
        .await,
        "INVALID_INPUT"
    );
    assert_eq!(
        app.error_code(
            Some(&alice.token),
            AUDIT,
            json!({ "k": "POST", "s": note_uri })
        )
        .await,
        "FORBIDDEN"
    );

    // Replays: a dry run says how much it would see; a replay of a
    // projection changes nothing in the end, and of the planner sends
    // nothing again.
    app.settle().await;
    let before = read_models(&app.pool).await;
    let replay = "mutation($n: String!, $p: String, $dry: Boolean = false) {
        replaySubscriber(name: $n, toPosition: $p, dryRun: $dry) { subscriber from to events applied }
    }";
    let dry = app
        .ok(
            Some(&root.token),
            replay,
            json!({ "n": "follows", "p": "0.0", "dry": true }),
        )
        .await["replaySubscriber"]
        .clone();
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dry["applied"], false);
    assert_eq!(dry["events"].as_i64(), Some(total), "{dry}");
    let at = checkpoint(&app, "follows").await;
    assert_eq!(dry["from"].as_str(), at.as_deref());
    for name in ["follows", "favorites", "deliveries", "interpreter"] {
        let done = app
            .ok(Some(&root.token), replay, json!({ "n": name, "p": "0.0" }))
            .await["replaySubscriber"]
            .clone();
        assert_eq!(done["applied"], true, "{done}");
    }
    // They notice, go back and catch up again.
    let head = last_committed(&app.pool).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while checkpoint(&app, "follows")
        .await
        .and_then(|p| p.parse::<Position>().ok())
        .is_none_or(|p| p < head)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "follows never caught up again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.settle().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    app.settle().await;
    assert_eq!(read_models(&app.pool).await, before);
    accepts(&remote, 1).await;
    assert_eq!(
        app.error_code(
            Some(&root.token),
            replay,
            json!({ "n": "nope", "p": "0.0" })
        )
        .await,
        "NOT_FOUND"
    );
    assert_eq!(
        app.error_code(
            Some(&root.token),
            replay,
            json!({ "n": "follows", "p": "999999999.1" })
        )
        .await,
        "INVALID_INPUT"
    );

    // Redelivery of everything alice sent.
    let redelivered = app
        .ok(
            Some(&root.token),
            "mutation($a: String!) { redeliverActor(actor: $a) { activities deliveries } }",
            json!({ "a": alice.uri }),
        )
        .await["redeliverActor"]
        .clone();
    assert!(
        redelivered["activities"].as_i64().unwrap_or_default() >= 1,
        "{redelivered}"
    );
    accepts(&remote, 2).await;
    assert_eq!(
        app.error_code(
            Some(&root.token),
            "mutation($a: String!) { redeliverActor(actor: $a) { activities } }",
            json!({ "a": carol.uri })
        )
        .await,
        "NOT_FOUND"
    );
    let recorded: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT event_type FROM events WHERE stream_id LIKE 'admin-%' ORDER BY 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(recorded, ["RedeliveryRequested", "SubscriberReplayed"]);
}
