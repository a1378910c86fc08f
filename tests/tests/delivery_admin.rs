//! The delivery queue as admins see it through GraphQL: pending, failing
//! hosts and dead jobs, and the actions on them (retry a host, redeliver,
//! trust, purge), each checked against what a remote inbox receives.

use chorus_tests::app::{TestApp, spawn_app};
use chorus_tests::outbound::{deliveries, follow, remote_follower, trust_local};
use chorus_tests::remote::RemoteServer;
use chorus_tests::sink::Sink;
use serde_json::{Value, json};

const QUEUE: &str = "query($state: DeliveryState, $host: String) {
    deliveries {
        summary { pending due delivered dead }
        jobs(state: $state, host: $host) {
            id activityId activityType actor inbox host state attempts lastStatus lastError
            createdAt updatedAt nextAttemptAt finishedAt
        }
        failingHosts { host trusted consecutiveFailures failingSince lastError pending }
        trustedHosts { host }
    }
}";

/// A local admin's token.
async fn admin(app: &TestApp) -> String {
    let created = app
        .app
        .create_account("operator", None, false, true)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    app.settle().await;
    created.token.secret
}

async fn queue(app: &TestApp, token: &str, state: Option<&str>) -> Value {
    app.ok(Some(token), QUEUE, json!({ "state": state }))
        .await
        .get("deliveries")
        .cloned()
        .unwrap_or_default()
}

/// Polls the queue until `done` holds (ten seconds at most).
async fn queue_until(app: &TestApp, token: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let queue = queue(app, token, None).await;
        if done(&queue) {
            return queue;
        }
        assert!(tokio::time::Instant::now() < deadline, "{queue:#}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn admins_see_failures_retry_a_host_redeliver_and_purge() {
    let app = spawn_app().await;
    let root = admin(&app).await;
    let alice = app.account("alice", false).await;
    let remote = RemoteServer::start().await;
    let sink = Sink::start().await;
    let other = Sink::start().await;
    trust_local(&app, &sink, &alice.uri).await;
    trust_local(&app, &other, &alice.uri).await;
    let bob = remote_follower(&app, &remote, &sink.base_url, "bob").await;
    let host = sink.base_url.trim_start_matches("http://").to_owned();

    // The automatic Accept meets a server error: the job waits for a retry.
    sink.fail(500, 1);
    follow(&app, &bob, &alice.uri, 1).await;
    deliveries(&sink, 1).await;
    let q = queue_until(&app, &root, |q| q["summary"]["pending"] == 1).await;
    assert_eq!(q["summary"]["due"], 0, "the retry is not due yet: {q:#}");
    let job = &q["jobs"][0];
    assert_eq!(job["activityType"], "Accept");
    assert_eq!(job["actor"], alice.uri.as_str());
    assert_eq!(job["inbox"], format!("{}/users/bob/inbox", sink.base_url));
    assert_eq!(job["host"], host.as_str());
    assert_eq!(job["state"], "PENDING");
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["lastStatus"], 500);
    assert!(
        job["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 500")),
        "{job}"
    );
    assert!(job["nextAttemptAt"].as_str() > job["updatedAt"].as_str());
    assert_eq!(job["finishedAt"], Value::Null);
    let failing = &q["failingHosts"][0];
    assert_eq!(failing["host"], host.as_str());
    assert_eq!(failing["consecutiveFailures"], 1);
    assert_eq!(failing["pending"], 1);
    let accept_id = job["activityId"].as_str().unwrap_or_default().to_owned();

    // Retrying the host sends it now, and the host is healthy again.
    let due = app
        .ok(
            Some(&root),
            "mutation($host: String!) { retryDeliveryHost(host: $host) }",
            json!({ "host": host }),
        )
        .await;
    assert_eq!(due["retryDeliveryHost"], 1);
    let got = deliveries(&sink, 2).await;
    assert_eq!(got[1].body["id"], accept_id.as_str());
    assert!(got[1].verified.is_ok(), "{:?}", got[1].verified);
    let q = queue_until(&app, &root, |q| q["summary"]["delivered"] == 1).await;
    assert_eq!(q["summary"]["pending"], 0);
    assert_eq!(q["failingHosts"], json!([]));
    assert_eq!(q["jobs"][0]["state"], "DELIVERED");
    assert_eq!(q["jobs"][0]["attempts"], 2);

    // Redelivered to every inbox it was planned for, then to one more.
    let redeliver = "mutation($id: String!, $inbox: String) {
        redeliver(activityId: $id, inbox: $inbox)
    }";
    let queued = app
        .ok(Some(&root), redeliver, json!({ "id": accept_id }))
        .await;
    assert_eq!(queued["redeliver"], 1);
    let got = deliveries(&sink, 3).await;
    assert_eq!(got[2].body, got[1].body, "the very same activity");
    let elsewhere = format!("{}/inbox", other.base_url);
    let queued = app
        .ok(
            Some(&root),
            redeliver,
            json!({ "id": accept_id, "inbox": elsewhere }),
        )
        .await;
    assert_eq!(queued["redeliver"], 1);
    let got = deliveries(&other, 1).await;
    assert_eq!(got[0].path, "/inbox");
    assert_eq!(got[0].body["id"], accept_id.as_str());
    assert!(got[0].verified.is_ok(), "{:?}", got[0].verified);

    // A refusal for good: the job is dead at once, visible, then purged.
    sink.fail(403, 1);
    app.ok(
        Some(&alice.token),
        "mutation { createPost(input: { text: \"hello\" }) { uri } }",
        json!({}),
    )
    .await;
    deliveries(&sink, 4).await;
    queue_until(&app, &root, |q| q["summary"]["dead"] == 1).await;
    let dead = queue(&app, &root, Some("DEAD")).await;
    assert_eq!(dead["jobs"].as_array().map(Vec::len), Some(1));
    assert_eq!(dead["jobs"][0]["activityType"], "Create");
    assert_eq!(dead["jobs"][0]["lastStatus"], 403);
    assert!(dead["jobs"][0]["finishedAt"].is_string());
    let purged = app
        .ok(
            Some(&root),
            "mutation { purgeDeliveries(state: DEAD) }",
            json!({}),
        )
        .await;
    assert_eq!(purged["purgeDeliveries"], 1);
    let q = queue(&app, &root, None).await;
    assert_eq!(q["summary"]["dead"], 0);
    assert_eq!(q["summary"]["delivered"], 2, "{q:#}");

    // Trusted hosts are listed.
    let trusted = app
        .ok(
            Some(&root),
            "mutation($host: String!) {
                setDeliveryHostTrusted(host: $host, trusted: true) { host trusted }
            }",
            json!({ "host": host.to_uppercase() }),
        )
        .await;
    assert_eq!(
        trusted["setDeliveryHostTrusted"],
        json!({ "host": host, "trusted": true })
    );
    let q = queue(&app, &root, None).await;
    assert_eq!(q["trustedHosts"], json!([{ "host": host }]));
}

