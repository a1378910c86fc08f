//! Servers as ActivityPub Groups, between two Chorus servers on 127.0.0.1
//! (`alpha.localhost` and `beta.localhost`, each with its own database):
//! a user on beta discovers a server on alpha and joins it, posts in a
//! channel, a member on alpha sees the message, another member on beta
//! receives the server's announcement; a moderator's removal propagates;
//! a banned member's messages are refused. Every action goes through its
//! real entry point (GraphQL, the inboxes, the delivery workers).

use std::time::Duration;

use chorus_tests::app::{Account, TestApp, spawn_app, spawn_app_pair};
use chorus_tests::poll::{self, text};
use reqwest::header::ACCEPT;
use serde_json::{Value, json};

const CREATE: &str = "mutation($i: CreateServerInput!) {
    createServer(input: $i) { id name membership memberCount channels { name uri } }
}";
const FOLLOW: &str = "mutation($a: String!) { follow(actor: $a) { following } }";
const POST_MESSAGE: &str = "mutation($s: String!, $c: String, $t: String!) {
    postMessage(server: $s, channel: $c, input: { text: $t }) { uri }
}";
const MODERATE: &str = "mutation($s: String!, $m: String!, $a: ModerationAction!) {
    moderateMember(server: $s, member: $m, action: $a) { memberCount }
}";
const REMOVE: &str = "mutation($s: String!, $p: ID!) { removeMessage(server: $s, post: $p) }";
const MESSAGES: &str = "query($s: String!) {
    server(name: $s) { messages { channel author post { uri content } } }
}";
const HOME: &str = "{ timeline(kind: HOME) { nodes { post { uri } rebloggedBy { id } } } }";

const DEADLINE: Duration = Duration::from_secs(15);

async fn until_sql(app: &TestApp, expected: Option<&str>, sql: &str, binds: &[&str]) {
    poll::until_sql(app, DEADLINE, expected, sql, binds).await;
}

async fn until_graphql(
    app: &TestApp,
    token: &str,
    query: &str,
    variables: Value,
    check: impl Fn(&Value) -> bool,
) -> Value {
    poll::until_graphql(app, DEADLINE, Some(token), query, variables, check).await
}

const FOLLOW_STATE: &str = "SELECT state FROM follows WHERE follower = $1 AND followee = $2";

struct World {
    alpha: TestApp,
    beta: TestApp,
    alice: Account,
    erin: Account,
    bob: Account,
    dave: Account,
    server: String,
}

