//! Two Chorus servers, `alpha.localhost` and `beta.localhost` (both on
//! 127.0.0.1, each with its own port and database), walking every row of
//! the Inbound and Outbound tables of docs/FEDERATION.md that applies
//! between two Chorus servers. Every action goes through its real entry
//! point (a GraphQL mutation with a bearer token on the acting server);
//! between the two run the real delivery planner and senders, the other
//! server's inbox (signature verification included) and its interpreter.
//! After each step both servers' read models are checked, with SQL and
//! GraphQL, polling for up to ten seconds.
//!
//! Not covered, because Chorus never sends them: Update and Delete of an
//! actor (no profile edits or account deletions yet).

use std::time::Duration;

use chorus_tests::app::{Account, TestApp, spawn_app_pair};
use chorus_tests::poll::{self, text};
use serde_json::{Value, json};

const FOLLOW: &str = "mutation($a: String!) { follow(actor: $a) { actor following } }";
const UNFOLLOW: &str = "mutation($a: String!) { unfollow(actor: $a) { following } }";
const APPROVE: &str = "mutation($a: String!) { approveFollowRequest(actor: $a) { followedBy } }";
const REJECT: &str = "mutation($a: String!) { rejectFollowRequest(actor: $a) { followedBy } }";
const BLOCK: &str = "mutation($a: String!) { block(actor: $a) { actor blocking } }";
const UNBLOCK: &str = "mutation($a: String!) { unblock(actor: $a) { blocking } }";
const POST: &str = "mutation($t: String!, $v: Visibility = PUBLIC, $r: ID) {
    createPost(input: { text: $t, visibility: $v, inReplyTo: $r }) { id uri }
}";
const EDIT: &str =
    "mutation($id: ID!, $t: String!) { editPost(id: $id, input: { text: $t }) { uri } }";
const DELETE: &str = "mutation($id: ID!) { deletePost(id: $id) }";
const FAVORITE: &str = "mutation($p: ID!) { favorite(post: $p) { favorited } }";
const UNFAVORITE: &str = "mutation($p: ID!) { unfavorite(post: $p) { favorited } }";
const REBLOG: &str = "mutation($p: ID!) { reblog(post: $p) { reblogged } }";
const UNREBLOG: &str = "mutation($p: ID!) { unreblog(post: $p) { reblogged } }";

const RELATIONSHIP: &str = "query($u: String!) {
    actor(uri: $u) { relationship { following followedBy blocking blockedBy } }
}";
const FOLLOWERS: &str = "query($a: String!) { followers(actor: $a) { nodes { id } } }";
const FOLLOWING: &str = "query($a: String!) { following(actor: $a) { nodes { id } } }";
const FOLLOW_REQUESTS: &str = "{ followRequests { nodes { id } } }";
const NOTIFICATIONS: &str = "{ notifications { nodes { kind actor { id } post { uri } } } }";
const HOME: &str = "{ timeline(kind: HOME) { nodes { post { uri } rebloggedBy { id } } } }";
const PUBLIC_TIMELINE: &str = "{ timeline(kind: PUBLIC) { nodes { post { uri } } } }";
const THREAD: &str = "query($id: ID!) { thread(id: $id) { uri } }";
const SEEN_POST: &str = "query($id: ID!) {
    post(id: $id) {
        author { id } content visibility hashtags mentions
        inReplyTo { uri } editedAt edits { version }
        favoritesCount reblogsCount repliesCount
    }
}";

const FOLLOW_STATE: &str = "SELECT state FROM follows WHERE follower = $1 AND followee = $2";
const FOLLOW_ID: &str = "SELECT follow_id FROM follows WHERE follower = $1 AND followee = $2";
const BLOCK_ID: &str = "SELECT block_id FROM blocks WHERE blocker = $1 AND blocked = $2";
const LIKE_ID: &str = "SELECT like_id FROM favorites WHERE actor = $1 AND post = $2";
const ANNOUNCE_ID: &str = "SELECT announce_id FROM reblogs WHERE actor = $1 AND post = $2";

const DEADLINE: Duration = Duration::from_secs(10);

async fn until_sql(app: &TestApp, expected: Option<&str>, sql: &str, binds: &[&str]) {
    poll::until_sql(app, DEADLINE, expected, sql, binds).await;
}

/// Waits until the GraphQL `query`, run on `app` as `token`'s owner, has
/// `expected` at `pointer` in its data; returns the data.
async fn until_graphql(
    app: &TestApp,
    token: Option<&str>,
    query: &str,
    variables: Value,
    pointer: &str,
    expected: Value,
) -> Value {
    poll::until_graphql(app, DEADLINE, token, query, variables, |data| {
        data.pointer(pointer) == Some(&expected)
    })
    .await
}

/// Waits until both servers have the follow `follower` → `followee` in
/// `state` (`None`: no follow).
async fn follow_is(s: &Servers, follower: &Account, followee: &Account, state: Option<&str>) {
    for app in [&s.alpha, &s.beta] {
        until_sql(app, state, FOLLOW_STATE, &[&follower.uri, &followee.uri]).await;
    }
}

