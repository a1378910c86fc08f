//! The inbox end to end: signed requests from a real remote server on
//! 127.0.0.1 reach a real Chorus, are stored before anything else, and are
//! interpreted into the read models.

use chorus_domain::remote::received_event_id;
use chorus_domain::{EventStore, Position, SignatureVerdict};
use chorus_tests::app::{TestApp, spawn_app};
use chorus_tests::remote::{KeyStyle, RemoteServer, TestKey, deliver};
use serde_json::{Value, json};

/// Every event of `event_type` in the log.
async fn events_of(app: &TestApp, event_type: &str) -> Vec<chorus_domain::RecordedEvent> {
    // Settled first: the log is read only below transactions still running.
    app.settle().await;
    app.store
        .read_all(Position::START, 100_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|e| e.event_type == event_type)
        .collect()
}

fn follow(remote: &RemoteServer, from: &str, to: &str, n: u32) -> Value {
    json!({
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": format!("{}/activities/follow-{n}", remote.base_url),
        "type": "Follow",
        "actor": from,
        "object": to,
    })
}

#[tokio::test]
async fn a_remote_follow_is_stored_once_interpreted_and_accepted_automatically() {
    let app = spawn_app().await;
    let alice = app.account("alice", false).await;
    let remote = RemoteServer::start().await;
    let bob = remote.actor("bob", 0, KeyStyle::Fragment);
    let activity = follow(&remote, &bob.uri, &alice.uri, 1);
    let inbox = format!("{}/users/alice/inbox", app.base_url);

    let (status, body) = deliver(&app.client, &bob, &inbox, &activity).await;
    assert_eq!(status, 202, "{body}");
    // The same activity again, at the shared inbox: accepted, stored once.
    let (status, body) = deliver(
        &app.client,
        &bob,
        &format!("{}/inbox", app.base_url),
        &activity,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    app.settle().await;

    let received = events_of(&app, "ActivityReceived").await;
    assert_eq!(received.len(), 1);
    let stored = &received[0];
    assert_eq!(
        stored.id,
        received_event_id(activity["id"].as_str().unwrap_or(""))
    );
    assert_eq!(
        stored.metadata.signature,
        Some(SignatureVerdict::Verified {
            key_id: bob.key_id.clone(),
            signer: bob.uri.clone(),
            scheme: "draft-cavage-rsa-sha256".into(),
        })
    );
    assert_eq!(
        stored.metadata.remote_host.as_deref(),
        Some(&remote.base_url[7..])
    );
    // The body is kept exactly as it arrived.
    let raw: Value = serde_json::from_str(
        stored.payload.decode::<Value>().unwrap_or_default()["raw"]
            .as_str()
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    assert_eq!(raw, activity);

    // The follower, fetched to verify the signature, is in the actors read model.
    let followers = app
        .ok(
            None,
            "query($h: String!) { followers(actor: $h) { edges { node { id handle } } } }",
            json!({ "h": "alice" }),
        )
        .await;
    assert_eq!(
        followers["followers"]["edges"][0]["node"]["id"], bob.uri,
        "{followers}"
    );
    // The automatic Accept is an event caused by the received one.
    let accepted = events_of(&app, "FollowAccepted").await;
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].metadata.causation_id, Some(stored.id));
    let accept = accepted[0].payload.decode::<Value>().unwrap_or_default();
    assert_eq!(accept["automatic"], true);
    assert_eq!(accept["activity"]["type"], "Accept");
    assert_eq!(accept["activity"]["object"]["id"], activity["id"]);
}