#[tokio::test]
async fn the_queue_is_for_admins_only_and_bad_input_is_refused() {
    let app = spawn_app().await;
    let root = admin(&app).await;
    let alice = app.account("alice", false).await;

    assert_eq!(
        app.error_code(Some(&alice.token), QUEUE, json!({})).await,
        "FORBIDDEN"
    );
    assert_eq!(
        app.error_code(None, QUEUE, json!({})).await,
        "UNAUTHENTICATED"
    );
    for mutation in [
        "mutation { redeliver(activityId: \"https://x.example/a\") }",
        "mutation { retryDeliveryHost(host: \"x.example\") }",
        "mutation { purgeDeliveries(state: DEAD) }",
        "mutation { setDeliveryHostTrusted(host: \"x.example\", trusted: true) { host } }",
    ] {
        assert_eq!(
            app.error_code(Some(&alice.token), mutation, json!({}))
                .await,
            "FORBIDDEN",
            "{mutation}"
        );
    }

    assert_eq!(
        app.error_code(
            Some(&root),
            "mutation { redeliver(activityId: \"https://nowhere.example/a\") }",
            json!({})
        )
        .await,
        "NOT_FOUND"
    );
    for host in ["", "https://x.example/", "x.example/path", "user@x.example"] {
        assert_eq!(
            app.error_code(
                Some(&root),
                "mutation($host: String!) { retryDeliveryHost(host: $host) }",
                json!({ "host": host })
            )
            .await,
            "INVALID_INPUT",
            "{host:?}"
        );
    }
    let q = queue(&app, &root, None).await;
    assert_eq!(
        q["summary"],
        json!({ "pending": 0, "due": 0, "delivered": 0, "dead": 0 })
    );
    assert_eq!(q["trustedHosts"], json!([]));
}
