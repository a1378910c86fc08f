//! Delivery end to end: local actions in a real Chorus reach a remote inbox
//! on 127.0.0.1 (a sink that checks every signature), once, from the queue
//! the planner fills from the log.

use std::time::Duration;

use chorus_tests::app::spawn_app;
use chorus_tests::outbound::{deliveries, remote_follower, trust_local};
use chorus_tests::remote::{RemoteServer, deliver};
use chorus_tests::sink::Sink;
use serde_json::json;

#[tokio::test]
async fn the_automatic_accept_and_a_post_reach_a_remote_follower_signed_and_once() {
    let app = spawn_app().await;
    let alice = app.account("alice", false).await;
    let remote = RemoteServer::start().await;
    let sink = Sink::start().await;
    trust_local(&app, &sink, &alice.uri).await;
    let bob = remote_follower(&app, &remote, &sink.base_url, "bob").await;

    let follow = json!({
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": format!("{}/activities/follow-1", remote.base_url),
        "type": "Follow",
        "actor": bob.uri,
        "object": alice.uri,
    });
    let (status, body) = deliver(
        &app.client,
        &bob,
        &format!("{}/inbox", app.base_url),
        &follow,
    )
    .await;
    assert_eq!(status, 202, "{body}");

    // The automatic Accept, from alice, signed with her key.
    let got = deliveries(&sink, 1).await;
    let accept = &got[0];
    assert_eq!(accept.path, "/users/bob/inbox");
    assert_eq!(accept.body["type"], "Accept");
    assert_eq!(accept.body["actor"], alice.uri.as_str());
    assert_eq!(accept.body["object"]["id"], follow["id"]);
    assert_eq!(accept.verified, Ok(format!("{}#main-key", alice.uri)));
    let header = |name: &str| {
        accept
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        header("content-type").as_deref(),
        Some("application/activity+json")
    );
    let signature = header("signature").unwrap_or_default();
    assert!(
        signature.contains(r#"headers="(request-target) host date digest content-type""#),
        "{signature}"
    );

    // A public post goes to her follower.
    app.ok(
        Some(&alice.token),
        "mutation($text: String!) { createPost(input: { text: $text }) { uri } }",
        json!({ "text": "hello fediverse" }),
    )
    .await;
    let got = deliveries(&sink, 2).await;
    let create = &got[1];
    assert_eq!(create.body["type"], "Create");
    assert_eq!(
        create.body["object"]["content"]
            .as_str()
            .map(|c| c.contains("hello fediverse")),
        Some(true)
    );
    assert!(create.verified.is_ok(), "{:?}", create.verified);

    // Each job is recorded as delivered at the first attempt.
    app.settle().await;
    let jobs: Vec<(String, i32, Option<i32>)> =
        sqlx::query_as("SELECT state, attempts, last_status FROM delivery_jobs ORDER BY job_id")
            .fetch_all(&app.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        jobs,
        [
            ("delivered".into(), 1, Some(200)),
            ("delivered".into(), 1, Some(200))
        ]
    );

    // carol follows alice after the post: she gets her Accept, not the
    // post, which was decided before she followed.
    let carol = remote_follower(&app, &remote, &sink.base_url, "carol").await;
    chorus_tests::outbound::follow(&app, &carol, &alice.uri, 1).await;
    let got = deliveries(&sink, 3).await;
    assert_eq!(got[2].body["type"], "Accept");
    assert_eq!(got[2].path, "/users/carol/inbox");
    app.settle().await;

    // Planning everything again from the start of the log (as after losing
    // the checkpoint) queues nothing new and sends nothing again: the post
    // still goes to its followers as of its position, so not to carol.
    sqlx::query("DELETE FROM subscriber_checkpoints WHERE subscriber = 'deliveries'")
        .execute(&app.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let again = chorus_workers::delivery::Planner::start(
        app.store.clone(),
        &app.base_url,
        std::sync::Arc::new(Settled),
        std::sync::Arc::new(tokio::sync::Notify::new()),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let last = chorus_tests::app::last_committed(&app.pool).await;
    assert!(again.reached(last, Duration::from_secs(10)).await);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(sink.deliveries().len(), 3);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM delivery_jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(count, 3);
}

/// Read models already settled by the test.
#[derive(Debug)]
struct Settled;

#[async_trait::async_trait]
impl chorus_workers::delivery::ReadModels for Settled {
    async fn caught_up(&self, _: chorus_domain::Position) {}
}
