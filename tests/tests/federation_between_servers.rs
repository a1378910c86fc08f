//! Two Chorus servers on 127.0.0.1 (their own ports and databases, so two
//! instances) federating through their real entry points: GraphQL on the
//! acting side; delivery workers, signed inbox POSTs and the interpreter in
//! between; each server's read models checked after every step.

use std::time::Duration;

use chorus_tests::app::{Account, TestApp, spawn_app};
use serde_json::{Value, json};

const FOLLOW: &str = "mutation($a: String!) { follow(actor: $a) { actor following } }";
const UNFOLLOW: &str = "mutation($a: String!) { unfollow(actor: $a) { following } }";
const APPROVE: &str = "mutation($a: String!) { approveFollowRequest(actor: $a) { followedBy } }";
const REJECT: &str = "mutation($a: String!) { rejectFollowRequest(actor: $a) { followedBy } }";
const BLOCK: &str = "mutation($a: String!) { block(actor: $a) { blocking following } }";
const UNBLOCK: &str = "mutation($a: String!) { unblock(actor: $a) { blocking } }";
const POST: &str = "mutation($t: String!, $r: ID) {
    createPost(input: { text: $t, inReplyTo: $r }) { id uri }
}";
const EDIT: &str =
    "mutation($id: ID!, $t: String!) { editPost(id: $id, input: { text: $t }) { uri } }";
const DELETE: &str = "mutation($id: ID!) { deletePost(id: $id) }";
const FAVORITE: &str = "mutation($p: ID!) { favorite(post: $p) { favoritesCount } }";
const UNFAVORITE: &str = "mutation($p: ID!) { unfavorite(post: $p) { favoritesCount } }";
const REBLOG: &str = "mutation($p: ID!) { reblog(post: $p) { reblogsCount } }";
const UNREBLOG: &str = "mutation($p: ID!) { unreblog(post: $p) { reblogsCount } }";

/// The host other servers address accounts of `app` by.
fn host(app: &TestApp) -> &str {
    app.base_url.trim_start_matches("http://")
}

/// Polls `sql` (one text parameter per `binds`, answering one row with a
/// nullable text) on `app` until it answers `expected`, for ten seconds.
async fn until(app: &TestApp, expected: Option<&str>, sql: &str, binds: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut query = sqlx::query_scalar::<_, Option<String>>(sql);
        for bind in binds {
            query = query.bind(*bind);
        }
        let got = query
            .fetch_optional(&app.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .flatten();
        if got.as_deref() == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} answered {got:?} to {sql} {binds:?}, expected {expected:?}",
            app.base_url
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const FOLLOW_STATE: &str = "SELECT state FROM follows WHERE follower = $1 AND followee = $2";
const BLOCKED: &str = "SELECT block_id FROM blocks WHERE blocker = $1 AND blocked = $2";

/// Waits until both servers have the follow `follower` → `followee` in
/// `state` (`None`: no follow).
async fn follow_is(apps: [&TestApp; 2], follower: &str, followee: &str, state: Option<&str>) {
    for app in apps {
        until(app, state, FOLLOW_STATE, &[follower, followee]).await;
    }
}

fn field<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .fold(value, |v, key| &v[*key])
        .as_str()
        .unwrap_or_else(|| panic!("no {path:?} in {value}"))
}

/// Two servers: alpha with alice (unlocked) and carol (locked), beta with
/// bob and dave.
async fn two_servers() -> (TestApp, TestApp, [Account; 4]) {
    let alpha = spawn_app().await;
    let beta = spawn_app().await;
    let alice = alpha.account("alice", false).await;
    let carol = alpha.account("carol", true).await;
    let bob = beta.account("bob", false).await;
    let dave = beta.account("dave", false).await;
    (alpha, beta, [alice, carol, bob, dave])
}