/// Waits until `post`, as `token`'s owner sees it on `app`, has `edits`
/// and content containing `text` (the post and its edits are read by
/// separate statements); returns what was seen.
async fn until_edited(app: &TestApp, token: &str, post: &str, edits: Value, text: &str) -> Value {
    poll::until_graphql(
        app,
        DEADLINE,
        Some(token),
        SEEN_POST,
        json!({ "id": post }),
        |data| {
            data.pointer("/post/edits") == Some(&edits)
                && data
                    .pointer("/post/content")
                    .and_then(Value::as_str)
                    .is_some_and(|c| c.contains(text))
        },
    )
    .await
}

/// Checks that `app` acted on every activity it received: none was
/// ignored, refused or left unsupported.
async fn all_applied(app: &TestApp) {
    app.settle().await;
    let not_applied: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT activity_type, activity_id, outcome, reason FROM received_activities
         WHERE outcome IS NOT NULL",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        not_applied.is_empty(),
        "{} did not act on {not_applied:?}",
        app.base_url
    );
}

/// How many activities `app` received, of `activity_type`, from `actor`.
async fn received(app: &TestApp, activity_type: &str, actor: &Account) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM received_activities WHERE activity_type = $1 AND actor = $2",
    )
    .bind(activity_type)
    .bind(&actor.uri)
    .fetch_one(&app.pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The text at `pointer` in `value`.
fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no {pointer} in {value}"))
}

/// Actors as GraphQL lists them (`nodes { id }`).
fn ids(uris: &[&str]) -> Value {
    Value::Array(uris.iter().map(|u| json!({ "id": u })).collect())
}

/// A post as a timeline lists it.
fn item(post: &str, reblogged_by: Option<&Account>) -> Value {
    json!({ "post": { "uri": post }, "rebloggedBy": reblogged_by.map(|a| json!({ "id": a.uri })) })
}

/// A notification as GraphQL shows it.
fn notification(kind: &str, actor: &Account, post: Option<&str>) -> Value {
    json!({ "kind": kind, "actor": { "id": actor.uri }, "post": post.map(|p| json!({ "uri": p })) })
}

/// Two servers under names of their own, and two accounts on each: on
/// alpha, alice (unlocked) and carol (locked); on beta, bob (unlocked) and
/// dave (locked).
struct Servers {
    alpha: TestApp,
    beta: TestApp,
    alice: Account,
    carol: Account,
    bob: Account,
    dave: Account,
}

impl Servers {
    async fn start() -> Self {
        let (alpha, beta) = spawn_app_pair().await;
        let alice = alpha.account("alice", false).await;
        let carol = alpha.account("carol", true).await;
        let bob = beta.account("bob", false).await;
        let dave = beta.account("dave", true).await;
        Self {
            alpha,
            beta,
            alice,
            carol,
            bob,
            dave,
        }
    }

    /// The server `account` lives on.
    fn home_of(&self, account: &Account) -> &TestApp {
        if account.uri.starts_with(&self.alpha.base_url) {
            &self.alpha
        } else {
            &self.beta
        }
    }

    /// The server `account` does not live on.
    fn other_than(&self, account: &Account) -> &TestApp {
        if account.uri.starts_with(&self.alpha.base_url) {
            &self.beta
        } else {
            &self.alpha
        }
    }

    /// The activity id (a Like's, an Announce's, a Block's) that `sql`
    /// finds for `binds` on `actor`'s own server, once the other server
    /// holds the same one.
    async fn crossed(&self, actor: &Account, sql: &str, binds: &[&str]) -> String {
        let home = self.home_of(actor);
        let id = text(home, sql, binds).await;
        let id = id.unwrap_or_else(|| panic!("{} has nothing for {sql} {binds:?}", home.base_url));
        until_sql(self.other_than(actor), Some(&id), sql, binds).await;
        id
    }

    /// `account`'s address, `handle@host:port`, as the other server asks
    /// WebFinger for it.
    fn address(&self, account: &Account) -> String {
        let host = self.home_of(account).base_url.trim_start_matches("http://");
        format!("{}@{host}", account.handle)
    }

    /// `follower` follows `followee`, unlocked, and both servers show it
    /// accepted.
    async fn follow(&self, follower: &Account, followee: &Account) {
        self.home_of(follower)
            .ok(Some(&follower.token), FOLLOW, json!({ "a": followee.uri }))
            .await;
        follow_is(self, follower, followee, Some("accepted")).await;
    }

    /// `author` publishes `text` with `visibility`; returns its id and URI.
    async fn post(&self, author: &Account, text: &str, visibility: &str) -> (String, String) {
        let posted = self
            .home_of(author)
            .ok(
                Some(&author.token),
                POST,
                json!({ "t": text, "v": visibility }),
            )
            .await;
        (
            str_at(&posted, "/createPost/id").to_owned(),
            str_at(&posted, "/createPost/uri").to_owned(),
        )
    }

    async fn all_applied(&self) {
        all_applied(&self.alpha).await;
        all_applied(&self.beta).await;
    }
}

