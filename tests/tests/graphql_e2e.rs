//! End to end through a real server on 127.0.0.1: local accounts follow,
//! post, reply, favorite, reblog, block and delete through GraphQL; the read
//! models and the ActivityPub documents show exactly what they should, and
//! every refusal comes back as a typed error with a stable code.

use chorus_tests::app::{Account, TestApp, spawn_app};
use serde_json::{Value, json};

const POST_FIELDS: &str = "id uri content summary sensitive visibility favoritesCount reblogsCount repliesCount favorited reblogged editedAt author { handle } inReplyTo { id } edits { version content }";

async fn create_post(
    app: &TestApp,
    who: &Account,
    text: &str,
    visibility: &str,
    in_reply_to: Option<&str>,
) -> Value {
    let query = format!(
        "mutation($input: CreatePostInput!) {{ createPost(input: $input) {{ {POST_FIELDS} }} }}"
    );
    let data = app
        .ok(Some(&who.token), &query, json!({ "input": { "text": text, "visibility": visibility, "inReplyTo": in_reply_to } }))
        .await;
    data["createPost"].clone()
}

async fn post(app: &TestApp, viewer: Option<&Account>, id: &str) -> Value {
    let query = format!("query($id: ID!) {{ post(id: $id) {{ {POST_FIELDS} }} }}");
    app.ok(
        viewer.map(|v| v.token.as_str()),
        &query,
        json!({ "id": id }),
    )
    .await["post"]
        .clone()
}

async fn relation(app: &TestApp, who: &Account, mutation: &str, actor: &Account) -> Value {
    let query = format!(
        "mutation($a: String!) {{ {mutation}(actor: $a) {{ following followedBy blocking blockedBy }} }}"
    );
    app.ok(Some(&who.token), &query, json!({ "a": actor.handle }))
        .await[mutation]
        .clone()
}

async fn on_post(app: &TestApp, who: &Account, mutation: &str, id: &str) -> Value {
    let query = format!("mutation($p: ID!) {{ {mutation}(post: $p) {{ {POST_FIELDS} }} }}");
    app.ok(Some(&who.token), &query, json!({ "p": id })).await[mutation].clone()
}

async fn code(app: &TestApp, who: Option<&Account>, query: &str, variables: Value) -> String {
    app.error_code(who.map(|w| w.token.as_str()), query, variables)
        .await
}

async fn timeline(
    app: &TestApp,
    who: Option<&Account>,
    kind: &str,
) -> Vec<(String, Option<String>)> {
    let query = format!(
        "{{ timeline(kind: {kind}, first: 50) {{ edges {{ cursor node {{ post {{ id }} rebloggedBy {{ handle }} }} }} pageInfo {{ hasNextPage }} }} }}"
    );
    let data = app
        .ok(who.map(|w| w.token.as_str()), &query, json!({}))
        .await;
    data["timeline"]["edges"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            (
                e["node"]["post"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                e["node"]["rebloggedBy"]["handle"]
                    .as_str()
                    .map(str::to_owned),
            )
        })
        .collect()
}