#[tokio::test]
async fn a_locked_account_keeps_a_remote_follow_as_a_request() {
    let app = spawn_app().await;
    let carol = app.account("carol", true).await;
    let remote = RemoteServer::start().await;
    let bob = remote.actor("bob", 0, KeyStyle::Document);
    let (status, body) = deliver(
        &app.client,
        &bob,
        &format!("{}/inbox", app.base_url),
        &follow(&remote, &bob.uri, &carol.uri, 1),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    app.settle().await;
    let requests = app
        .ok(
            Some(&carol.token),
            "{ followRequests { edges { node { id } } } }",
            json!({}),
        )
        .await;
    let outcomes: Vec<(String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT activity_type, outcome, reason FROM received_activities")
            .fetch_all(&app.pool)
            .await
            .unwrap_or_default();
    let actors: Vec<(String,)> = sqlx::query_as("SELECT uri FROM actors")
        .fetch_all(&app.pool)
        .await
        .unwrap_or_default();
    assert_eq!(
        requests["followRequests"]["edges"][0]["node"]["id"], bob.uri,
        "{requests} {outcomes:?} {actors:?}"
    );
    assert!(events_of(&app, "FollowAccepted").await.is_empty());

    // carol approves the remote follower, by its id or as user@host.
    let acct = format!("bob@{}", &remote.base_url[7..]);
    let approved = app
        .ok(
            Some(&carol.token),
            "mutation($a: String!) { approveFollowRequest(actor: $a) { followedBy } }",
            json!({ "a": acct }),
        )
        .await;
    assert_eq!(
        approved["approveFollowRequest"]["followedBy"], "ACCEPTED",
        "{approved}"
    );
    let accepted = events_of(&app, "FollowAccepted").await;
    assert_eq!(accepted.len(), 1);
    let accept = accepted[0].payload.decode::<Value>().unwrap_or_default();
    assert_eq!(accept["automatic"], false);
    assert_eq!(accept["activity"]["type"], "Accept");
    assert_eq!(accept["activity"]["actor"], carol.uri);
}

#[tokio::test]
async fn remote_posts_are_sanitised_threaded_edited_and_deleted() {
    let app = spawn_app().await;
    let alice = app.account("alice", false).await;
    let remote = RemoteServer::start().await;
    let bob = remote.actor("bob", 1, KeyStyle::Fragment);
    let inbox = format!("{}/inbox", app.base_url);
    let note_id = format!("{}/notes/1", remote.base_url);
    let create = json!({
        "@context": ["https://www.w3.org/ns/activitystreams", { "sensitive": "as:sensitive" }],
        "id": format!("{note_id}/activity"),
        "type": "Create",
        "actor": bob.uri,
        "to": "as:Public",
        "object": {
            "id": note_id,
            "type": "Note",
            "attributedTo": bob.uri,
            "to": ["https://www.w3.org/ns/activitystreams#Public"],
            "content": "<p>hello <a href=\"javascript:alert(1)\" onclick=\"x()\">@alice</a><script>alert(2)</script></p>",
            "tag": { "type": "Mention", "href": alice.uri },
            "published": "2026-11-23T10:00:00Z",
        },
    });
    let (status, body) = deliver(&app.client, &bob, &inbox, &create).await;
    assert_eq!(status, 202, "{body}");
    app.settle().await;

    let query = "query($id: ID!) { post(id: $id) { content author { id } } }";
    let post = app
        .ok(Some(&alice.token), query, json!({ "id": note_id }))
        .await;
    let content = post["post"]["content"].as_str().unwrap_or_default();
    assert!(content.contains("hello"), "{post}");
    for banned in ["<script", "javascript:", "onclick"] {
        assert!(!content.contains(banned), "{banned} survived: {content}");
    }
    assert_eq!(post["post"]["author"]["id"], bob.uri);
    let notifications = app
        .ok(
            Some(&alice.token),
            "{ notifications { edges { node { kind } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        notifications["notifications"]["edges"][0]["node"]["kind"], "MENTIONED",
        "{notifications}"
    );

    // Someone else cannot edit or delete it.
    let mallory = remote.actor("mallory", 2, KeyStyle::Fragment);
    let forged = json!({
        "id": format!("{}/activities/forged-delete", remote.base_url),
        "type": "Delete",
        "actor": mallory.uri,
        "object": note_id,
    });
    assert_eq!(deliver(&app.client, &mallory, &inbox, &forged).await.0, 202);
    let update = json!({
        "id": format!("{note_id}/update"),
        "type": "Update",
        "actor": bob.uri,
        "object": {
            "id": note_id,
            "type": "Note",
            "attributedTo": bob.uri,
            "to": ["https://www.w3.org/ns/activitystreams#Public"],
            "content": "<p>edited</p>",
            "updated": "2026-11-23T11:00:00Z",
        },
    });
    assert_eq!(deliver(&app.client, &bob, &inbox, &update).await.0, 202);
    app.settle().await;
    let post = app
        .ok(Some(&alice.token), query, json!({ "id": note_id }))
        .await;
    assert_eq!(post["post"]["content"], "<p>edited</p>", "{post}");

    let delete = json!({
        "id": format!("{note_id}/delete"),
        "type": "Delete",
        "actor": bob.uri,
        "object": { "id": note_id, "type": "Tombstone" },
    });
    assert_eq!(deliver(&app.client, &bob, &inbox, &delete).await.0, 202);
    app.settle().await;
    let gone = app
        .graphql(Some(&alice.token), query, json!({ "id": note_id }))
        .await;
    assert_eq!(gone["data"]["post"], Value::Null, "{gone}");
    let outcomes: Vec<Value> = events_of(&app, "ActivityNotApplied")
        .await
        .iter()
        .map(|e| e.payload.decode::<Value>().unwrap_or_default())
        .collect();
    assert!(
        outcomes.iter().any(|o| o["activity_id"] == forged["id"]
            && o["reason"]
                .as_str()
                .unwrap_or("")
                .contains("not the author")),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn likes_reblogs_and_their_undos_reach_the_read_models() {
    let app = spawn_app().await;
    let alice = app.account("alice", false).await;
    let created = app
        .ok(
            Some(&alice.token),
            "mutation { createPost(input: { text: \"hi fediverse\", visibility: PUBLIC }) { uri } }",
            json!({}),
        )
        .await;
    let post = created["createPost"]["uri"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let remote = RemoteServer::start().await;
    let bob = remote.actor("bob", 0, KeyStyle::Fragment);
    let inbox = format!("{}/inbox", app.base_url);
    let like = json!({
        "id": format!("{}/likes/1", remote.base_url),
        "type": "Like",
        "actor": bob.uri,
        "object": post,
    });
    let announce = json!({
        "id": format!("{}/announces/1", remote.base_url),
        "type": "Announce",
        "actor": bob.uri,
        "object": post,
        "to": ["https://www.w3.org/ns/activitystreams#Public"],
    });
    for activity in [&like, &announce] {
        let (status, body) = deliver(&app.client, &bob, &inbox, activity).await;
        assert_eq!(status, 202, "{body}");
    }
    app.settle().await;
    let counts = "query($id: ID!) { post(id: $id) { favoritesCount reblogsCount } }";
    let before = app.ok(None, counts, json!({ "id": post })).await;
    assert_eq!(before["post"]["favoritesCount"], 1, "{before}");
    assert_eq!(before["post"]["reblogsCount"], 1, "{before}");

    // Undo by id only (Pleroma) and with the activity embedded (Mastodon).
    let undo_like = json!({
        "id": format!("{}/undo/1", remote.base_url),
        "type": "Undo",
        "actor": bob.uri,
        "object": like["id"],
    });
    let undo_announce = json!({
        "id": format!("{}/undo/2", remote.base_url),
        "type": "Undo",
        "actor": bob.uri,
        "object": announce,
    });
    for activity in [&undo_like, &undo_announce] {
        let (status, body) = deliver(&app.client, &bob, &inbox, activity).await;
        assert_eq!(status, 202, "{body}");
    }
    app.settle().await;
    let after = app.ok(None, counts, json!({ "id": post })).await;
    assert_eq!(after["post"]["favoritesCount"], 0, "{after}");
    assert_eq!(after["post"]["reblogsCount"], 0, "{after}");
}

#[tokio::test]
async fn unsupported_activities_are_stored_and_reported_never_dropped() {
    let app = spawn_app().await;
    let alice = app.account("alice", false).await;
    let remote = RemoteServer::start().await;
    let bob = remote.actor("bob", 0, KeyStyle::Fragment);
    let flag = json!({
        "id": format!("{}/flags/1", remote.base_url),
        "type": "Flag",
        "actor": bob.uri,
        "object": alice.uri,
        "content": "spam",
    });
    let (status, body) =
        deliver(&app.client, &bob, &format!("{}/inbox", app.base_url), &flag).await;
    assert_eq!(status, 202, "{body}");
    app.settle().await;
    let row: (String, Option<String>) = sqlx::query_as(
        "SELECT activity_type, outcome FROM received_activities WHERE activity_id = $1",
    )
    .bind(flag["id"].as_str())
    .fetch_one(&app.pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(row, ("Flag".to_owned(), Some("unsupported".to_owned())));
}

#[tokio::test]
async fn a_rotated_key_is_fetched_again_once() {
    let app = spawn_app().await;
    let alice = app.account("alice", false).await;
    let remote = RemoteServer::start().await;
    let bob = remote.actor("bob", 0, KeyStyle::Fragment);
    let inbox = format!("{}/inbox", app.base_url);
    let (status, _) = deliver(
        &app.client,
        &bob,
        &inbox,
        &follow(&remote, &bob.uri, &alice.uri, 1),
    )
    .await;
    assert_eq!(status, 202);
    let fetches = remote.fetches("bob");
    let bob = remote.rotate("bob", TestKey::shared(1));
    let undo = json!({
        "id": format!("{}/undo/1", remote.base_url),
        "type": "Undo",
        "actor": bob.uri,
        "object": follow(&remote, &bob.uri, &alice.uri, 1),
    });
    let (status, body) = deliver(&app.client, &bob, &inbox, &undo).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(remote.fetches("bob"), fetches + 1);
}

#[tokio::test]
async fn a_forwarded_activity_is_taken_from_its_origin_not_from_the_forwarder() {
    let app = spawn_app().await;
    let alice = app.account("alice", false).await;
    let origin = RemoteServer::start().await;
    let bob = origin.actor("bob", 0, KeyStyle::Fragment);
    let relay_server = RemoteServer::start().await;
    let relay = relay_server.actor("relay", 1, KeyStyle::Fragment);
    let inbox = format!("{}/inbox", app.base_url);

    let note_id = format!("{}/objects/note-1", origin.base_url);
    let mut create = json!({
        "type": "Create",
        "actor": bob.uri,
        "to": ["https://www.w3.org/ns/activitystreams#Public"],
        "object": {
            "id": note_id,
            "type": "Note",
            "attributedTo": bob.uri,
            "to": ["https://www.w3.org/ns/activitystreams#Public"],
            "content": "<p>the original</p>",
            "tag": [{ "type": "Mention", "href": alice.uri }],
        },
    });
    let create_id = origin.serve_object("create-1", Value::Null);
    create["id"] = json!(create_id);
    origin.serve_object("create-1", create.clone());

    // The relay forwards it with the text changed: the origin's copy wins.
    let mut forged = create.clone();
    forged["object"]["content"] = json!("<p>words put in bob's mouth</p>");
    let (status, body) = deliver(&app.client, &relay, &inbox, &forged).await;
    assert_eq!(status, 202, "{body}");
    app.settle().await;
    let received = events_of(&app, "ActivityReceived").await;
    assert_eq!(received.len(), 1);
    assert!(matches!(
        &received[0].metadata.signature,
        Some(SignatureVerdict::Refetched { signer, from, .. }) if *signer == relay.uri && *from == create_id
    ));
    let post = app
        .ok(
            Some(&alice.token),
            "query($id: ID!) { post(id: $id) { content } }",
            json!({ "id": note_id }),
        )
        .await;
    assert_eq!(post["post"]["content"], "<p>the original</p>", "{post}");

    // An activity its origin does not serve is refused.
    let mut unknown = create.clone();
    unknown["id"] = json!(format!("{}/objects/never-published", origin.base_url));
    let (status, body) = deliver(&app.client, &relay, &inbox, &unknown).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains(&relay.uri) && body.contains(&bob.uri),
        "{body}"
    );
}

#[tokio::test]
async fn an_activity_id_on_another_server_is_refused() {
    let app = spawn_app().await;
    let alice = app.account("alice", false).await;
    let remote = RemoteServer::start().await;
    let bob = remote.actor("bob", 0, KeyStyle::Fragment);
    let squatted = json!({
        "id": "https://mastodon.example/users/carol#follows/1",
        "type": "Follow",
        "actor": bob.uri,
        "object": alice.uri,
    });
    let (status, body) = deliver(
        &app.client,
        &bob,
        &format!("{}/inbox", app.base_url),
        &squatted,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not on its actor's server"), "{body}");
    assert!(events_of(&app, "ActivityReceived").await.is_empty());
}

#[tokio::test]
async fn a_deleted_actor_leaves_no_follows() {
    let app = spawn_app().await;
    let alice = app.account("alice", false).await;
    let carol = app.account("carol", false).await;
    let remote = RemoteServer::start().await;
    let bob = remote.actor("bob", 0, KeyStyle::Fragment);
    let inbox = format!("{}/inbox", app.base_url);
    for (n, local) in [(1, &alice), (2, &carol)] {
        let (status, body) = deliver(
            &app.client,
            &bob,
            &inbox,
            &follow(&remote, &bob.uri, &local.uri, n),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    app.settle().await;
    let count = |uri: String| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM follows WHERE follower = $1 AND state = 'accepted'",
            )
            .bind(uri)
            .fetch_one(&pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    assert_eq!(count(bob.uri.clone()).await, 2);

    let delete = json!({
        "id": format!("{}#delete", bob.uri),
        "type": "Delete",
        "actor": bob.uri,
        "object": bob.uri,
        "to": ["https://www.w3.org/ns/activitystreams#Public"],
    });
    let (status, body) = deliver(&app.client, &bob, &inbox, &delete).await;
    assert_eq!(status, 202, "{body}");
    app.settle().await;
    assert_eq!(count(bob.uri.clone()).await, 0);
    let deleted: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT deleted_at FROM actors WHERE uri = $1")
            .bind(&bob.uri)
            .fetch_one(&app.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(deleted.is_some());
}

#[tokio::test]
async fn posts_of_known_actors_written_in_bulk_end_as_one_by_one() {
    let app = spawn_app().await;
    let alice = app.account("alice", false).await;
    let remote = RemoteServer::start().await;
    let bob = remote.actor("bob", 0, KeyStyle::Fragment);
    let inbox = format!("{}/inbox", app.base_url);
    let create = |n: u32, activity: &str| {
        let note = format!("{}/notes/{n}", remote.base_url);
        json!({
            "id": format!("{note}/{activity}"),
            "type": "Create",
            "actor": bob.uri,
            "to": ["https://www.w3.org/ns/activitystreams#Public"],
            "object": {
                "id": note,
                "type": "Note",
                "attributedTo": bob.uri,
                "to": ["https://www.w3.org/ns/activitystreams#Public"],
                "content": format!("<p>note {n} for <a href=\"{}\">@alice</a></p>", alice.uri),
                "tag": [{ "type": "Mention", "href": alice.uri }],
            },
        })
    };
    // The first makes bob known; the next ones take the bulk path, among
    // them a second Create of note 1 (its stream exists: one by one).
    assert_eq!(
        deliver(&app.client, &bob, &inbox, &create(0, "a")).await.0,
        202
    );
    app.settle().await;
    for activity in [
        create(1, "a"),
        create(2, "a"),
        create(1, "again"),
        create(3, "a"),
    ] {
        assert_eq!(deliver(&app.client, &bob, &inbox, &activity).await.0, 202);
    }
    app.settle().await;
    let posts: Vec<(String, String)> =
        sqlx::query_as("SELECT uri, content FROM posts WHERE NOT local ORDER BY uri")
            .fetch_all(&app.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(posts.len(), 4, "{posts:?}");
    let created = events_of(&app, "RemotePostCreated").await;
    assert_eq!(created.len(), 4);
    assert!(created.iter().all(|e| e.metadata.causation_id.is_some()));
    let outcomes: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT activity_id, outcome FROM received_activities ORDER BY activity_id")
            .fetch_all(&app.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    let ignored: Vec<&str> = outcomes
        .iter()
        .filter(|(_, o)| o.is_some())
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(ignored, [format!("{}/notes/1/again", remote.base_url)]);
    let mentions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM notifications WHERE recipient = $1 AND kind = 'mentioned'",
    )
    .bind(&alice.uri)
    .fetch_one(&app.pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(mentions, 4);
}
