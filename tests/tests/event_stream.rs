//! The event log as a stream, for analytics consumers and admins: the
//! GraphQL `events` connection (paging both ways, filters, cursors, who may
//! read it), the subscription over a real WebSocket (catch-up, then live),
//! and `/events.ndjson` (with `follow`), all against real Postgres.

use std::time::Duration;

use chorus_domain::{Position, RecordedEvent};
use chorus_postgres::{Narrowed, PgEventStore};
use chorus_tests::app::{Account, TestApp, spawn_app};
use chorus_tests::history::{admin, post, some_history};
use chorus_tests::remote::{KeyStyle, RemoteServer, deliver};
use chorus_tests::ws::{Socket, receive, send};
use serde_json::{Value, json};

const EVENTS: &str = "query($after: String, $before: String, $first: Int, $last: Int, $filter: EventFilter) {
  events(after: $after, before: $before, first: $first, last: $last, filter: $filter) {
    edges { cursor node { position id stream streamVersion type schemaVersion recordedAt data metadata } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}";

async fn analytics_token(app: &TestApp) -> String {
    chorus_api::tokens::create_analytics(&app.pool, Some("data team"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .secret
}

/// Every event of the log, as the store reads it.
async fn log(app: &TestApp) -> Vec<RecordedEvent> {
    PgEventStore::read_after(&app.pool, Position::START, &Narrowed::default(), 100_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn positions(events: &[RecordedEvent]) -> Vec<String> {
    events.iter().map(|e| e.position.to_string()).collect()
}

/// One page of `events`.
async fn page(app: &TestApp, token: &str, variables: Value) -> Value {
    app.ok(Some(token), EVENTS, variables).await["events"].clone()
}

fn node_positions(page: &Value) -> Vec<String> {
    page["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("no edges: {page}"))
        .iter()
        .map(|e| {
            assert_eq!(e["cursor"], e["node"]["position"]);
            e["cursor"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

/// Every event `filter` selects, read forward `size` at a time.
async fn read_forward(app: &TestApp, token: &str, filter: &Value, size: i32) -> Vec<Value> {
    let mut nodes = Vec::new();
    let mut after = Value::Null;
    loop {
        let page = page(
            app,
            token,
            json!({ "after": after, "first": size, "filter": filter }),
        )
        .await;
        let edges = page["edges"].as_array().cloned().unwrap_or_default();
        assert!(edges.len() <= usize::try_from(size).unwrap_or_default());
        nodes.extend(edges.iter().map(|e| e["node"].clone()));
        if !page["pageInfo"]["hasNextPage"].as_bool().unwrap_or(false) {
            assert_eq!(
                page["pageInfo"]["endCursor"],
                nodes.last().map_or(Value::Null, |n| n["position"].clone())
            );
            return nodes;
        }
        assert_eq!(edges.len(), usize::try_from(size).unwrap_or_default());
        after = page["pageInfo"]["endCursor"].clone();
    }
}

/// A remote actor of another server follows `whom`: events by and about a
/// remote actor and host.
async fn remote_follow(app: &TestApp, whom: &Account) -> (RemoteServer, String) {
    let remote = RemoteServer::start().await;
    let dora = remote.actor("dora", 0, KeyStyle::Fragment);
    let follow = json!({
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": format!("{}/activities/follow-1", remote.base_url),
        "type": "Follow",
        "actor": dora.uri,
        "object": whom.uri,
    });
    let (status, body) = deliver(
        &app.client,
        &dora,
        &format!("{}/users/{}/inbox", app.base_url, whom.handle),
        &follow,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    app.settle().await;
    (remote, dora.uri)
}

#[tokio::test]
async fn the_connection_pages_forward_and_backward_through_the_log() {
    let app = spawn_app().await;
    some_history(&app).await;
    let token = analytics_token(&app).await;
    let all = log(&app).await;
    let expected = positions(&all);
    assert!(expected.len() > 20, "{}", expected.len());

    // Forward, three at a time, to the end.
    let nodes = read_forward(&app, &token, &json!({}), 3).await;
    let got: Vec<String> = nodes
        .iter()
        .map(|n| n["position"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(got, expected);
    // Every field of a node is the stored event's.
    for (node, event) in nodes.iter().zip(&all) {
        assert_eq!(node["id"], json!(event.id.0.to_string()));
        assert_eq!(node["stream"], json!(event.stream_id.as_str()));
        assert_eq!(node["streamVersion"], json!(event.stream_version));
        assert_eq!(node["type"], json!(event.event_type));
        assert_eq!(node["schemaVersion"], json!(event.schema_version));
        assert_eq!(node["recordedAt"], json!(event.recorded_at.to_rfc3339()));
        assert_eq!(node["data"], event.decode::<Value>().unwrap_or_default());
        assert_eq!(
            node["metadata"],
            serde_json::to_value(&event.metadata).unwrap_or_default()
        );
    }

    // The first page has nothing before it; a later one has.
    let first = page(&app, &token, json!({ "first": 5 })).await;
    assert_eq!(node_positions(&first), expected[..5]);
    assert_eq!(first["pageInfo"]["hasPreviousPage"], json!(false));
    assert_eq!(first["pageInfo"]["hasNextPage"], json!(true));
    assert_eq!(first["pageInfo"]["startCursor"], json!(expected[0]));
    let second = page(&app, &token, json!({ "first": 5, "after": expected[4] })).await;
    assert_eq!(node_positions(&second), expected[5..10]);
    assert_eq!(second["pageInfo"]["hasPreviousPage"], json!(true));

    // `last` alone is the newest, in log order.
    let newest = page(&app, &token, json!({ "last": 4 })).await;
    let n = expected.len();
    assert_eq!(node_positions(&newest), expected[n - 4..]);
    assert_eq!(newest["pageInfo"]["hasPreviousPage"], json!(true));
    assert_eq!(newest["pageInfo"]["hasNextPage"], json!(false));

    // Backward from there, four at a time, to the start.
    let mut backward: Vec<String> = Vec::new();
    let mut before = Value::Null;
    loop {
        let page = page(&app, &token, json!({ "last": 4, "before": before })).await;
        let mut got = node_positions(&page);
        got.extend(backward);
        backward = got;
        if !page["pageInfo"]["hasPreviousPage"]
            .as_bool()
            .unwrap_or(false)
        {
            break;
        }
        assert_eq!(page["pageInfo"]["hasNextPage"], json!(!before.is_null()));
        before = page["pageInfo"]["startCursor"].clone();
    }
    assert_eq!(backward, expected);

    // Between two cursors, either way.
    let between = page(
        &app,
        &token,
        json!({ "after": expected[2], "before": expected[9], "first": 100 }),
    )
    .await;
    assert_eq!(node_positions(&between), expected[3..9]);
    assert_eq!(between["pageInfo"]["hasNextPage"], json!(false));
    let between = page(
        &app,
        &token,
        json!({ "after": expected[2], "before": expected[9], "last": 3 }),
    )
    .await;
    assert_eq!(node_positions(&between), expected[6..9]);
    assert_eq!(between["pageInfo"]["hasPreviousPage"], json!(true));
    assert_eq!(between["pageInfo"]["hasNextPage"], json!(true));

    // A cursor stays valid as the log grows: the same page, and more after.
    let later = app.account("dave", false).await;
    post(&app, &later, "after the first read").await;
    app.settle().await;
    let again = page(&app, &token, json!({ "first": 5, "after": expected[4] })).await;
    assert_eq!(node_positions(&again), expected[5..10]);
    let tail = page(
        &app,
        &token,
        json!({ "first": 100, "after": expected[n - 1] }),
    )
    .await;
    assert!(!node_positions(&tail).is_empty());
}

#[tokio::test]
async fn filters_select_in_sql_what_they_say() {
    let app = spawn_app().await;
    let (alice, bob, _carol) = some_history(&app).await;
    let (remote, dora) = remote_follow(&app, &alice).await;
    let token = analytics_token(&app).await;
    let all = log(&app).await;
    let local_host = app.base_url.trim_start_matches("http://").to_owned();
    let remote_host = remote.base_url.trim_start_matches("http://").to_owned();
    let middle = all[all.len() / 2].recorded_at;
    let a_post_stream = all
        .iter()
        .find(|e| e.event_type == "PostEdited")
        .map(|e| e.stream_id.as_str().to_owned())
        .unwrap_or_default();

    let cases: Vec<(Value, Narrowed)> = vec![
        (
            json!({ "types": ["PostCreated", "Favorited"] }),
            Narrowed {
                types: Some(vec!["PostCreated".into(), "Favorited".into()]),
                ..Narrowed::default()
            },
        ),
        (
            json!({ "streams": ["post-"] }),
            Narrowed {
                stream_prefixes: vec!["post-".into()],
                ..Narrowed::default()
            },
        ),
        (
            json!({ "streams": [a_post_stream, "actor-"] }),
            Narrowed {
                streams: vec![a_post_stream.clone()],
                stream_prefixes: vec!["actor-".into()],
                ..Narrowed::default()
            },
        ),
        (
            json!({ "actor": alice.uri }),
            Narrowed {
                actor: Some(alice.uri.clone()),
                ..Narrowed::default()
            },
        ),
        (
            json!({ "actor": dora }),
            Narrowed {
                actor: Some(dora.clone()),
                ..Narrowed::default()
            },
        ),
        (
            json!({ "host": remote_host.to_uppercase() }),
            Narrowed {
                host: Some(remote_host.clone()),
                ..Narrowed::default()
            },
        ),
        (
            json!({ "host": local_host }),
            Narrowed {
                host: Some(local_host.clone()),
                ..Narrowed::default()
            },
        ),
        (
            json!({ "from": middle.to_rfc3339() }),
            Narrowed {
                from: Some(middle),
                ..Narrowed::default()
            },
        ),
        (
            json!({ "to": middle.to_rfc3339() }),
            Narrowed {
                to: Some(middle),
                ..Narrowed::default()
            },
        ),
        (
            json!({ "types": ["PostCreated"], "actor": bob.uri, "streams": ["post-"] }),
            Narrowed {
                types: Some(vec!["PostCreated".into()]),
                actor: Some(bob.uri.clone()),
                stream_prefixes: vec!["post-".into()],
                ..Narrowed::default()
            },
        ),
    ];
    for (filter, narrowed) in cases {
        let expected: Vec<&RecordedEvent> = all.iter().filter(|e| narrowed.matches(e)).collect();
        assert!(!expected.is_empty(), "{filter} selects nothing");
        assert!(expected.len() < all.len(), "{filter} selects everything");
        let nodes = read_forward(&app, &token, &filter, 2).await;
        let got: Vec<&str> = nodes
            .iter()
            .map(|n| n["position"].as_str().unwrap_or_default())
            .collect();
        let want: Vec<String> = expected.iter().map(|e| e.position.to_string()).collect();
        assert_eq!(got, want, "{filter}");
        // Backward, the same events.
        let newest = page(&app, &token, json!({ "last": 100, "filter": filter })).await;
        assert_eq!(node_positions(&newest), want, "{filter}");
    }

    // What the filters mean, on this history.
    let of = |filter: Narrowed| -> Vec<(String, String)> {
        all.iter()
            .filter(|e| filter.matches(e))
            .map(|e| (e.event_type.clone(), e.stream_id.as_str().to_owned()))
            .collect()
    };
    let created = of(Narrowed {
        types: Some(vec!["PostCreated".into()]),
        ..Narrowed::default()
    });
    assert_eq!(created.len(), 4, "{created:?}");
    let alices = of(Narrowed {
        actor: Some(alice.uri.clone()),
        ..Narrowed::default()
    });
    for kind in [
        "ActorRegistered",
        "PostCreated",
        "PostEdited",
        "FollowRequested",
        "FollowAccepted",
        "Favorited",
        "Reblogged",
    ] {
        assert!(
            alices.iter().any(|(t, _)| t == kind),
            "no {kind} about alice: {alices:?}"
        );
    }
    assert!(
        !alices
            .iter()
            .any(|(t, s)| t == "ActorRegistered" && s != "actor-alice")
    );
    let remotes = of(Narrowed {
        host: Some(remote_host.clone()),
        ..Narrowed::default()
    });
    for kind in [
        "ActivityReceived",
        "RemoteActorUpdated",
        "FollowRequested",
        "FollowAccepted",
    ] {
        assert!(
            remotes.iter().any(|(t, _)| t == kind),
            "no {kind} from the remote host: {remotes:?}"
        );
    }
    assert!(!remotes.iter().any(|(t, _)| t == "PostCreated"));
    let locals = of(Narrowed {
        host: Some(local_host.clone()),
        ..Narrowed::default()
    });
    assert!(
        !locals
            .iter()
            .any(|(t, _)| t == "ActivityReceived" || t == "RemoteActorUpdated")
    );
}

#[tokio::test]
async fn bad_cursors_sizes_and_filters_are_refused_with_a_reason() {
    let app = spawn_app().await;
    let token = analytics_token(&app).await;
    for (variables, says) in [
        (json!({ "first": 101 }), "between 0 and 100"),
        (json!({ "last": 101 }), "between 0 and 100"),
        (json!({ "first": -1 }), "between 0 and 100"),
        (json!({ "first": 2, "last": 2 }), "not both"),
        (json!({ "after": "nonsense" }), "not a cursor"),
        (json!({ "before": "1.x", "last": 2 }), "not a cursor"),
        (json!({ "filter": { "types": [] } }), "1 to 100"),
        (
            json!({ "filter": { "types": ["Post Created"] } }),
            "not an event type",
        ),
        (json!({ "filter": { "streams": [""] } }), "not a stream"),
        (json!({ "filter": { "actor": "alice" } }), "ActivityPub id"),
        (json!({ "filter": { "host": "a.example/b" } }), "host name"),
        (
            json!({ "filter": { "from": "2026-12-02T00:00:00Z", "to": "2026-12-01T00:00:00Z" } }),
            "before `to`",
        ),
    ] {
        let response = app.graphql(Some(&token), EVENTS, variables.clone()).await;
        let error = &response["errors"][0];
        assert_eq!(
            error["extensions"]["code"],
            json!("BAD_USER_INPUT"),
            "{variables}: {response}"
        );
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{variables}: {message}");
    }
    // The schema refuses a wrongly typed cursor before it reaches Chorus.
    let response = app
        .graphql(Some(&token), EVENTS, json!({ "after": 5 }))
        .await;
    assert!(response["errors"][0]["message"].is_string(), "{response}");
}

#[tokio::test]
async fn analytics_tokens_read_the_log_and_nothing_else() {
    let app = spawn_app().await;
    let alice = app.account("alice", false).await;
    let boss = admin(&app).await;
    let token = analytics_token(&app).await;
    let first = json!({ "first": 1 });

    // Analytics and admins read the log; others may not.
    assert_eq!(
        node_positions(&page(&app, &token, first.clone()).await).len(),
        1
    );
    assert_eq!(
        node_positions(&page(&app, &boss.token, first.clone()).await).len(),
        1
    );
    assert_eq!(
        app.error_code(Some(&alice.token), EVENTS, first.clone())
            .await,
        "FORBIDDEN"
    );
    assert_eq!(
        app.error_code(None, EVENTS, first.clone()).await,
        "UNAUTHENTICATED"
    );

    // Every other field and every mutation refuse an analytics token.
    for query in [
        "{ me { handle } }",
        "{ actor(handle: \"alice\") { handle } }",
        "{ timeline(kind: PUBLIC) { edges { cursor } } }",
        "{ deliveries { summary { pending } } }",
        "{ subscribers { name lagEvents } }",
        "mutation { createPost(input: { text: \"hi\" }) { id } }",
        "mutation { follow(actor: \"alice\") { following } }",
    ] {
        let response = app.graphql(Some(&token), query, json!({})).await;
        assert_eq!(
            response["errors"][0]["extensions"]["code"],
            json!("FORBIDDEN"),
            "{query}: {response}"
        );
        assert!(
            response["errors"][0]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("event log")
        );
    }
    let response = app
        .graphql(
            Some(&token),
            "{ events(first: 1) { edges { cursor } } me { handle } }",
            json!({}),
        )
        .await;
    assert_eq!(
        response["data"]["events"]["edges"].as_array().map(Vec::len),
        Some(1),
        "{response}"
    );
    assert_eq!(response["errors"][0]["path"], json!(["me"]));
    // Introspection is not the log, but it is the published schema.
    let typename = app.ok(Some(&token), "{ __typename }", json!({})).await;
    assert_eq!(typename["__typename"], json!("QueryRoot"));
    // The same query from an account is answered.
    let me = app
        .ok(Some(&alice.token), "{ me { handle } }", json!({}))
        .await;
    assert_eq!(me["me"]["handle"], json!("alice"));

    // A revoked analytics token is no token at all.
    let id = sqlx::query_scalar::<_, uuid::Uuid>(
        "SELECT token_id FROM api_tokens WHERE scope = 'analytics'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        chorus_api::tokens::revoke(&app.pool, id)
            .await
            .unwrap_or(false)
    );
    assert_eq!(
        app.error_code(Some(&token), EVENTS, first).await,
        "UNAUTHENTICATED"
    );
    // The token's secret is stored hashed, under no account.
    let (owner, hashed): (Option<uuid::Uuid>, Vec<u8>) =
        sqlx::query_as("SELECT actor_id, token_hash FROM api_tokens WHERE token_id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(owner, None);
    assert!(!String::from_utf8_lossy(&hashed).contains(&token));
}

#[tokio::test]
async fn erased_content_comes_out_redacted() {
    let app = spawn_app().await;
    let bob = app.account("bob", false).await;
    let id = post(&app, &bob, "a secret to be deleted").await;
    app.ok(
        Some(&bob.token),
        "mutation($id: ID!) { deletePost(id: $id) }",
        json!({ "id": id }),
    )
    .await;
    app.settle().await;
    let token = analytics_token(&app).await;
    let created = page(
        &app,
        &token,
        json!({ "filter": { "types": ["PostCreated"] } }),
    )
    .await;
    let node = &created["edges"][0]["node"];
    assert_eq!(node["data"]["content"], json!(""), "{node}");
    assert!(node["metadata"]["redacted"]["by"].is_string(), "{node}");
    assert!(!node.to_string().contains("a secret"));
    let lines = ndjson(&app, Some(&token), "types=PostCreated").await.1;
    assert!(lines.contains("\"redacted\""), "{lines}");
    assert!(!lines.contains("a secret"));
}

/// `GET /events.ndjson?{query}`: its status and body.
async fn ndjson(app: &TestApp, token: Option<&str>, query: &str) -> (u16, String) {
    let mut request = app
        .client
        .get(format!("{}/events.ndjson?{query}", app.base_url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("{e}"));
    let status = response.status().as_u16();
    if status == 200 {
        assert_eq!(
            response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/x-ndjson")
        );
    }
    (status, response.text().await.unwrap_or_default())
}

fn lines(body: &str) -> Vec<Value> {
    assert!(body.is_empty() || body.ends_with('\n'), "{body}");
    body.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test]
async fn the_ndjson_endpoint_streams_the_log_and_follows_it() {
    let app = spawn_app().await;
    let (alice, _, _) = some_history(&app).await;
    let boss = admin(&app).await;
    let token = analytics_token(&app).await;
    let all = log(&app).await;

    // Who may read it.
    assert_eq!(ndjson(&app, None, "").await.0, 401);
    assert_eq!(ndjson(&app, Some("chorus_nope"), "").await.0, 401);
    assert_eq!(ndjson(&app, Some(&alice.token), "").await.0, 403);
    assert_eq!(ndjson(&app, Some(&boss.token), "").await.0, 200);

    // Every event, each line the GraphQL node of the same event.
    let (status, body) = ndjson(&app, Some(&token), "").await;
    assert_eq!(status, 200);
    let got = lines(&body);
    let nodes = read_forward(&app, &token, &json!({}), 100).await;
    assert_eq!(got, nodes);
    assert_eq!(got.len(), all.len());

    // From a position, and narrowed.
    let after = all[9].position.to_string();
    let got = lines(
        &ndjson(&app, Some(&token), &format!("after={after}"))
            .await
            .1,
    );
    assert_eq!(got, nodes[10..]);
    let got = lines(
        &ndjson(
            &app,
            Some(&token),
            "types=PostCreated,Favorited&streams=post-,favorite-",
        )
        .await
        .1,
    );
    let expected: Vec<&Value> = nodes
        .iter()
        .filter(|n| n["type"] == json!("PostCreated") || n["type"] == json!("Favorited"))
        .collect();
    assert_eq!(got.iter().collect::<Vec<_>>(), expected);
    let got = lines(
        &ndjson(&app, Some(&token), &format!("actor={}", alice.uri))
            .await
            .1,
    );
    assert!(got.iter().all(|n| n.to_string().contains(&alice.uri)));
    assert!(!got.is_empty());

    // Bad parameters say what is wrong.
    for (query, says) in [
        ("after=xyz", "not a cursor"),
        ("follow=maybe", "`follow`"),
        ("from=yesterday", "RFC 3339"),
        ("types=", "not an event type"),
        ("colour=red", "unknown field"),
    ] {
        let (status, body) = ndjson(&app, Some(&token), query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(says), "{query}: {body}");
    }

    // Following: the stored ones, then each new one as it is committed.
    let mut response = app
        .client
        .get(format!(
            "{}/events.ndjson?types=PostCreated&follow=true",
            app.base_url
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status().as_u16(), 200);
    let stored = all.iter().filter(|e| e.event_type == "PostCreated").count();
    let mut buffer = String::new();
    assert_eq!(
        read_lines(&mut response, &mut buffer, stored).await.len(),
        stored
    );
    post(&app, &alice, "live over http").await;
    let got = read_lines(&mut response, &mut buffer, stored + 1).await;
    assert_eq!(got.len(), stored + 1);
    assert_eq!(got[stored]["data"]["source"], json!("live over http"));
}

/// The lines of a streamed response, once it has sent `n`.
async fn read_lines(response: &mut reqwest::Response, buffer: &mut String, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while buffer.matches('\n').count() < n {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("no line within 10 s: {buffer}"))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("the response ended: {buffer}"));
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
    lines(buffer)
}

const SUBSCRIBE: &str = "subscription($after: String, $filter: EventFilter) {
  events(after: $after, filter: $filter) { position type stream data metadata }
}";

async fn subscribe(socket: &mut Socket, id: &str, variables: Value) {
    chorus_tests::ws::subscribe(socket, id, SUBSCRIBE, variables).await;
}

/// The next event of subscription `id`.
async fn next_event(socket: &mut Socket, id: &str) -> Value {
    let message = receive(socket).await.unwrap_or_else(|| panic!("closed"));
    assert_eq!(message["id"], json!(id), "{message}");
    assert_eq!(message["type"], json!("next"), "{message}");
    assert!(message["payload"]["errors"].is_null(), "{message}");
    message["payload"]["data"]["events"].clone()
}

#[tokio::test]
async fn the_subscription_catches_up_then_streams_live_events() {
    let app = spawn_app().await;
    let (alice, _, _) = some_history(&app).await;
    let token = analytics_token(&app).await;
    let all = log(&app).await;
    let created: Vec<&RecordedEvent> = all
        .iter()
        .filter(|e| e.event_type == "PostCreated")
        .collect();
    assert!(created.len() >= 3);

    let mut socket = chorus_tests::ws::connect(&app.base_url, json!({ "token": token }))
        .await
        .unwrap_or_else(|| panic!("refused"));
    subscribe(
        &mut socket,
        "1",
        json!({ "filter": { "types": ["PostCreated"] } }),
    )
    .await;
    for stored in &created {
        let event = next_event(&mut socket, "1").await;
        assert_eq!(event["position"], json!(stored.position.to_string()));
        assert_eq!(event["type"], json!("PostCreated"));
    }
    // Live: a new post arrives; other events do not.
    app.ok(
        Some(&alice.token),
        "mutation($a: String!) { follow(actor: $a) { following } }",
        json!({ "a": "carol" }),
    )
    .await;
    post(&app, &alice, "live over websocket").await;
    let live = next_event(&mut socket, "1").await;
    assert_eq!(live["data"]["source"], json!("live over websocket"));
    let last = log(&app).await;
    let newest = last
        .iter()
        .rev()
        .find(|e| e.event_type == "PostCreated")
        .map(|e| e.position.to_string());
    assert_eq!(live["position"].as_str().map(str::to_owned), newest);

    // Another subscription on the same connection, resuming after a cursor,
    // narrowed by actor; completing one leaves the other running.
    subscribe(&mut socket, "2", json!({ "after": created[1].position.to_string(), "filter": { "actor": alice.uri, "streams": ["post-"] } })).await;
    let resumed = next_event(&mut socket, "2").await;
    let narrowed = Narrowed {
        after: Some(created[1].position),
        actor: Some(alice.uri.clone()),
        stream_prefixes: vec!["post-".into()],
        ..Narrowed::default()
    };
    let expected = all
        .iter()
        .find(|e| narrowed.matches(e))
        .map(|e| e.position.to_string());
    assert!(expected.is_some());
    assert_eq!(resumed["position"].as_str().map(str::to_owned), expected);
    send(&mut socket, json!({ "id": "2", "type": "complete" })).await;
    // Drain what subscription 2 had already sent, up to its completion.
    loop {
        let message = receive(&mut socket)
            .await
            .unwrap_or_else(|| panic!("closed"));
        if message["id"] == json!("2") && message["type"] == json!("complete") {
            break;
        }
        assert_eq!(message["id"], json!("2"), "{message}");
    }
    post(&app, &alice, "second live post").await;
    let live = next_event(&mut socket, "1").await;
    assert_eq!(live["data"]["source"], json!("second live post"));
}

#[tokio::test]
async fn the_subscription_takes_its_token_at_connection_init() {
    let app = spawn_app().await;
    let alice = app.account("alice", false).await;
    let boss = admin(&app).await;
    let query = json!({ "filter": { "types": ["ActorRegistered"] } });

    // An admin, with an Authorization entry.
    let mut socket = chorus_tests::ws::connect(
        &app.base_url,
        json!({ "Authorization": format!("Bearer {}", boss.token) }),
    )
    .await
    .unwrap_or_else(|| panic!("refused"));
    subscribe(&mut socket, "1", query.clone()).await;
    assert_eq!(
        next_event(&mut socket, "1").await["stream"],
        json!("actor-alice")
    );

    // Another account, and no one: refused with a code.
    for (payload, code) in [
        (json!({ "token": alice.token }), "FORBIDDEN"),
        (json!({}), "UNAUTHENTICATED"),
    ] {
        let mut socket = chorus_tests::ws::connect(&app.base_url, payload.clone())
            .await
            .unwrap_or_else(|| panic!("refused"));
        subscribe(&mut socket, "1", query.clone()).await;
        let message = receive(&mut socket)
            .await
            .unwrap_or_else(|| panic!("closed"));
        let errors = if message["type"] == json!("error") {
            &message["payload"]
        } else {
            &message["payload"]["errors"]
        };
        assert_eq!(
            errors[0]["extensions"]["code"],
            json!(code),
            "{payload}: {message}"
        );
    }

    // A bad token: the connection is closed, not acknowledged.
    assert!(
        chorus_tests::ws::connect(&app.base_url, json!({ "token": "chorus_not_a_token" }))
            .await
            .is_none()
    );

    // A bad filter is refused as bad input.
    let token = analytics_token(&app).await;
    let mut socket = chorus_tests::ws::connect(&app.base_url, json!({ "token": token }))
        .await
        .unwrap_or_else(|| panic!("refused"));
    subscribe(&mut socket, "1", json!({ "after": "soon" })).await;
    let message = receive(&mut socket)
        .await
        .unwrap_or_else(|| panic!("closed"));
    let errors = if message["type"] == json!("error") {
        &message["payload"]
    } else {
        &message["payload"]["errors"]
    };
    assert_eq!(
        errors[0]["extensions"]["code"],
        json!("BAD_USER_INPUT"),
        "{message}"
    );
}