/// Ids and addresses carry each server's own name, and WebFinger finds an
/// account by it.
#[tokio::test]
async fn the_servers_have_names_of_their_own() {
    let s = Servers::start().await;
    assert!(
        s.alice.uri.starts_with("http://alpha.localhost:"),
        "{}",
        s.alice.uri
    );
    assert!(
        s.bob.uri.starts_with("http://beta.localhost:"),
        "{}",
        s.bob.uri
    );
    // Each knows the other's accounts by address, with WebFinger.
    let found = s
        .beta
        .ok(
            Some(&s.bob.token),
            FOLLOW,
            json!({ "a": s.address(&s.alice) }),
        )
        .await;
    assert_eq!(found["follow"]["actor"], s.alice.uri.as_str());
    let seen = until_graphql(
        &s.beta,
        Some(&s.bob.token),
        "query($h: String!) { actor(handle: $h) { id acct local } }",
        json!({ "h": s.address(&s.alice) }),
        "/actor/id",
        json!(s.alice.uri),
    )
    .await;
    assert_eq!(seen["actor"]["acct"], s.address(&s.alice).as_str());
    assert_eq!(seen["actor"]["local"], false);
    until_sql(
        &s.beta,
        Some(s.alpha.base_url.trim_start_matches("http://")),
        "SELECT domain FROM actors WHERE uri = $1 AND NOT local",
        &[&s.alice.uri],
    )
    .await;
}

/// Follow and its Accept (automatic), Accept and Reject of a locked
/// account's requests, Reject of an accepted follower, and Undo{Follow} of
/// a request and of a follow; both ways between the servers.
#[tokio::test]
async fn follows_are_accepted_approved_rejected_withdrawn_and_ended() {
    let s = Servers::start().await;
    let (alpha, beta) = (&s.alpha, &s.beta);
    let (alice, carol, bob, dave) = (&s.alice, &s.carol, &s.bob, &s.dave);

    // bob follows alice by address (WebFinger): alice is unlocked, so
    // alpha accepts at once and its Accept reaches beta.
    let followed = beta
        .ok(Some(&bob.token), FOLLOW, json!({ "a": s.address(alice) }))
        .await;
    assert_eq!(followed["follow"]["actor"], alice.uri.as_str());
    follow_is(&s, bob, alice, Some("accepted")).await;
    // One Follow, the same on both sides.
    let follow_id = text(beta, FOLLOW_ID, &[&bob.uri, &alice.uri]).await;
    assert!(follow_id.is_some());
    assert_eq!(
        text(alpha, FOLLOW_ID, &[&bob.uri, &alice.uri]).await,
        follow_id
    );
    until_graphql(
        beta,
        Some(&bob.token),
        RELATIONSHIP,
        json!({ "u": alice.uri }),
        "/actor/relationship/following",
        json!("ACCEPTED"),
    )
    .await;
    until_graphql(
        beta,
        None,
        FOLLOWING,
        json!({ "a": bob.uri }),
        "/following/nodes",
        ids(&[&alice.uri]),
    )
    .await;
    until_graphql(
        alpha,
        None,
        FOLLOWERS,
        json!({ "a": "alice" }),
        "/followers/nodes",
        ids(&[&bob.uri]),
    )
    .await;
    until_graphql(
        alpha,
        Some(&alice.token),
        NOTIFICATIONS,
        json!({}),
        "/notifications/nodes",
        json!([notification("FOLLOWED", bob, None)]),
    )
    .await;

    // carol is locked: bob's request waits for her approval on both sides.
    beta.ok(Some(&bob.token), FOLLOW, json!({ "a": carol.uri }))
        .await;
    follow_is(&s, bob, carol, Some("requested")).await;
    until_graphql(
        alpha,
        Some(&carol.token),
        FOLLOW_REQUESTS,
        json!({}),
        "/followRequests/nodes",
        ids(&[&bob.uri]),
    )
    .await;
    until_graphql(
        alpha,
        Some(&carol.token),
        NOTIFICATIONS,
        json!({}),
        "/notifications/nodes",
        json!([notification("FOLLOW_REQUESTED", bob, None)]),
    )
    .await;
    let approved = alpha
        .ok(Some(&carol.token), APPROVE, json!({ "a": bob.uri }))
        .await;
    assert_eq!(approved["approveFollowRequest"]["followedBy"], "ACCEPTED");
    follow_is(&s, bob, carol, Some("accepted")).await;
    until_graphql(
        beta,
        Some(&bob.token),
        RELATIONSHIP,
        json!({ "u": carol.uri }),
        "/actor/relationship/following",
        json!("ACCEPTED"),
    )
    .await;
    until_graphql(
        alpha,
        Some(&carol.token),
        FOLLOW_REQUESTS,
        json!({}),
        "/followRequests/nodes",
        json!([]),
    )
    .await;

    // dave's request she rejects: both sides record the refusal.
    beta.ok(Some(&dave.token), FOLLOW, json!({ "a": carol.uri }))
        .await;
    follow_is(&s, dave, carol, Some("requested")).await;
    alpha
        .ok(Some(&carol.token), REJECT, json!({ "a": dave.uri }))
        .await;
    follow_is(&s, dave, carol, Some("rejected")).await;
    until_graphql(
        beta,
        Some(&dave.token),
        RELATIONSHIP,
        json!({ "u": carol.uri }),
        "/actor/relationship/following",
        json!("REJECTED"),
    )
    .await;
    // dave may ask again: a new request, which carol approves this time.
    beta.ok(Some(&dave.token), FOLLOW, json!({ "a": carol.uri }))
        .await;
    follow_is(&s, dave, carol, Some("requested")).await;
    alpha
        .ok(Some(&carol.token), APPROVE, json!({ "a": dave.uri }))
        .await;
    follow_is(&s, dave, carol, Some("accepted")).await;

    // The other way: alice asks to follow dave (locked, on beta) by
    // address, then withdraws her request.
    alpha
        .ok(Some(&alice.token), FOLLOW, json!({ "a": s.address(dave) }))
        .await;
    follow_is(&s, alice, dave, Some("requested")).await;
    until_graphql(
        beta,
        Some(&dave.token),
        FOLLOW_REQUESTS,
        json!({}),
        "/followRequests/nodes",
        ids(&[&alice.uri]),
    )
    .await;
    alpha
        .ok(Some(&alice.token), UNFOLLOW, json!({ "a": dave.uri }))
        .await;
    follow_is(&s, alice, dave, None).await;
    until_graphql(
        beta,
        Some(&dave.token),
        FOLLOW_REQUESTS,
        json!({}),
        "/followRequests/nodes",
        json!([]),
    )
    .await;

    // alice asks again and dave approves: an Accept from beta to alpha.
    alpha
        .ok(Some(&alice.token), FOLLOW, json!({ "a": dave.uri }))
        .await;
    follow_is(&s, alice, dave, Some("requested")).await;
    beta.ok(Some(&dave.token), APPROVE, json!({ "a": alice.uri }))
        .await;
    follow_is(&s, alice, dave, Some("accepted")).await;

    // carol removes bob, an accepted follower: a Reject of an accepted
    // follow ends it on both sides.
    let removed = alpha
        .ok(Some(&carol.token), REJECT, json!({ "a": bob.uri }))
        .await;
    assert_eq!(removed["rejectFollowRequest"]["followedBy"], "REJECTED");
    follow_is(&s, bob, carol, Some("rejected")).await;
    until_graphql(
        beta,
        None,
        FOLLOWING,
        json!({ "a": bob.uri }),
        "/following/nodes",
        ids(&[&alice.uri]),
    )
    .await;

    // bob unfollows alice: gone on both.
    beta.ok(Some(&bob.token), UNFOLLOW, json!({ "a": alice.uri }))
        .await;
    follow_is(&s, bob, alice, None).await;
    until_graphql(
        alpha,
        None,
        FOLLOWERS,
        json!({ "a": "alice" }),
        "/followers/nodes",
        json!([]),
    )
    .await;
    // alice's follow of dave is untouched.
    follow_is(&s, alice, dave, Some("accepted")).await;
    // bob follows alice again: a new Follow, accepted again.
    s.follow(bob, alice).await;
    assert_ne!(
        text(beta, FOLLOW_ID, &[&bob.uri, &alice.uri]).await,
        follow_id
    );
    assert_eq!(received(alpha, "Follow", bob).await, 3);
    s.all_applied().await;
}