#[tokio::test]
async fn follows_are_accepted_approved_rejected_and_ended_across_servers() {
    let (alpha, beta, [alice, carol, bob, dave]) = two_servers().await;
    let both = [&alpha, &beta];

    // bob follows alice by address: found with WebFinger, accepted at once.
    let address = format!("alice@{}", host(&alpha));
    let followed = beta
        .ok(Some(&bob.token), FOLLOW, json!({ "a": address }))
        .await;
    assert_eq!(followed["follow"]["actor"], alice.uri.as_str());
    follow_is(both, &bob.uri, &alice.uri, Some("accepted")).await;
    let me = beta
        .ok(
            Some(&bob.token),
            "query($h: String!) { actor(handle: $h) { id } }",
            json!({ "h": address }),
        )
        .await;
    assert_eq!(me["actor"]["id"], alice.uri.as_str());

    // carol is locked: bob's request waits for her, she approves.
    beta.ok(Some(&bob.token), FOLLOW, json!({ "a": carol.uri }))
        .await;
    follow_is(both, &bob.uri, &carol.uri, Some("requested")).await;
    let approved = alpha
        .ok(Some(&carol.token), APPROVE, json!({ "a": bob.uri }))
        .await;
    assert_eq!(approved["approveFollowRequest"]["followedBy"], "ACCEPTED");
    follow_is(both, &bob.uri, &carol.uri, Some("accepted")).await;

    // dave's request she rejects: both sides record the refusal.
    beta.ok(Some(&dave.token), FOLLOW, json!({ "a": carol.uri }))
        .await;
    follow_is(both, &dave.uri, &carol.uri, Some("requested")).await;
    alpha
        .ok(Some(&carol.token), REJECT, json!({ "a": dave.uri }))
        .await;
    follow_is(both, &dave.uri, &carol.uri, Some("rejected")).await;
    let seen = beta
        .ok(
            Some(&dave.token),
            "query($u: String!) { actor(uri: $u) { relationship { following } } }",
            json!({ "u": carol.uri }),
        )
        .await;
    assert_eq!(seen["actor"]["relationship"]["following"], "REJECTED");

    // bob unfollows alice.
    beta.ok(Some(&bob.token), UNFOLLOW, json!({ "a": alice.uri }))
        .await;
    follow_is(both, &bob.uri, &alice.uri, None).await;
    // The approved follow of carol stays.
    follow_is(both, &bob.uri, &carol.uri, Some("accepted")).await;
}

