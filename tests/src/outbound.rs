//! Helpers for delivery tests: remote followers whose inbox is a [`Sink`],
//! and waiting for deliveries to arrive.

use std::time::Duration;

use serde_json::{Value, json};

use crate::app::TestApp;
use crate::remote::{KeyStyle, RemoteActor, RemoteServer, deliver};
use crate::sink::{Delivery, Sink};

/// A remote actor of `remote` whose personal inbox is on the server at
/// `inbox_base` (a [`Sink`] or another test server; no shared inbox):
/// announced to Chorus by a signed Update{Person}, as a remote server does
/// when a profile changes.
pub async fn remote_follower(
    app: &TestApp,
    remote: &RemoteServer,
    inbox_base: &str,
    name: &str,
) -> RemoteActor {
    let actor = remote.actor(name, 0, KeyStyle::Fragment);
    let mut document = RemoteServer::document(&actor);
    document["inbox"] = json!(format!("{inbox_base}/users/{name}/inbox"));
    if let Some(endpoints) = document.get_mut("endpoints").and_then(Value::as_object_mut) {
        endpoints.remove("sharedInbox");
    }
    let update = json!({
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": format!("{}/activities/update-{name}", remote.base_url),
        "type": "Update",
        "actor": actor.uri,
        "object": document,
    });
    accepted(app, &actor, &update).await;
    actor
}

/// `actor` follows the local actor `local` (accepted at once if unlocked).
pub async fn follow(app: &TestApp, actor: &RemoteActor, local: &str, n: u32) -> Value {
    let follow = json!({
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": format!("{}#follow-{n}", actor.uri),
        "type": "Follow",
        "actor": actor.uri,
        "object": local,
    });
    accepted(app, actor, &follow).await;
    follow
}

/// Delivers `activity` signed by `actor` to the shared inbox, expects 202,
/// and waits until it is applied.
pub async fn accepted(app: &TestApp, actor: &RemoteActor, activity: &Value) {
    let inbox = format!("{}/inbox", app.base_url);
    let (status, body) = deliver(&app.client, actor, &inbox, activity).await;
    assert_eq!(status, 202, "{body}");
    app.settle().await;
}

/// Serves `router` on a random port of 127.0.0.1; returns its base URL.
pub async fn listen(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("cannot bind: {e}"));
    let address = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("no local address: {e}"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{address}")
}

/// Waits until the sink has `n` deliveries (or fails after ten seconds).
pub async fn deliveries(sink: &Sink, n: usize) -> Vec<Delivery> {
    deliveries_within(sink, n, Duration::from_secs(10)).await
}

/// Waits until the sink has `n` deliveries, or fails after `within`.
pub async fn deliveries_within(sink: &Sink, n: usize, within: Duration) -> Vec<Delivery> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let got = sink.deliveries();
        if got.len() >= n {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {n} deliveries, got {}: {:?}",
            got.len(),
            got.iter().map(|d| &d.body["type"]).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Makes the sink trust the local actor's key, as its actor document
/// publishes it.
pub async fn trust_local(app: &TestApp, sink: &Sink, actor: &str) {
    let (key_id, pem): (String, String) =
        sqlx::query_as("SELECT key_id, public_key_pem FROM actors WHERE uri = $1")
            .bind(actor)
            .fetch_one(&app.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    sink.trust(&key_id, &pem);
}