/// Create (public, unlisted, followers-only, direct; a reply from the other
/// server), Update and Delete of posts, both ways.
#[tokio::test]
async fn posts_replies_edits_and_deletes_reach_the_other_server() {
    let s = Servers::start().await;
    let (alpha, beta) = (&s.alpha, &s.beta);
    let (alice, bob, dave) = (&s.alice, &s.bob, &s.dave);
    let erin = beta.account("erin", false).await;
    s.follow(bob, alice).await;
    s.follow(&erin, alice).await;

    // alice posts: it reaches beta, once for both followers there (its
    // shared inbox), their home timelines and beta's public timeline.
    let (post_id, post) = s
        .post(alice, "hello from alpha #federation", "PUBLIC")
        .await;
    until_sql(
        alpha,
        Some(&format!("{}/inbox delivered", beta.base_url)),
        "SELECT string_agg(j.inbox || ' ' || j.state, ', ')
         FROM delivery_jobs j JOIN delivery_activities a USING (event_id)
         WHERE a.activity_id = $1",
        &[&format!("{post}/activity")],
    )
    .await;
    until_graphql(
        beta,
        Some(&erin.token),
        HOME,
        json!({}),
        "/timeline/nodes",
        json!([item(&post, None)]),
    )
    .await;
    let seen = until_graphql(
        beta,
        Some(&bob.token),
        SEEN_POST,
        json!({ "id": post }),
        "/post/author/id",
        json!(alice.uri),
    )
    .await;
    assert!(
        str_at(&seen, "/post/content").contains("hello from alpha"),
        "{seen}"
    );
    assert_eq!(seen["post"]["visibility"], "PUBLIC");
    assert_eq!(seen["post"]["hashtags"], json!(["federation"]));
    until_graphql(
        beta,
        Some(&bob.token),
        HOME,
        json!({}),
        "/timeline/nodes",
        json!([item(&post, None)]),
    )
    .await;
    until_graphql(
        beta,
        None,
        PUBLIC_TIMELINE,
        json!({}),
        "/timeline/nodes",
        json!([{ "post": { "uri": post } }]),
    )
    .await;

    // bob replies from beta: threaded under alice's post on both servers,
    // and alice, mentioned as the author replied to, is notified.
    let replied = beta
        .ok(
            Some(&bob.token),
            POST,
            json!({ "t": "hello back from beta", "r": post }),
        )
        .await;
    let (reply_id, reply) = (
        str_at(&replied, "/createPost/id").to_owned(),
        str_at(&replied, "/createPost/uri").to_owned(),
    );
    let seen = until_graphql(
        alpha,
        Some(&alice.token),
        SEEN_POST,
        json!({ "id": reply }),
        "/post/inReplyTo/uri",
        json!(post),
    )
    .await;
    assert_eq!(seen["post"]["author"]["id"], bob.uri.as_str());
    assert_eq!(seen["post"]["mentions"], json!([alice.uri]));
    for (app, token) in [(alpha, &alice.token), (beta, &bob.token)] {
        until_graphql(
            app,
            Some(token),
            THREAD,
            json!({ "id": post }),
            "/thread",
            json!([{ "uri": post }, { "uri": reply }]),
        )
        .await;
        until_graphql(
            app,
            Some(token),
            SEEN_POST,
            json!({ "id": post }),
            "/post/repliesCount",
            json!(1),
        )
        .await;
    }
    until_sql(
        alpha,
        Some(&post),
        "SELECT thread_root FROM posts WHERE uri = $1",
        &[&reply],
    )
    .await;
    until_graphql(
        alpha,
        Some(&alice.token),
        NOTIFICATIONS,
        json!({}),
        "/notifications/nodes/0",
        notification("MENTIONED", bob, Some(&reply)),
    )
    .await;
    until_graphql(
        alpha,
        Some(&alice.token),
        HOME,
        json!({}),
        "/timeline/nodes/0",
        item(&reply, None),
    )
    .await;

    // alice answers bob's reply: the conversation reads in order on both
    // servers, and bob is notified on beta.
    let answered = alpha
        .ok(
            Some(&alice.token),
            POST,
            json!({ "t": "and hello again", "r": reply }),
        )
        .await;
    let answer = str_at(&answered, "/createPost/uri").to_owned();
    until_graphql(
        beta,
        Some(&bob.token),
        NOTIFICATIONS,
        json!({}),
        "/notifications/nodes/0",
        notification("MENTIONED", alice, Some(&answer)),
    )
    .await;
    for (app, token) in [(alpha, &alice.token), (beta, &bob.token)] {
        until_graphql(
            app,
            Some(token),
            THREAD,
            json!({ "id": post }),
            "/thread",
            json!([{ "uri": post }, { "uri": reply }, { "uri": answer }]),
        )
        .await;
    }

    // alice edits twice in a row: beta keeps every version, in order.
    for text in ["hello again from alpha", "hello at last from alpha"] {
        alpha
            .ok(
                Some(&alice.token),
                EDIT,
                json!({ "id": post_id, "t": text }),
            )
            .await;
    }
    let seen = until_edited(
        beta,
        &bob.token,
        &post,
        json!([{ "version": 1 }, { "version": 2 }, { "version": 3 }]),
        "hello at last from alpha",
    )
    .await;
    assert!(seen["post"]["editedAt"].is_string(), "{seen}");

    // bob edits his reply: alpha shows the new text, still in the thread.
    beta.ok(
        Some(&bob.token),
        EDIT,
        json!({ "id": reply_id, "t": "hello back, edited" }),
    )
    .await;
    until_sql(
        alpha,
        Some(&reply),
        "SELECT uri FROM posts WHERE uri = $1 AND content LIKE '%hello back, edited%'",
        &[&reply],
    )
    .await;
    let seen = alpha
        .ok(Some(&alice.token), SEEN_POST, json!({ "id": reply }))
        .await;
    assert_eq!(seen["post"]["inReplyTo"]["uri"], post.as_str());
    assert_eq!(seen["post"]["mentions"], json!([alice.uri]));
    assert_eq!(
        seen["post"]["edits"],
        json!([{ "version": 1 }, { "version": 2 }])
    );

    // bob deletes his reply: a tombstone on alpha, out of the thread.
    beta.ok(Some(&bob.token), DELETE, json!({ "id": reply_id }))
        .await;
    until_sql(
        alpha,
        Some(""),
        "SELECT content FROM posts WHERE uri = $1 AND deleted_at IS NOT NULL",
        &[&reply],
    )
    .await;
    until_graphql(
        alpha,
        Some(&alice.token),
        THREAD,
        json!({ "id": post }),
        "/thread",
        json!([{ "uri": post }, { "uri": answer }]),
    )
    .await;

    // Unlisted: bob's home timeline, not the public timeline.
    let (_, unlisted) = s.post(alice, "quietly from alpha", "UNLISTED").await;
    until_graphql(
        beta,
        Some(&bob.token),
        HOME,
        json!({}),
        "/timeline/nodes/0",
        item(&unlisted, None),
    )
    .await;
    until_graphql(
        beta,
        Some(&bob.token),
        SEEN_POST,
        json!({ "id": unlisted }),
        "/post/visibility",
        json!("UNLISTED"),
    )
    .await;
    // Written by the same projection as the home timeline, so already
    // final.
    assert_eq!(
        text(
            beta,
            "SELECT post FROM public_timeline WHERE post = $1",
            &[&unlisted]
        )
        .await,
        None
    );

    // Followers only: bob sees it, dave (no follower) does not.
    let (_, private) = s.post(alice, "for my followers", "FOLLOWERS_ONLY").await;
    until_graphql(
        beta,
        Some(&bob.token),
        SEEN_POST,
        json!({ "id": private }),
        "/post/visibility",
        json!("FOLLOWERS_ONLY"),
    )
    .await;
    let hidden = beta
        .ok(Some(&dave.token), SEEN_POST, json!({ "id": private }))
        .await;
    assert_eq!(hidden["post"], Value::Null);

    // Direct, to dave by address: only dave has it, and is notified.
    let to_dave = format!("psst @{} only for you", s.address(dave));
    let (direct_id, direct) = s.post(alice, &to_dave, "DIRECT").await;
    let seen = until_graphql(
        beta,
        Some(&dave.token),
        SEEN_POST,
        json!({ "id": direct }),
        "/post/visibility",
        json!("DIRECT"),
    )
    .await;
    assert_eq!(seen["post"]["mentions"], json!([dave.uri]));
    until_graphql(
        beta,
        Some(&dave.token),
        NOTIFICATIONS,
        json!({}),
        "/notifications/nodes",
        json!([notification("MENTIONED", alice, Some(&direct))]),
    )
    .await;
    until_graphql(
        beta,
        Some(&dave.token),
        HOME,
        json!({}),
        "/timeline/nodes",
        json!([item(&direct, None)]),
    )
    .await;
    let hidden = beta
        .ok(Some(&bob.token), SEEN_POST, json!({ "id": direct }))
        .await;
    assert_eq!(hidden["post"], Value::Null);
    assert_eq!(
        text(
            beta,
            "SELECT post FROM home_timeline WHERE owner = $1 AND post = $2",
            &[&bob.uri, &direct]
        )
        .await,
        None
    );
    // Edited and deleted, it stays dave's alone.
    alpha
        .ok(
            Some(&alice.token),
            EDIT,
            json!({ "id": direct_id, "t": format!("{to_dave}, edited") }),
        )
        .await;
    let seen = until_edited(
        beta,
        &dave.token,
        &direct,
        json!([{ "version": 1 }, { "version": 2 }]),
        "edited",
    )
    .await;
    assert_eq!(seen["post"]["visibility"], "DIRECT");
    alpha
        .ok(Some(&alice.token), DELETE, json!({ "id": direct_id }))
        .await;
    until_sql(
        beta,
        Some(""),
        "SELECT content FROM posts WHERE uri = $1 AND deleted_at IS NOT NULL",
        &[&direct],
    )
    .await;

    // alice deletes her first post: a tombstone on beta, gone from bob's
    // home timeline and from the public timeline.
    alpha
        .ok(Some(&alice.token), DELETE, json!({ "id": post_id }))
        .await;
    until_sql(
        beta,
        Some(""),
        "SELECT content FROM posts WHERE uri = $1 AND deleted_at IS NOT NULL",
        &[&post],
    )
    .await;
    until_graphql(
        beta,
        Some(&bob.token),
        HOME,
        json!({}),
        "/timeline/nodes",
        json!([
            item(&private, None),
            item(&unlisted, None),
            item(&answer, None)
        ]),
    )
    .await;
    until_graphql(
        beta,
        None,
        PUBLIC_TIMELINE,
        json!({}),
        "/timeline/nodes",
        json!([{ "post": { "uri": answer } }]),
    )
    .await;
    s.all_applied().await;
}

