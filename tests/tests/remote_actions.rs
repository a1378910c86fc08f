//! Local actions on remote actors and posts, end to end: GraphQL against a
//! real Chorus on a private Postgres, remote servers on 127.0.0.1 that
//! answer WebFinger and serve actor documents, and their activities
//! delivered signed into the inbox.

use axum::body::Body;
use axum::http::Request;
use chorus_api::http::{AppState, router};
use chorus_domain::{EventStore, Position};
use chorus_tests::app::{Account, TestApp, spawn_app};
use chorus_tests::outbound::accepted;
use chorus_tests::remote::{KeyStyle, RemoteActor, RemoteServer, deliver};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const PUBLIC: &str = "https://www.w3.org/ns/activitystreams#Public";

const FOLLOW: &str = "mutation($a: String!) { follow(actor: $a) { actor following } }";
const UNFOLLOW: &str = "mutation($a: String!) { unfollow(actor: $a) { actor following } }";
const FAVORITE: &str = "mutation($p: ID!) { favorite(post: $p) { uri favorited favoritesCount } }";
const UNFAVORITE: &str =
    "mutation($p: ID!) { unfavorite(post: $p) { uri favorited favoritesCount } }";
const REBLOG: &str = "mutation($p: ID!) { reblog(post: $p) { uri reblogged reblogsCount } }";
const UNREBLOG: &str = "mutation($p: ID!) { unreblog(post: $p) { uri reblogged reblogsCount } }";
const CREATE: &str = "mutation($text: String!, $visibility: Visibility = PUBLIC, $reply: ID) {
    createPost(input: { text: $text, visibility: $visibility, inReplyTo: $reply }) {
        uri content mentions inReplyTo { uri }
    }
}";

/// The payloads of every event of `event_type` in the log.
async fn events_of(app: &TestApp, event_type: &str) -> Vec<Value> {
    // Settled first: the log is read only below transactions still running.
    app.settle().await;
    app.store
        .read_all(Position::START, 100_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|e| e.event_type == event_type)
        .map(|e| e.payload.decode::<Value>().unwrap_or_default())
        .collect()
}

/// The one event of `event_type` in the log.
async fn the_event(app: &TestApp, event_type: &str) -> Value {
    let events = events_of(app, event_type).await;
    assert_eq!(events.len(), 1, "{event_type}: {events:?}");
    events[0].clone()
}