#[tokio::test]
async fn posts_replies_edits_deletes_favorites_and_reblogs_cross_over() {
    let (alpha, beta, [alice, _, bob, _]) = two_servers().await;
    beta.ok(Some(&bob.token), FOLLOW, json!({ "a": alice.uri }))
        .await;
    follow_is([&alpha, &beta], &bob.uri, &alice.uri, Some("accepted")).await;

    // alice posts: it reaches bob's home timeline on beta.
    let posted = alpha
        .ok(
            Some(&alice.token),
            POST,
            json!({ "t": "hello from alpha #federation" }),
        )
        .await;
    let (post_id, post) = (
        field(&posted, &["createPost", "id"]).to_owned(),
        field(&posted, &["createPost", "uri"]).to_owned(),
    );
    until(
        &beta,
        Some(&alice.uri),
        "SELECT author FROM posts WHERE uri = $1 AND NOT local AND content LIKE '%hello from alpha%'",
        &[&post],
    )
    .await;
    until(
        &beta,
        Some(&post),
        "SELECT post FROM home_timeline WHERE owner = $1 AND post = $2",
        &[&bob.uri, &post],
    )
    .await;

    // bob replies: on alpha, the reply is threaded under alice's post.
    let replied = beta
        .ok(
            Some(&bob.token),
            POST,
            json!({ "t": "hello back", "r": post }),
        )
        .await;
    let reply = field(&replied, &["createPost", "uri"]).to_owned();
    until(
        &alpha,
        Some(&post),
        "SELECT in_reply_to FROM posts WHERE uri = $1 AND author = $2",
        &[&reply, &bob.uri],
    )
    .await;

    // alice edits: beta shows the new text.
    alpha
        .ok(
            Some(&alice.token),
            EDIT,
            json!({ "id": post_id, "t": "hello again from alpha" }),
        )
        .await;
    until(
        &beta,
        Some(&post),
        "SELECT uri FROM posts WHERE uri = $1 AND content LIKE '%hello again from alpha%'",
        &[&post],
    )
    .await;

    // bob favorites and reblogs it, then takes both back.
    let favorited = "SELECT like_id FROM favorites WHERE actor = $1 AND post = $2";
    let reblogged = "SELECT announce_id FROM reblogs WHERE actor = $1 AND post = $2";
    beta.ok(Some(&bob.token), FAVORITE, json!({ "p": post }))
        .await;
    let like: Option<String> = sqlx::query_scalar(favorited)
        .bind(&bob.uri)
        .bind(&post)
        .fetch_optional(&beta.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let like = like.unwrap_or_else(|| panic!("beta has no favorite"));
    until(&alpha, Some(&like), favorited, &[&bob.uri, &post]).await;
    beta.ok(Some(&bob.token), REBLOG, json!({ "p": post }))
        .await;
    let announce: Option<String> = sqlx::query_scalar(reblogged)
        .bind(&bob.uri)
        .bind(&post)
        .fetch_optional(&beta.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let announce = announce.unwrap_or_else(|| panic!("beta has no reblog"));
    until(&alpha, Some(&announce), reblogged, &[&bob.uri, &post]).await;
    let counts = alpha
        .ok(
            Some(&alice.token),
            "query($id: ID!) { post(id: $id) { favoritesCount reblogsCount } }",
            json!({ "id": post_id }),
        )
        .await;
    assert_eq!(
        counts["post"],
        json!({ "favoritesCount": 1, "reblogsCount": 1 })
    );
    beta.ok(Some(&bob.token), UNFAVORITE, json!({ "p": post }))
        .await;
    until(&alpha, None, favorited, &[&bob.uri, &post]).await;
    beta.ok(Some(&bob.token), UNREBLOG, json!({ "p": post }))
        .await;
    until(&alpha, None, reblogged, &[&bob.uri, &post]).await;

    // alice deletes it: gone on beta too.
    alpha
        .ok(Some(&alice.token), DELETE, json!({ "id": post_id }))
        .await;
    until(
        &beta,
        Some(&post),
        "SELECT uri FROM posts WHERE uri = $1 AND deleted_at IS NOT NULL",
        &[&post],
    )
    .await;
    until(
        &beta,
        None,
        "SELECT post FROM home_timeline WHERE owner = $1 AND post = $2",
        &[&bob.uri, &post],
    )
    .await;
}

#[tokio::test]
async fn blocks_sever_follows_on_both_servers_and_are_lifted() {
    let (alpha, beta, [alice, _, bob, _]) = two_servers().await;
    let both = [&alpha, &beta];
    beta.ok(Some(&bob.token), FOLLOW, json!({ "a": alice.uri }))
        .await;
    follow_is(both, &bob.uri, &alice.uri, Some("accepted")).await;

    // alice blocks bob: beta learns it, and bob's follow ends on both.
    let blocked = alpha
        .ok(Some(&alice.token), BLOCK, json!({ "a": bob.uri }))
        .await;
    assert_eq!(blocked["block"]["blocking"], true);
    let block_id: Option<String> = sqlx::query_scalar(BLOCKED)
        .bind(&alice.uri)
        .bind(&bob.uri)
        .fetch_optional(&alpha.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let block_id = block_id.unwrap_or_else(|| panic!("alpha has no block"));
    until(&beta, Some(&block_id), BLOCKED, &[&alice.uri, &bob.uri]).await;
    follow_is(both, &bob.uri, &alice.uri, None).await;
    let seen = beta
        .ok(
            Some(&bob.token),
            "query($u: String!) { actor(uri: $u) { relationship { blockedBy following } } }",
            json!({ "u": alice.uri }),
        )
        .await;
    assert_eq!(
        seen["actor"]["relationship"],
        json!({ "blockedBy": true, "following": "NONE" })
    );

    // Lifted: gone on both.
    alpha
        .ok(Some(&alice.token), UNBLOCK, json!({ "a": bob.uri }))
        .await;
    until(&alpha, None, BLOCKED, &[&alice.uri, &bob.uri]).await;
    until(&beta, None, BLOCKED, &[&alice.uri, &bob.uri]).await;

    // bob may follow again.
    beta.ok(Some(&bob.token), FOLLOW, json!({ "a": alice.uri }))
        .await;
    follow_is(both, &bob.uri, &alice.uri, Some("accepted")).await;
}