/// Like, Announce and their Undos, both ways, with notifications and the
/// reblogs in followers' home timelines; an Announce of a post the
/// receiving server does not hold yet.
#[tokio::test]
async fn favorites_and_reblogs_cross_over_and_are_taken_back() {
    let s = Servers::start().await;
    let (alpha, beta) = (&s.alpha, &s.beta);
    let (alice, carol, bob, dave) = (&s.alice, &s.carol, &s.bob, &s.dave);
    s.follow(bob, alice).await;
    // carol, on alpha, follows bob: his reblogs reach her home timeline.
    s.follow(carol, bob).await;

    let (post_id, post) = s.post(alice, "favorite me", "PUBLIC").await;
    until_sql(
        beta,
        Some(&alice.uri),
        "SELECT author FROM posts WHERE uri = $1",
        &[&post],
    )
    .await;

    // bob favorites it: alpha counts it, with beta's Like, and notifies
    // alice.
    let favorited = beta
        .ok(Some(&bob.token), FAVORITE, json!({ "p": post }))
        .await;
    assert_eq!(favorited["favorite"]["favorited"], true);
    s.crossed(bob, LIKE_ID, &[&bob.uri, &post]).await;
    until_graphql(
        alpha,
        Some(&alice.token),
        SEEN_POST,
        json!({ "id": post_id }),
        "/post/favoritesCount",
        json!(1),
    )
    .await;
    until_graphql(
        alpha,
        Some(&alice.token),
        NOTIFICATIONS,
        json!({}),
        "/notifications/nodes/0",
        notification("FAVORITED", bob, Some(&post)),
    )
    .await;

    // bob reblogs it: alpha counts it, notifies alice, and shows it in
    // carol's home timeline as bob's reblog.
    let reblogged = beta
        .ok(Some(&bob.token), REBLOG, json!({ "p": post }))
        .await;
    assert_eq!(reblogged["reblog"]["reblogged"], true);
    s.crossed(bob, ANNOUNCE_ID, &[&bob.uri, &post]).await;
    until_graphql(
        alpha,
        Some(&alice.token),
        SEEN_POST,
        json!({ "id": post_id }),
        "/post/reblogsCount",
        json!(1),
    )
    .await;
    until_graphql(
        alpha,
        Some(&alice.token),
        NOTIFICATIONS,
        json!({}),
        "/notifications/nodes/0",
        notification("REBLOGGED", bob, Some(&post)),
    )
    .await;
    until_graphql(
        alpha,
        Some(&carol.token),
        HOME,
        json!({}),
        "/timeline/nodes",
        json!([item(&post, Some(bob))]),
    )
    .await;

    // Both taken back: gone from alpha's counts and carol's timeline.
    beta.ok(Some(&bob.token), UNFAVORITE, json!({ "p": post }))
        .await;
    until_sql(alpha, None, LIKE_ID, &[&bob.uri, &post]).await;
    beta.ok(Some(&bob.token), UNREBLOG, json!({ "p": post }))
        .await;
    until_sql(alpha, None, ANNOUNCE_ID, &[&bob.uri, &post]).await;
    until_graphql(
        alpha,
        Some(&alice.token),
        SEEN_POST,
        json!({ "id": post_id }),
        "/post",
        json!({
            "author": { "id": alice.uri },
            "content": "<p>favorite me</p>",
            "visibility": "PUBLIC",
            "hashtags": [],
            "mentions": [],
            "inReplyTo": null,
            "editedAt": null,
            "edits": [{ "version": 1 }],
            "favoritesCount": 0,
            "reblogsCount": 0,
            "repliesCount": 0,
        }),
    )
    .await;
    until_graphql(
        alpha,
        Some(&carol.token),
        HOME,
        json!({}),
        "/timeline/nodes",
        json!([]),
    )
    .await;

    // A followers-only post: bob, a follower, may favorite it and answer
    // it; alpha takes both.
    let (_, private) = s.post(alice, "for my followers", "FOLLOWERS_ONLY").await;
    until_sql(
        beta,
        Some("followers_only"),
        "SELECT visibility FROM posts WHERE uri = $1",
        &[&private],
    )
    .await;
    beta.ok(Some(&bob.token), FAVORITE, json!({ "p": private }))
        .await;
    s.crossed(bob, LIKE_ID, &[&bob.uri, &private]).await;
    let replied = beta
        .ok(
            Some(&bob.token),
            POST,
            json!({ "t": "between us", "v": "FOLLOWERS_ONLY", "r": private }),
        )
        .await;
    let reply = str_at(&replied, "/createPost/uri").to_owned();
    until_graphql(
        alpha,
        Some(&alice.token),
        SEEN_POST,
        json!({ "id": reply }),
        "/post/inReplyTo/uri",
        json!(private),
    )
    .await;

    // dave posts; no one on alpha follows him, so alpha does not have it
    // until bob reblogs it: alpha takes it in from the Announce.
    let (_, daves) = s.post(dave, "a post from beta", "PUBLIC").await;
    beta.ok(Some(&bob.token), REBLOG, json!({ "p": daves }))
        .await;
    until_sql(
        alpha,
        Some(&dave.uri),
        "SELECT author FROM posts WHERE uri = $1 AND NOT local",
        &[&daves],
    )
    .await;
    until_graphql(
        alpha,
        Some(&carol.token),
        HOME,
        json!({}),
        "/timeline/nodes",
        // carol follows bob: his followers-only reply reached her too.
        json!([item(&daves, Some(bob)), item(&reply, None)]),
    )
    .await;

    // The other way: alice favorites and reblogs dave's post from alpha;
    // beta counts both and notifies dave, then sees both taken back.
    alpha
        .ok(Some(&alice.token), FAVORITE, json!({ "p": daves }))
        .await;
    s.crossed(alice, LIKE_ID, &[&alice.uri, &daves]).await;
    alpha
        .ok(Some(&alice.token), REBLOG, json!({ "p": daves }))
        .await;
    s.crossed(alice, ANNOUNCE_ID, &[&alice.uri, &daves]).await;
    until_graphql(
        beta,
        Some(&dave.token),
        NOTIFICATIONS,
        json!({}),
        "/notifications/nodes",
        json!([
            notification("REBLOGGED", alice, Some(&daves)),
            notification("FAVORITED", alice, Some(&daves)),
            notification("REBLOGGED", bob, Some(&daves)),
        ]),
    )
    .await;
    until_graphql(
        beta,
        Some(&dave.token),
        SEEN_POST,
        json!({ "id": daves }),
        "/post/favoritesCount",
        json!(1),
    )
    .await;
    alpha
        .ok(Some(&alice.token), UNFAVORITE, json!({ "p": daves }))
        .await;
    until_sql(beta, None, LIKE_ID, &[&alice.uri, &daves]).await;
    alpha
        .ok(Some(&alice.token), UNREBLOG, json!({ "p": daves }))
        .await;
    until_sql(beta, None, ANNOUNCE_ID, &[&alice.uri, &daves]).await;
    until_graphql(
        beta,
        Some(&dave.token),
        SEEN_POST,
        json!({ "id": daves }),
        "/post/reblogsCount",
        json!(1),
    )
    .await;
    s.all_applied().await;
}