/// The first activity of `activity_type` posted to `remote`'s inboxes
/// (waiting up to ten seconds for it).
async fn received(remote: &RemoteServer, activity_type: &str) -> Value {
    for _ in 0..200 {
        if let Some((_, _, body)) = remote
            .received()
            .into_iter()
            .find(|(_, _, body)| body["type"] == activity_type)
        {
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!(
        "no {activity_type} reached the remote server: {:?}",
        remote.received()
    );
}

async fn follow_state(app: &TestApp, follower: &str, followee: &str) -> Option<String> {
    sqlx::query_scalar("SELECT state FROM follows WHERE follower = $1 AND followee = $2")
        .bind(follower)
        .bind(followee)
        .fetch_optional(&app.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A post by `author` on its server, delivered in a Create; returns its id.
async fn remote_post(
    app: &TestApp,
    remote: &RemoteServer,
    author: &RemoteActor,
    n: u32,
    visibility: &str,
    in_reply_to: Option<&str>,
) -> String {
    let id = format!("{}/notes/{n}", remote.base_url);
    let (to, cc) = match visibility {
        "public" => (
            json!([PUBLIC]),
            json!([format!("{}/followers", author.uri)]),
        ),
        "followers_only" => (json!([format!("{}/followers", author.uri)]), json!([])),
        other => panic!("no such visibility in these tests: {other}"),
    };
    let create = json!({
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": format!("{id}/activity"),
        "type": "Create",
        "actor": author.uri,
        "to": to,
        "cc": cc,
        "object": {
            "id": id,
            "type": "Note",
            "attributedTo": author.uri,
            "to": to,
            "cc": cc,
            "inReplyTo": in_reply_to,
            "content": format!("<p>note {n}</p>"),
            "published": "2026-11-23T10:00:00Z",
        },
    });
    accepted(app, author, &create).await;
    id
}

async fn delete_remote_post(app: &TestApp, author: &RemoteActor, id: &str) {
    let delete = json!({
        "id": format!("{id}/delete"),
        "type": "Delete",
        "actor": author.uri,
        "object": { "id": id, "type": "Tombstone" },
    });
    accepted(app, author, &delete).await;
}

/// Alice, on a fresh Chorus, and a remote server with bob on it.
async fn alice_and_bob() -> (TestApp, Account, RemoteServer, RemoteActor) {
    let app = spawn_app().await;
    let alice = app.account("alice", false).await;
    let remote = RemoteServer::start().await;
    let bob = remote.actor("bob", 0, KeyStyle::Fragment);
    (app, alice, remote, bob)
}

#[tokio::test]
async fn a_remote_actor_is_followed_by_address_and_accepts_later() {
    let (app, alice, remote, bob) = alice_and_bob().await;
    let address = format!("bob@{}", remote.host());

    let followed = app
        .ok(Some(&alice.token), FOLLOW, json!({ "a": address }))
        .await;
    assert_eq!(followed["follow"]["actor"], bob.uri, "{followed}");
    assert_eq!(followed["follow"]["following"], "REQUESTED", "{followed}");
    // Found with WebFinger, then fetched and recorded.
    assert_eq!(remote.webfingers(), [format!("acct:{address}")]);
    assert!(remote.fetches("bob") >= 1);
    app.settle().await;
    let (local, handle): (bool, String) =
        sqlx::query_as("SELECT local, handle FROM actors WHERE uri = $1")
            .bind(&bob.uri)
            .fetch_one(&app.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(!local);
    assert_eq!(handle, "bob");
    assert_eq!(
        follow_state(&app, &alice.uri, &bob.uri).await.as_deref(),
        Some("requested")
    );
    // The Follow to deliver, addressed to bob; nothing accepts it for him.
    let requested = the_event(&app, "FollowRequested").await;
    assert_eq!(requested["follower"], alice.uri);
    assert_eq!(requested["followee"], bob.uri);
    let follow = &requested["activity"];
    assert_eq!(follow["type"], "Follow");
    assert_eq!(follow["actor"], alice.uri);
    assert_eq!(follow["object"], bob.uri);
    assert_eq!(follow["to"], json!([bob.uri]));
    assert_eq!(follow["id"], requested["follow_id"]);
    assert!(events_of(&app, "FollowAccepted").await.is_empty());
    // Delivery takes it to bob's server.
    let delivered = received(&remote, "Follow").await;
    assert_eq!(delivered["id"], follow["id"], "{delivered}");

    // Asking again is refused while the request waits.
    assert_eq!(
        app.error_code(
            Some(&alice.token),
            FOLLOW,
            json!({ "a": format!("@{address}") })
        )
        .await,
        "ALREADY_REQUESTED"
    );

    // bob accepts, signed, in alice's inbox.
    let accept = json!({
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": format!("{}/activities/accept-1", remote.base_url),
        "type": "Accept",
        "actor": bob.uri,
        "object": {
            "id": follow["id"],
            "type": "Follow",
            "actor": alice.uri,
            "object": bob.uri,
        },
    });
    let (status, body) = deliver(
        &app.client,
        &bob,
        &format!("{}/users/alice/inbox", app.base_url),
        &accept,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    app.settle().await;
    assert_eq!(
        follow_state(&app, &alice.uri, &bob.uri).await.as_deref(),
        Some("accepted")
    );

    // Unfollowing a known actor asks its server nothing.
    let fetches = remote.fetches("bob");
    let unfollowed = app
        .ok(
            Some(&alice.token),
            UNFOLLOW,
            json!({ "a": format!("@{address}") }),
        )
        .await;
    assert_eq!(unfollowed["unfollow"]["following"], "NONE", "{unfollowed}");
    assert_eq!(follow_state(&app, &alice.uri, &bob.uri).await, None);
    let undo = the_event(&app, "Unfollowed").await;
    assert_eq!(undo["activity"]["type"], "Undo");
    assert_eq!(undo["activity"]["to"], json!([bob.uri]));
    assert_eq!(undo["activity"]["object"]["type"], "Follow");
    assert_eq!(undo["activity"]["object"]["id"], follow["id"]);
    assert_eq!(remote.webfingers().len(), 1);
    assert_eq!(remote.fetches("bob"), fetches);
}

#[tokio::test]
async fn a_remote_actor_is_followed_by_id_and_known_actors_are_not_fetched_again() {
    let (app, alice, remote, bob) = alice_and_bob().await;
    let carol = remote.actor("carol", 1, KeyStyle::Fragment);
    remote.patch_actor("carol", json!({ "manuallyApprovesFollowers": true }));

    // An id is fetched as it is: no WebFinger.
    let followed = app
        .ok(Some(&alice.token), FOLLOW, json!({ "a": carol.uri }))
        .await;
    assert_eq!(followed["follow"]["following"], "REQUESTED", "{followed}");
    assert!(remote.webfingers().is_empty());
    app.settle().await;
    let locked: bool = sqlx::query_scalar("SELECT locked FROM actors WHERE uri = $1")
        .bind(&carol.uri)
        .fetch_one(&app.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(locked, "manuallyApprovesFollowers is recorded");

    // bob is known from what he sent: following him asks his server nothing.
    remote_post(&app, &remote, &bob, 1, "public", None).await;
    let fetches = remote.fetches("bob");
    let followed = app
        .ok(
            Some(&alice.token),
            FOLLOW,
            json!({ "a": format!("bob@{}", remote.host()) }),
        )
        .await;
    assert_eq!(followed["follow"]["actor"], bob.uri, "{followed}");
    assert_eq!(followed["follow"]["following"], "REQUESTED", "{followed}");
    assert!(remote.webfingers().is_empty());
    assert_eq!(remote.fetches("bob"), fetches);
}

#[tokio::test]
async fn a_remote_post_is_favorited_and_reblogged_and_both_taken_back() {
    let (app, alice, remote, bob) = alice_and_bob().await;
    let note = remote_post(&app, &remote, &bob, 1, "public", None).await;
    let token = Some(alice.token.as_str());

    let liked = app.ok(token, FAVORITE, json!({ "p": note })).await;
    assert_eq!(liked["favorite"]["uri"], note, "{liked}");
    assert_eq!(liked["favorite"]["favorited"], true, "{liked}");
    assert_eq!(liked["favorite"]["favoritesCount"], 1, "{liked}");
    let favorited = the_event(&app, "Favorited").await;
    assert_eq!(favorited["post"], note);
    assert_eq!(favorited["post_author"], bob.uri);
    assert_eq!(favorited["activity"]["type"], "Like");
    assert_eq!(favorited["activity"]["object"], note);
    assert_eq!(favorited["activity"]["to"], json!([bob.uri]));
    assert_eq!(
        app.error_code(token, FAVORITE, json!({ "p": note })).await,
        "ALREADY_FAVORITED"
    );
    let unliked = app.ok(token, UNFAVORITE, json!({ "p": note })).await;
    assert_eq!(unliked["unfavorite"]["favorited"], false, "{unliked}");
    assert_eq!(unliked["unfavorite"]["favoritesCount"], 0, "{unliked}");
    let undo = the_event(&app, "Unfavorited").await;
    assert_eq!(undo["activity"]["type"], "Undo");
    assert_eq!(undo["activity"]["object"]["type"], "Like");
    assert_eq!(undo["activity"]["to"], json!([bob.uri]));

    let reblogged = app.ok(token, REBLOG, json!({ "p": note })).await;
    assert_eq!(reblogged["reblog"]["reblogged"], true, "{reblogged}");
    assert_eq!(reblogged["reblog"]["reblogsCount"], 1, "{reblogged}");
    let announce = the_event(&app, "Reblogged").await;
    assert_eq!(announce["post_author"], bob.uri);
    assert_eq!(announce["activity"]["type"], "Announce");
    assert_eq!(announce["activity"]["object"], note);
    assert_eq!(announce["activity"]["to"], json!([PUBLIC]));
    assert_eq!(
        announce["activity"]["cc"],
        json!([bob.uri, format!("{}/followers", alice.uri)])
    );
    let unreblogged = app.ok(token, UNREBLOG, json!({ "p": note })).await;
    assert_eq!(unreblogged["unreblog"]["reblogged"], false, "{unreblogged}");
    assert_eq!(unreblogged["unreblog"]["reblogsCount"], 0, "{unreblogged}");
    let undo = the_event(&app, "Unreblogged").await;
    assert_eq!(undo["activity"]["object"]["type"], "Announce");
}

#[tokio::test]
async fn remote_posts_the_actor_may_not_see_or_that_were_deleted_are_refused() {
    let (app, alice, remote, bob) = alice_and_bob().await;
    let token = Some(alice.token.as_str());
    let private = remote_post(&app, &remote, &bob, 1, "followers_only", None).await;
    let reply = |post: &str| json!({ "text": "re", "reply": post });
    for mutation in [FAVORITE, REBLOG] {
        assert_eq!(
            app.error_code(token, mutation, json!({ "p": private }))
                .await,
            "NOT_FOUND",
            "{mutation}"
        );
    }
    assert_eq!(
        app.error_code(token, CREATE, reply(&private)).await,
        "NOT_FOUND"
    );

    let note = remote_post(&app, &remote, &bob, 2, "public", None).await;
    app.ok(token, FAVORITE, json!({ "p": note })).await;
    delete_remote_post(&app, &bob, &note).await;
    for mutation in [FAVORITE, REBLOG] {
        let response = app.graphql(token, mutation, json!({ "p": note })).await;
        assert_eq!(
            response["errors"][0]["extensions"]["code"], "NOT_FOUND",
            "{mutation}: {response}"
        );
    }
    assert_eq!(app.error_code(token, CREATE, reply(&note)).await, "DELETED");
    // A favorite of a post gone can still be taken back (it is no longer
    // shown, so the answer says so).
    assert_eq!(
        app.error_code(token, UNFAVORITE, json!({ "p": note }))
            .await,
        "NOT_FOUND"
    );
    assert_eq!(events_of(&app, "Unfavorited").await.len(), 1);
    // A post Chorus never took in.
    let unknown = format!("{}/notes/404", remote.base_url);
    assert_eq!(
        app.error_code(token, FAVORITE, json!({ "p": unknown }))
            .await,
        "NOT_FOUND"
    );
    assert_eq!(events_of(&app, "Favorited").await.len(), 1);
    assert_eq!(events_of(&app, "PostCreated").await.len(), 0);
}

#[tokio::test]
async fn a_reply_to_a_remote_post_joins_its_thread_and_addresses_its_author() {
    let (app, alice, remote, bob) = alice_and_bob().await;
    let root = remote_post(&app, &remote, &bob, 1, "public", None).await;
    let parent = remote_post(&app, &remote, &bob, 2, "public", Some(&root)).await;

    let created = app
        .ok(
            Some(&alice.token),
            CREATE,
            json!({ "text": "I agree", "reply": parent }),
        )
        .await;
    let post = &created["createPost"];
    assert_eq!(post["inReplyTo"]["uri"], parent, "{created}");
    assert_eq!(post["mentions"], json!([bob.uri]), "{created}");

    let reply = the_event(&app, "PostCreated").await;
    assert_eq!(reply["in_reply_to"], parent);
    assert_eq!(reply["in_reply_to_author"], bob.uri);
    assert_eq!(reply["thread_root"], root, "the thread of the parent");
    assert_eq!(reply["to"], json!([PUBLIC]));
    assert_eq!(
        reply["cc"],
        json!([format!("{}/followers", alice.uri), bob.uri])
    );
    let note = &reply["activity"]["object"];
    assert_eq!(note["inReplyTo"], parent);
    assert_eq!(note["cc"], reply["cc"]);
    assert_eq!(
        note["tag"],
        json!([{ "type": "Mention", "href": bob.uri, "name": format!("@bob@{}", remote.host()) }])
    );
    let thread_root: String = sqlx::query_scalar("SELECT thread_root FROM posts WHERE uri = $1")
        .bind(post["uri"].as_str())
        .fetch_one(&app.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(thread_root, root);
    // The Note as served names bob the same way.
    let (_, served) = app
        .activitypub(post["uri"].as_str().unwrap_or_default())
        .await;
    assert_eq!(served["tag"], note["tag"], "{served}");
}

#[tokio::test]
async fn remote_actors_mentioned_in_a_post_are_found_tagged_and_addressed() {
    let (app, alice, remote, bob) = alice_and_bob().await;
    remote_post(&app, &remote, &bob, 1, "public", None).await;
    let carol = remote.actor("carol", 1, KeyStyle::Fragment);
    let profile = format!("{}/@carol", remote.base_url);
    remote.patch_actor("carol", json!({ "url": profile }));
    let host = remote.host().to_owned();

    let text = format!("hi @bob@{host} and @carol@{host}, not @nobody@{host}");
    let created = app
        .ok(
            Some(&alice.token),
            CREATE,
            json!({ "text": text, "visibility": "FOLLOWERS_ONLY" }),
        )
        .await;
    let post = &created["createPost"];
    assert_eq!(post["mentions"], json!([bob.uri, carol.uri]), "{created}");
    // bob is known; carol and nobody are looked up (side by side).
    let mut asked = remote.webfingers();
    asked.sort();
    assert_eq!(
        asked,
        [format!("acct:carol@{host}"), format!("acct:nobody@{host}")]
    );
    let content = post["content"].as_str().unwrap_or_default();
    assert!(
        content.contains(&format!(
            "<a href=\"{profile}\" class=\"u-url mention\">@<span>carol</span></a>"
        )),
        "carol's profile page is linked: {content}"
    );
    assert!(
        content.contains(&format!("<a href=\"{}\" class=\"u-url mention\">", bob.uri)),
        "bob publishes no profile page: his id is linked: {content}"
    );
    assert!(content.contains(&format!("@nobody@{host}")), "{content}");

    let created = the_event(&app, "PostCreated").await;
    assert_eq!(created["to"], json!([format!("{}/followers", alice.uri)]));
    assert_eq!(created["cc"], json!([bob.uri, carol.uri]));
    assert_eq!(
        created["activity"]["object"]["tag"],
        json!([
            { "type": "Mention", "href": bob.uri, "name": format!("@bob@{host}") },
            { "type": "Mention", "href": carol.uri, "name": format!("@carol@{host}") },
        ])
    );
}

#[tokio::test]
async fn remote_lookups_fail_with_errors_that_name_the_reference_or_host() {
    let (app, alice, remote, _bob) = alice_and_bob().await;
    let token = Some(alice.token.as_str());

    // No such account on a server that answers WebFinger.
    let address = format!("nobody@{}", remote.host());
    let response = app.graphql(token, FOLLOW, json!({ "a": address })).await;
    assert_eq!(
        response["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{response}"
    );
    let message = response["errors"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains(&address), "{message}");

    // A server that does not answer.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        listener.local_addr().map(|a| a.port()).unwrap_or_default()
    };
    let response = app
        .graphql(
            token,
            FOLLOW,
            json!({ "a": format!("bob@127.0.0.1:{closed}") }),
        )
        .await;
    assert_eq!(
        response["errors"][0]["extensions"]["code"], "REMOTE_LOOKUP_FAILED",
        "{response}"
    );
    let message = response["errors"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains(&format!("127.0.0.1:{closed}")) && message.contains("WebFinger"),
        "{message}"
    );

    // A blocked instance is not asked.
    app.app
        .block_instance(None, remote.host(), None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    app.settle().await;
    let asked = remote.webfingers().len();
    assert_eq!(
        app.error_code(
            token,
            FOLLOW,
            json!({ "a": format!("carol@{}", remote.host()) })
        )
        .await,
        "INSTANCE_BLOCKED"
    );
    assert_eq!(remote.webfingers().len(), asked);

    // Not an address at all, and a local handle that does not exist.
    for reference in ["nobody", "@nobody", "bob@", "@@nowhere", "bob@a/b"] {
        assert_eq!(
            app.error_code(token, FOLLOW, json!({ "a": reference }))
                .await,
            "NOT_FOUND",
            "{reference}"
        );
    }
    assert!(events_of(&app, "FollowRequested").await.is_empty());
}

#[tokio::test]
async fn without_federation_only_known_remote_actors_can_be_followed() {
    let (app, alice, remote, bob) = alice_and_bob().await;
    // bob is known from what he sent; carol is not.
    let note = remote_post(&app, &remote, &bob, 1, "public", None).await;
    remote.actor("carol", 1, KeyStyle::Fragment);
    // The same server, its GraphQL without federation.
    let url = url::Url::parse(&app.base_url).unwrap_or_else(|e| panic!("{e}"));
    let local_only = router(AppState::with_projections(
        app.pool.clone(),
        app.store.clone(),
        &url,
        app.projections.clone(),
    ));
    let graphql = |query: &'static str, variables: Value| {
        let router = local_only.clone();
        let token = alice.token.clone();
        async move {
            let request = Request::post("/graphql")
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {token}"))
                .body(Body::from(
                    json!({ "query": query, "variables": variables }).to_string(),
                ))
                .unwrap_or_else(|e| panic!("{e}"));
            let response = router.oneshot(request).await.unwrap_or_else(|e| match e {});
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null)
        }
    };

    let carol = format!("carol@{}", remote.host());
    let response = graphql(FOLLOW, json!({ "a": carol })).await;
    assert_eq!(
        response["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{response}"
    );
    assert_eq!(
        response["errors"][0]["message"],
        format!("no such actor: {carol}")
    );
    assert!(remote.webfingers().is_empty());

    let response = graphql(FOLLOW, json!({ "a": format!("bob@{}", remote.host()) })).await;
    assert_eq!(
        response["data"]["follow"]["following"], "REQUESTED",
        "{response}"
    );
    // Remote posts Chorus holds need no federation either.
    let response = graphql(FAVORITE, json!({ "p": note })).await;
    assert_eq!(
        response["data"]["favorite"]["favorited"], true,
        "{response}"
    );
    // Nor do mentions of known actors; unknown ones stay text.
    let response = graphql(
        CREATE,
        json!({ "text": format!("@bob@{0} @carol@{0}", remote.host()) }),
    )
    .await;
    assert_eq!(
        response["data"]["createPost"]["mentions"],
        json!([bob.uri]),
        "{response}"
    );
    assert!(remote.webfingers().is_empty());
}

#[tokio::test]
async fn an_unknown_remote_actor_is_blocked_by_address_and_unblocked_by_id() {
    let (app, alice, remote, bob) = alice_and_bob().await;
    let address = format!("bob@{}", remote.host());
    let block = "mutation($a: String!) { block(actor: $a) { actor blocking following } }";
    let unblock = "mutation($a: String!) { unblock(actor: $a) { actor blocking } }";

    let blocked = app
        .ok(Some(&alice.token), block, json!({ "a": address }))
        .await;
    assert_eq!(
        blocked["block"],
        json!({ "actor": bob.uri, "blocking": true, "following": "NONE" })
    );
    assert_eq!(remote.webfingers(), [format!("acct:{address}")]);
    let sent = received(&remote, "Block").await;
    assert_eq!(sent["actor"], alice.uri.as_str());
    assert_eq!(sent["object"], bob.uri.as_str());

    let lifted = app
        .ok(Some(&alice.token), unblock, json!({ "a": bob.uri }))
        .await;
    assert_eq!(
        lifted["unblock"],
        json!({ "actor": bob.uri, "blocking": false })
    );
    let undo = received(&remote, "Undo").await;
    assert_eq!(undo["object"]["type"], "Block");
    assert_eq!(undo["object"]["id"], sent["id"]);

    // Nobody there: a clear error, and nothing recorded.
    let response = app
        .graphql(
            Some(&alice.token),
            block,
            json!({ "a": format!("nobody@{}", remote.host()) }),
        )
        .await;
    assert_ne!(
        response["errors"][0]["extensions"]["code"],
        Value::Null,
        "{response}"
    );
    assert_eq!(events_of(&app, "Blocked").await.len(), 1);
}