impl World {
    async fn start() -> Self {
        let (alpha, beta) = spawn_app_pair().await;
        let alice = alpha.account("alice", false).await;
        let erin = alpha.account("erin", false).await;
        let bob = beta.account("bob", false).await;
        let dave = beta.account("dave", false).await;
        let created = alpha
            .ok(
                Some(&alice.token),
                CREATE,
                json!({ "i": { "name": "Rust", "displayName": "Rustaceans",
                               "description": "All things Rust",
                               "channels": [{ "name": "general" }, { "name": "help", "topic": "Questions" }] } }),
            )
            .await;
        let server = created["createServer"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{created}"))
            .to_owned();
        assert_eq!(server, format!("{}/servers/rust", alpha.base_url));
        assert_eq!(created["createServer"]["membership"], "OPEN");
        Self {
            alpha,
            beta,
            alice,
            erin,
            bob,
            dave,
            server,
        }
    }

    fn acct(&self) -> String {
        format!("rust@{}", self.alpha.base_url.trim_start_matches("http://"))
    }
}

#[tokio::test]
async fn a_server_is_a_group_joined_posted_in_announced_moderated_and_banned_across_servers() {
    let w = World::start().await;

    // Discovery: WebFinger names the Group, whose document peers can read.
    let (status, group) = w.alpha.activitypub(&w.server).await;
    assert_eq!(status, 200, "{group}");
    assert_eq!(group["type"], "Group");
    assert_eq!(group["preferredUsername"], "rust");
    assert_eq!(group["name"], "Rustaceans");
    assert_eq!(group["inbox"], format!("{}/inbox", w.server));
    assert_eq!(group["followers"], format!("{}/followers", w.server));
    assert!(group["publicKey"]["publicKeyPem"].is_string());
    assert_eq!(
        group["channels"],
        json!([
            format!("{}/channels/general", w.server),
            format!("{}/channels/help", w.server)
        ])
    );
    let (status, _) = w
        .alpha
        .activitypub(&format!("{}/users/rust", w.alpha.base_url))
        .await;
    assert_eq!(status, 404, "a server is not an account");

    // Joining from beta: bob and dave follow the Group; it is open, so the
    // Group accepts at once (signed with its own key).
    for member in [&w.bob, &w.dave] {
        w.beta
            .ok(Some(&member.token), FOLLOW, json!({ "a": w.acct() }))
            .await;
        for app in [&w.alpha, &w.beta] {
            until_sql(
                app,
                Some("accepted"),
                FOLLOW_STATE,
                &[&member.uri, &w.server],
            )
            .await;
        }
    }
    // erin joins from alpha itself.
    w.alpha
        .ok(
            Some(&w.erin.token),
            "mutation($s: String!) { joinServer(server: $s) { memberCount } }",
            json!({ "s": "rust" }),
        )
        .await;
    until_sql(
        &w.alpha,
        Some("accepted"),
        FOLLOW_STATE,
        &[&w.erin.uri, &w.server],
    )
    .await;
    let (_, members) = w
        .alpha
        .activitypub(&format!("{}/followers", w.server))
        .await;
    assert_eq!(members["totalItems"], 3, "{members}");

    // bob posts in #help from beta: alpha checks him, stores the message
    // and announces it.
    let posted = w
        .beta
        .ok(
            Some(&w.bob.token),
            POST_MESSAGE,
            json!({ "s": w.acct(), "c": "help", "t": "How do lifetimes work?" }),
        )
        .await;
    let message = posted["postMessage"]["uri"]
        .as_str()
        .unwrap_or_else(|| panic!("{posted}"))
        .to_owned();
    until_sql(
        &w.alpha,
        Some("help"),
        "SELECT channel FROM channel_messages WHERE server = $2 AND post = $1",
        &[&message, &w.server],
    )
    .await;
    // A member on alpha sees it in the server's messages.
    until_graphql(
        &w.alpha,
        &w.erin.token,
        MESSAGES,
        json!({ "s": "rust" }),
        |d| d.pointer("/server/messages/0/post/uri") == Some(&json!(message)),
    )
    .await;
    // ... and in her home timeline, shared by the server.
    until_graphql(&w.alpha, &w.erin.token, HOME, json!({}), |d| {
        d["timeline"]["nodes"].as_array().is_some_and(|items| {
            items.iter().any(|i| {
                i["post"]["uri"] == json!(message) && i["rebloggedBy"]["id"] == json!(w.server)
            })
        })
    })
    .await;
    // dave, a member on beta, gets the Group's announcement: the post shared
    // by the Group in his home timeline.
    until_graphql(&w.beta, &w.dave.token, HOME, json!({}), |d| {
        d["timeline"]["nodes"].as_array().is_some_and(|items| {
            items.iter().any(|i| {
                i["post"]["uri"] == json!(message) && i["rebloggedBy"]["id"] == json!(w.server)
            })
        })
    })
    .await;
    // The outbox lists the announcement; the channel lists the message.
    let (_, outbox) = w
        .alpha
        .activitypub(&format!("{}/outbox?page=true", w.server))
        .await;
    assert_eq!(outbox["orderedItems"][0]["type"], "Announce", "{outbox}");
    assert_eq!(outbox["orderedItems"][0]["object"], json!(message));
    let (_, channel) = w
        .alpha
        .activitypub(&format!("{}/channels/help?page=true", w.server))
        .await;
    assert_eq!(channel["orderedItems"], json!([message]), "{channel}");

    // The owner removes the message: gone from the server, and the Group
    // takes back its share on beta.
    w.alpha
        .ok(
            Some(&w.alice.token),
            REMOVE,
            json!({ "s": "rust", "p": message }),
        )
        .await;
    until_graphql(
        &w.alpha,
        &w.erin.token,
        MESSAGES,
        json!({ "s": "rust" }),
        |d| d.pointer("/server/messages") == Some(&json!([])),
    )
    .await;
    until_graphql(&w.alpha, &w.erin.token, HOME, json!({}), |d| {
        d["timeline"]["nodes"].as_array().is_some_and(|items| {
            !items
                .iter()
                .any(|i| i["rebloggedBy"]["id"] == json!(w.server))
        })
    })
    .await;
    until_graphql(&w.beta, &w.dave.token, HOME, json!({}), |d| {
        d["timeline"]["nodes"].as_array().is_some_and(|items| {
            !items
                .iter()
                .any(|i| i["rebloggedBy"]["id"] == json!(w.server))
        })
    })
    .await;

    // bob deletes a message of his own: the server drops it and takes back
    // its share.
    let second = w
        .beta
        .ok(
            Some(&w.bob.token),
            POST_MESSAGE,
            json!({ "s": w.acct(), "t": "never mind" }),
        )
        .await;
    let second = second["postMessage"]["uri"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    until_sql(
        &w.alpha,
        Some("general"),
        "SELECT channel FROM channel_messages WHERE server = $2 AND post = $1",
        &[&second, &w.server],
    )
    .await;
    w.beta
        .ok(
            Some(&w.bob.token),
            "mutation($id: ID!) { deletePost(id: $id) }",
            json!({ "id": second }),
        )
        .await;
    until_sql(
        &w.alpha,
        Some(&w.bob.uri),
        "SELECT removed_by FROM channel_messages WHERE server = $2 AND post = $1",
        &[&second, &w.server],
    )
    .await;

    // A ban: dave's follow of the Group ends, and what he posts to it is
    // refused and not stored.
    w.alpha
        .ok(
            Some(&w.alice.token),
            MODERATE,
            json!({ "s": "rust", "m": w.dave.uri, "a": "BAN" }),
        )
        .await;
    for app in [&w.alpha, &w.beta] {
        until_sql(app, None, FOLLOW_STATE, &[&w.dave.uri, &w.server]).await;
    }
    let refused = w
        .beta
        .ok(
            Some(&w.dave.token),
            POST_MESSAGE,
            json!({ "s": w.acct(), "t": "let me back in" }),
        )
        .await;
    let refused = refused["postMessage"]["uri"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    until_sql(
        &w.alpha,
        Some("refused"),
        "SELECT outcome FROM received_activities WHERE actor = $1 AND activity_type = 'Create'",
        &[&w.dave.uri],
    )
    .await;
    let reason = text(
        &w.alpha,
        "SELECT reason FROM received_activities WHERE actor = $1 AND activity_type = 'Create'",
        &[&w.dave.uri],
    )
    .await
    .unwrap_or_default();
    assert!(reason.contains("banned"), "{reason}");
    assert_eq!(
        text(
            &w.alpha,
            "SELECT uri FROM posts WHERE uri = $1",
            &[&refused]
        )
        .await,
        None,
        "a refused message is not stored"
    );
}

#[tokio::test]
async fn servers_are_found_served_to_browsers_and_guarded_against_bad_input() {
    let app = spawn_app().await;
    let alice = app.account("alice", false).await;
    let bob = app.account("bob", false).await;
    let created = app
        .ok(
            Some(&alice.token),
            CREATE,
            json!({ "i": { "name": "books", "membership": "APPROVAL" } }),
        )
        .await;
    assert_eq!(created["createServer"]["channels"][0]["name"], "general");

    // Names are shared with accounts, and checked.
    for (name, code) in [
        ("bob", "NAME_TAKEN"),
        ("books", "NAME_TAKEN"),
        ("no way", "INVALID_HANDLE"),
    ] {
        let code_seen = app
            .error_code(Some(&alice.token), CREATE, json!({ "i": { "name": name } }))
            .await;
        assert_eq!(code_seen, code, "{name}");
    }
    let code = app
        .error_code(
            Some(&bob.token),
            "mutation { createAccountLike: createServer(input: { name: \"x1\", channels: [{ name: \"a b\" }] }) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(code, "INVALID_CHANNEL");

    // WebFinger finds it.
    let host = app.base_url.trim_start_matches("http://");
    let jrd: Value = reqwest::get(format!(
        "{}/.well-known/webfinger?resource=acct:books@{host}",
        app.base_url
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .json()
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        jrd["links"][0]["href"],
        format!("{}/servers/books", app.base_url)
    );

    // Browsers get a page.
    let page = reqwest::Client::new()
        .get(format!("{}/servers/books", app.base_url))
        .header(ACCEPT, "text/html")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap_or_default();
    assert!(html.contains("approval-required"), "{html}");

    // Approval: bob's request waits for a moderator; a stranger cannot
    // post, approve or add channels.
    app.ok(
        Some(&bob.token),
        "mutation { joinServer(server: \"books\") { memberCount } }",
        json!({}),
    )
    .await;
    let pending = app
        .ok(
            Some(&alice.token),
            "{ server(name: \"books\") { members(pending: true) { actor role } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        pending["server"]["members"],
        json!([{ "actor": bob.uri, "role": "PENDING" }])
    );
    assert_eq!(
        app.error_code(
            Some(&bob.token),
            POST_MESSAGE,
            json!({ "s": "books", "t": "hi" })
        )
        .await,
        "NOT_MEMBER"
    );
    assert_eq!(
        app.error_code(
            Some(&bob.token),
            MODERATE,
            json!({ "s": "books", "m": bob.uri, "a": "APPROVE" })
        )
        .await,
        "FORBIDDEN"
    );
    assert_eq!(
        app.error_code(
            Some(&bob.token),
            "mutation { addChannel(server: \"books\", name: \"mine\") { id } }",
            json!({})
        )
        .await,
        "FORBIDDEN"
    );
    // Approved, bob posts; a channel that does not exist is refused.
    let approved = app
        .ok(
            Some(&alice.token),
            MODERATE,
            json!({ "s": "books", "m": bob.uri, "a": "APPROVE" }),
        )
        .await;
    assert_eq!(approved["moderateMember"]["memberCount"], 1);
    assert_eq!(
        app.error_code(
            Some(&bob.token),
            POST_MESSAGE,
            json!({ "s": "books", "c": "nope", "t": "hi" })
        )
        .await,
        "NO_SUCH_CHANNEL"
    );
    let posted = app
        .ok(
            Some(&bob.token),
            POST_MESSAGE,
            json!({ "s": "books", "t": "first!" }),
        )
        .await;
    let uri = posted["postMessage"]["uri"].as_str().unwrap_or_default();
    let (_, note) = app.activitypub(uri).await;
    assert_eq!(note["audience"], format!("{}/servers/books", app.base_url));
    assert_eq!(
        note["context"],
        format!("{}/servers/books/channels/general", app.base_url)
    );
    let messages = app
        .ok(Some(&alice.token), MESSAGES, json!({ "s": "books" }))
        .await;
    assert_eq!(messages["server"]["messages"][0]["post"]["uri"], json!(uri));
    assert_eq!(messages["server"]["messages"][0]["channel"], "general");
    // A like of the message and its author's edit are passed on by the
    // server to its members.
    app.ok(
        Some(&alice.token),
        "mutation($p: ID!) { favorite(post: $p) { favorited } }",
        json!({ "p": uri }),
    )
    .await;
    app.ok(
        Some(&bob.token),
        "mutation($id: ID!) { editPost(id: $id, input: { text: \"first! (edited)\" }) { uri } }",
        json!({ "id": uri }),
    )
    .await;
    let passed_on: Vec<String> = sqlx::query_scalar(
        "SELECT payload->>'activity_type' FROM events
         WHERE event_type = 'ChannelActivityAnnounced' ORDER BY transaction_id, seq",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(passed_on, ["Like", "Update"]);
    // Only its author or a moderator removes a message.
    let eve = app.account("eve", false).await;
    assert_eq!(
        app.error_code(Some(&eve.token), REMOVE, json!({ "s": "books", "p": uri }))
            .await,
        "FORBIDDEN"
    );
}

#[tokio::test]
async fn an_open_server_may_take_replies_from_anyone_but_posts_from_members_only() {
    let app = spawn_app().await;
    let alice = app.account("alice", false).await;
    let eve = app.account("eve", false).await;
    let created = app
        .ok(
            Some(&alice.token),
            "mutation { createServer(input: { name: \"garden\", openReplies: true }) { openReplies } }",
            json!({}),
        )
        .await;
    assert_eq!(created["createServer"]["openReplies"], true);
    let posted = app
        .ok(
            Some(&alice.token),
            POST_MESSAGE,
            json!({ "s": "garden", "c": "general", "t": "what grows in shade?" }),
        )
        .await;
    let message = posted["postMessage"]["uri"].as_str().unwrap_or_default();
    // eve is no member: a message of her own is refused, a reply is taken.
    assert_eq!(
        app.error_code(
            Some(&eve.token),
            POST_MESSAGE,
            json!({ "s": "garden", "t": "hi" })
        )
        .await,
        "NOT_MEMBER"
    );
    let reply = app
        .ok(
            Some(&eve.token),
            "mutation($s: String!, $t: String!, $r: ID!) {
                postMessage(server: $s, input: { text: $t, inReplyTo: $r }) { uri inReplyTo { uri } }
            }",
            json!({ "s": "garden", "t": "ferns", "r": message }),
        )
        .await;
    assert_eq!(reply["postMessage"]["inReplyTo"]["uri"], json!(message));
    let messages = app
        .ok(Some(&alice.token), MESSAGES, json!({ "s": "garden" }))
        .await;
    assert_eq!(
        messages["server"]["messages"][0]["post"]["uri"],
        reply["postMessage"]["uri"]
    );
    assert_eq!(messages["server"]["messages"][0]["channel"], "general");
}