async fn notification_kinds(app: &TestApp, who: &Account) -> Vec<String> {
    let data = app
        .ok(
            Some(&who.token),
            "{ notifications { nodes { kind actor { handle } } } }",
            json!({}),
        )
        .await;
    data["notifications"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|n| {
            format!(
                "{}:{}",
                n["kind"].as_str().unwrap_or_default(),
                n["actor"]["handle"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

fn id(post: &Value) -> String {
    post["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {post}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_accounts_walk_every_action_through_graphql() {
    let app = spawn_app().await;
    let alice = app.account("alice", false).await;
    let bob = app.account("bob", true).await;
    let carol = app.account("carol", false).await;

    let me = app
        .ok(
            Some(&alice.token),
            "{ me { handle acct locked local followersCount } }",
            json!({}),
        )
        .await;
    assert_eq!(me["me"]["handle"], "alice");
    assert_eq!(
        me["me"]["acct"],
        format!("alice@{}", app.base_url.trim_start_matches("http://"))
    );

    // Follows: unlocked accepts at once; locked waits for approval or rejection.
    assert_eq!(
        relation(&app, &alice, "follow", &carol).await["following"],
        "ACCEPTED"
    );
    assert_eq!(
        relation(&app, &carol, "follow", &bob).await["following"],
        "REQUESTED"
    );
    let requests = app
        .ok(
            Some(&bob.token),
            "{ followRequests { nodes { handle } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        requests["followRequests"]["nodes"],
        json!([{ "handle": "carol" }])
    );
    assert_eq!(
        relation(&app, &bob, "approveFollowRequest", &carol).await["followedBy"],
        "ACCEPTED"
    );
    assert_eq!(
        relation(&app, &alice, "follow", &bob).await["following"],
        "REQUESTED"
    );
    assert_eq!(
        relation(&app, &bob, "rejectFollowRequest", &alice).await["followedBy"],
        "REJECTED"
    );
    let counts = app
        .ok(
            None,
            "{ actor(handle: \"bob\") { followersCount followingCount } }",
            json!({}),
        )
        .await;
    assert_eq!(
        counts["actor"],
        json!({ "followersCount": 1, "followingCount": 0 })
    );
    let followers = app
        .ok(
            None,
            "{ followers(actor: \"carol\") { nodes { handle } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        followers["followers"]["nodes"],
        json!([{ "handle": "alice" }])
    );

    // A public post with a mention and a hashtag, and a reply in its thread.
    let hello = create_post(
        &app,
        &carol,
        "Hello @alice, welcome to #Chorus",
        "PUBLIC",
        None,
    )
    .await;
    assert!(
        hello["content"]
            .as_str()
            .unwrap_or_default()
            .contains("class=\"u-url mention\"")
    );
    assert!(
        notification_kinds(&app, &alice)
            .await
            .contains(&"MENTIONED:carol".to_owned())
    );
    assert_eq!(
        timeline(&app, Some(&alice), "HOME").await,
        [(id(&hello), None)]
    );
    let reply = create_post(&app, &alice, "Thanks @carol!", "PUBLIC", Some(&id(&hello))).await;
    assert_eq!(reply["inReplyTo"]["id"], hello["id"]);
    let thread = app
        .ok(
            None,
            "query($id: ID!) { thread(id: $id) { id } }",
            json!({ "id": id(&reply) }),
        )
        .await;
    assert_eq!(
        thread["thread"],
        json!([{ "id": id(&hello) }, { "id": id(&reply) }])
    );
    assert_eq!(post(&app, None, &id(&hello)).await["repliesCount"], 1);

    // Favorites and reblogs, each once.
    let liked = on_post(&app, &alice, "favorite", &id(&hello)).await;
    assert_eq!(
        (liked["favoritesCount"].clone(), liked["favorited"].clone()),
        (json!(1), json!(true))
    );
    let fav = "mutation($p: ID!) { favorite(post: $p) { id } }";
    assert_eq!(
        code(&app, Some(&alice), fav, json!({ "p": id(&hello) })).await,
        "ALREADY_FAVORITED"
    );
    let reblogged = on_post(&app, &alice, "reblog", &id(&hello)).await;
    assert_eq!(reblogged["reblogsCount"], 1);
    assert!(
        notification_kinds(&app, &carol)
            .await
            .contains(&"FAVORITED:alice".to_owned())
    );
    assert!(
        notification_kinds(&app, &carol)
            .await
            .contains(&"REBLOGGED:alice".to_owned())
    );
    assert!(
        timeline(&app, Some(&alice), "HOME")
            .await
            .contains(&(id(&hello), Some("alice".to_owned())))
    );
    let favorites = app
        .ok(
            Some(&alice.token),
            "{ favorites { nodes { id } } reblogs { nodes { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        favorites["favorites"]["nodes"],
        json!([{ "id": id(&hello) }])
    );
    assert_eq!(favorites["reblogs"]["nodes"], json!([{ "id": id(&hello) }]));
    assert_eq!(
        on_post(&app, &alice, "unfavorite", &id(&hello)).await["favoritesCount"],
        0
    );
    assert_eq!(
        on_post(&app, &alice, "unreblog", &id(&hello)).await["reblogsCount"],
        0
    );
    let unfav = "mutation($p: ID!) { unfavorite(post: $p) { id } }";
    assert_eq!(
        code(&app, Some(&alice), unfav, json!({ "p": id(&hello) })).await,
        "NOT_FAVORITED"
    );

    // Edits keep their history; only the author may edit.
    let edit = format!(
        "mutation($id: ID!, $t: String!) {{ editPost(id: $id, input: {{ text: $t }}) {{ {POST_FIELDS} }} }}"
    );
    let edited = app
        .ok(
            Some(&carol.token),
            &edit,
            json!({ "id": id(&hello), "t": "Hello again" }),
        )
        .await["editPost"]
        .clone();
    assert!(edited["editedAt"].is_string());
    assert_eq!(edited["edits"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        code(
            &app,
            Some(&alice),
            &edit,
            json!({ "id": id(&hello), "t": "mine now" })
        )
        .await,
        "NOT_AUTHOR"
    );

    // Visibility: followers-only for accepted followers; direct for the mentioned.
    let private = create_post(&app, &bob, "for my followers", "FOLLOWERS_ONLY", None).await;
    assert_eq!(
        post(&app, Some(&carol), &id(&private)).await["id"],
        private["id"]
    );
    assert!(post(&app, Some(&alice), &id(&private)).await.is_null());
    assert!(post(&app, None, &id(&private)).await.is_null());
    let direct = create_post(&app, &carol, "psst @bob", "DIRECT", None).await;
    assert_eq!(
        post(&app, Some(&bob), &id(&direct)).await["id"],
        direct["id"]
    );
    assert!(post(&app, Some(&alice), &id(&direct)).await.is_null());
    let public_timeline = timeline(&app, None, "PUBLIC").await;
    assert!(
        !public_timeline
            .iter()
            .any(|(p, _)| p == &id(&private) || p == &id(&direct))
    );
    assert!(public_timeline.iter().any(|(p, _)| p == &id(&hello)));
    assert_eq!(timeline(&app, None, "LOCAL").await, public_timeline);

    // Refusals, each with its code.
    let follow = "mutation($a: String!) { follow(actor: $a) { following } }";
    assert_eq!(
        code(&app, Some(&alice), follow, json!({ "a": "alice" })).await,
        "SELF_FOLLOW"
    );
    assert_eq!(
        code(&app, Some(&alice), follow, json!({ "a": "nobody" })).await,
        "NOT_FOUND"
    );
    assert_eq!(
        code(
            &app,
            None,
            "mutation { createPost(input: { text: \"x\" }) { id } }",
            json!({})
        )
        .await,
        "UNAUTHENTICATED"
    );
    let create = "mutation($t: String!) { createPost(input: { text: $t }) { id } }";
    assert_eq!(
        code(&app, Some(&alice), create, json!({ "t": "  " })).await,
        "CONTENT_EMPTY"
    );
    let reblog = "mutation($p: ID!) { reblog(post: $p) { id } }";
    assert_eq!(
        code(&app, Some(&carol), reblog, json!({ "p": id(&private) })).await,
        "NOT_REBLOGABLE"
    );
    let bad_token = app
        .graphql(Some("chorus_not-a-token"), "{ me { handle } }", json!({}))
        .await;
    assert_eq!(
        bad_token["errors"][0]["extensions"]["code"],
        "UNAUTHENTICATED"
    );

    // Blocking severs follows and stops interaction both ways.
    let blocked = relation(&app, &carol, "block", &alice).await;
    assert_eq!(
        (blocked["blocking"].clone(), blocked["followedBy"].clone()),
        (json!(true), json!("NONE"))
    );
    assert_eq!(
        code(&app, Some(&alice), fav, json!({ "p": id(&hello) })).await,
        "BLOCKED"
    );
    assert_eq!(
        code(&app, Some(&alice), follow, json!({ "a": "carol" })).await,
        "BLOCKED"
    );
    assert!(post(&app, Some(&alice), &id(&hello)).await.is_null());
    assert!(
        timeline(&app, Some(&alice), "HOME")
            .await
            .iter()
            .all(|(p, _)| p != &id(&hello))
    );
    let blocks = app
        .ok(
            Some(&carol.token),
            "{ blocks { nodes { handle } } }",
            json!({}),
        )
        .await;
    assert_eq!(blocks["blocks"]["nodes"], json!([{ "handle": "alice" }]));
    assert_eq!(
        relation(&app, &carol, "unblock", &alice).await["blocking"],
        false
    );
    assert_eq!(
        relation(&app, &alice, "follow", &carol).await["following"],
        "ACCEPTED"
    );
    assert_eq!(
        relation(&app, &alice, "unfollow", &carol).await["following"],
        "NONE"
    );

    // Deletion: gone from GraphQL, a Tombstone over ActivityPub.
    let delete = "mutation($id: ID!) { deletePost(id: $id) }";
    assert_eq!(
        code(&app, Some(&alice), delete, json!({ "id": id(&hello) })).await,
        "NOT_AUTHOR"
    );
    app.ok(Some(&carol.token), delete, json!({ "id": id(&hello) }))
        .await;
    assert!(post(&app, Some(&carol), &id(&hello)).await.is_null());
    let (status, tombstone) = app
        .activitypub(hello["uri"].as_str().unwrap_or_default())
        .await;
    assert_eq!(status, reqwest::StatusCode::GONE);
    assert_eq!(tombstone["type"], "Tombstone");
    assert_eq!(
        code(&app, Some(&carol), delete, json!({ "id": id(&hello) })).await,
        "DELETED"
    );

    // The ActivityPub documents agree with the read models.
    let (status, person) = app.activitypub(&alice.uri).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert_eq!(person["type"], "Person");
    assert_eq!(person["preferredUsername"], "alice");
    assert!(
        person["publicKey"]["publicKeyPem"]
            .as_str()
            .unwrap_or_default()
            .contains("BEGIN PUBLIC KEY")
    );
    let (_, bob_doc) = app.activitypub(&bob.uri).await;
    assert_eq!(bob_doc["manuallyApprovesFollowers"], true);
    let (_, note) = app
        .activitypub(reply["uri"].as_str().unwrap_or_default())
        .await;
    assert_eq!(note["type"], "Note");
    assert_eq!(note["inReplyTo"], hello["uri"]);
    let (status, _) = app
        .activitypub(private["uri"].as_str().unwrap_or_default())
        .await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
    let (_, followers) = app.activitypub(&format!("{}/followers", bob.uri)).await;
    assert_eq!(followers["totalItems"], 1);
}

#[tokio::test]
async fn no_secret_ever_reaches_a_graphql_response_or_the_log() {
    let app = spawn_app().await;
    let alice = app.account("alice", false).await;
    let everything = app
        .graphql(
            Some(&alice.token),
            "{ me { id handle acct displayName locked relationship { following } } }",
            json!({}),
        )
        .await
        .to_string();
    assert!(!everything.contains("PRIVATE KEY"));
    assert!(!everything.contains(&alice.token));
    let log: Vec<String> = sqlx::query_scalar("SELECT payload::text || metadata::text FROM events")
        .fetch_all(&app.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        log.iter()
            .all(|e| !e.contains("PRIVATE KEY") && !e.contains(&alice.token))
    );
}

#[tokio::test]
async fn overly_deep_queries_are_refused() {
    let app = spawn_app().await;
    let mut query = String::from("id");
    for _ in 0..chorus_api::graphql::MAX_DEPTH {
        query = format!("inReplyTo {{ {query} }}");
    }
    let response = app
        .graphql(
            None,
            &format!("{{ post(id: \"x\") {{ {query} }} }}"),
            json!({}),
        )
        .await;
    let message = response["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("nested too deep"), "{response}");
}