/// Block and Undo{Block}, both ways, of known actors and of one found by
/// address: follows either way end on both servers, and a blocked actor
/// cannot follow again until the block is lifted.
#[tokio::test]
async fn blocks_sever_follows_both_ways_and_are_lifted() {
    let s = Servers::start().await;
    let (alpha, beta) = (&s.alpha, &s.beta);
    let (alice, bob, dave) = (&s.alice, &s.bob, &s.dave);
    s.follow(bob, alice).await;
    alpha
        .ok(Some(&alice.token), FOLLOW, json!({ "a": bob.uri }))
        .await;
    follow_is(&s, alice, bob, Some("accepted")).await;
    // Each has the other's post in their home timeline.
    // (Home timelines list posts in the order they arrived.)
    let (_, alices) = s.post(alice, "from alice", "PUBLIC").await;
    until_graphql(
        beta,
        Some(&bob.token),
        HOME,
        json!({}),
        "/timeline/nodes",
        json!([item(&alices, None)]),
    )
    .await;
    let (_, bobs) = s.post(bob, "from bob", "PUBLIC").await;
    until_graphql(
        beta,
        Some(&bob.token),
        HOME,
        json!({}),
        "/timeline/nodes",
        json!([item(&bobs, None), item(&alices, None)]),
    )
    .await;
    until_graphql(
        alpha,
        Some(&alice.token),
        HOME,
        json!({}),
        "/timeline/nodes",
        json!([item(&bobs, None), item(&alices, None)]),
    )
    .await;

    // alice blocks bob: beta records the same Block, and the follows
    // between them end, both ways, on both servers; neither sees the
    // other's posts any more.
    let blocked = alpha
        .ok(Some(&alice.token), BLOCK, json!({ "a": bob.uri }))
        .await;
    assert_eq!(blocked["block"]["blocking"], true);
    s.crossed(alice, BLOCK_ID, &[&alice.uri, &bob.uri]).await;
    follow_is(&s, bob, alice, None).await;
    follow_is(&s, alice, bob, None).await;
    until_graphql(
        beta,
        Some(&bob.token),
        RELATIONSHIP,
        json!({ "u": alice.uri }),
        "/actor/relationship",
        json!({ "following": "NONE", "followedBy": "NONE", "blocking": false, "blockedBy": true }),
    )
    .await;
    until_graphql(
        beta,
        Some(&bob.token),
        HOME,
        json!({}),
        "/timeline/nodes",
        json!([item(&bobs, None)]),
    )
    .await;
    until_graphql(
        alpha,
        Some(&alice.token),
        HOME,
        json!({}),
        "/timeline/nodes",
        json!([item(&alices, None)]),
    )
    .await;
    let hidden = beta
        .ok(Some(&bob.token), SEEN_POST, json!({ "id": alices }))
        .await;
    assert_eq!(hidden["post"], Value::Null);
    // beta knows: bob cannot follow alice again.
    let refused = beta
        .error_code(Some(&bob.token), FOLLOW, json!({ "a": alice.uri }))
        .await;
    assert_eq!(refused, "BLOCKED");

    // Lifted: gone on both, and bob may follow again.
    alpha
        .ok(Some(&alice.token), UNBLOCK, json!({ "a": bob.uri }))
        .await;
    until_sql(alpha, None, BLOCK_ID, &[&alice.uri, &bob.uri]).await;
    until_sql(beta, None, BLOCK_ID, &[&alice.uri, &bob.uri]).await;
    s.follow(bob, alice).await;

    // alice blocks dave, whom alpha has never met, by address.
    alpha
        .ok(Some(&alice.token), BLOCK, json!({ "a": s.address(dave) }))
        .await;
    s.crossed(alice, BLOCK_ID, &[&alice.uri, &dave.uri]).await;
    alpha
        .ok(Some(&alice.token), UNBLOCK, json!({ "a": dave.uri }))
        .await;
    until_sql(beta, None, BLOCK_ID, &[&alice.uri, &dave.uri]).await;

    // The other way: bob blocks alice, whom he follows.
    beta.ok(Some(&bob.token), BLOCK, json!({ "a": alice.uri }))
        .await;
    s.crossed(bob, BLOCK_ID, &[&bob.uri, &alice.uri]).await;
    follow_is(&s, bob, alice, None).await;
    until_graphql(
        alpha,
        Some(&alice.token),
        RELATIONSHIP,
        json!({ "u": bob.uri }),
        "/actor/relationship/blockedBy",
        json!(true),
    )
    .await;
    let refused = alpha
        .error_code(Some(&alice.token), FOLLOW, json!({ "a": bob.uri }))
        .await;
    assert_eq!(refused, "BLOCKED");
    beta.ok(Some(&bob.token), UNBLOCK, json!({ "a": alice.uri }))
        .await;
    until_sql(alpha, None, BLOCK_ID, &[&bob.uri, &alice.uri]).await;
    alpha
        .ok(Some(&alice.token), FOLLOW, json!({ "a": bob.uri }))
        .await;
    follow_is(&s, alice, bob, Some("accepted")).await;

    // dave blocks alice while her follow request waits for him: the
    // request ends on both servers.
    alpha
        .ok(Some(&alice.token), FOLLOW, json!({ "a": dave.uri }))
        .await;
    follow_is(&s, alice, dave, Some("requested")).await;
    beta.ok(Some(&dave.token), BLOCK, json!({ "a": alice.uri }))
        .await;
    until_sql(
        alpha,
        text(beta, BLOCK_ID, &[&dave.uri, &alice.uri])
            .await
            .as_deref(),
        BLOCK_ID,
        &[&dave.uri, &alice.uri],
    )
    .await;
    follow_is(&s, alice, dave, None).await;
    until_graphql(
        beta,
        Some(&dave.token),
        FOLLOW_REQUESTS,
        json!({}),
        "/followRequests/nodes",
        json!([]),
    )
    .await;
    assert_eq!(received(alpha, "Block", bob).await, 1);
    assert_eq!(received(beta, "Block", alice).await, 2);
    s.all_applied().await;
}
