//! GraphQL queries read from a real streaming standby while it is within
//! the staleness bound, and from the primary beyond it or while the standby
//! is down; mutations always answer with their own writes.
//!
//! Reading from the standby is shown by pausing its replay: a post created
//! after the pause is missing from queries while the staleness is within
//! the bound, and shows once the bound has passed and queries fall back to
//! the primary.

use std::time::{Duration, Instant};

use chorus_tests::app::{Account, TestApp, spawn_app_with_replica};
use chorus_tests::poll::eventually;
use chorus_tests::replica::Replicated;
use serde_json::{Value, json};

/// The staleness bound the servers run with: long enough that a query sent
/// right after a mutation is within it on a loaded machine.
const BOUND: Duration = Duration::from_secs(15);

/// How long anything asynchronous (the monitor's switches, replication)
/// may take before a test fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// A gauge from `/metrics`, `None` when it is not there.
async fn gauge(app: &TestApp, name: &str) -> Option<f64> {
    let response = app
        .client
        .get(format!("{}/metrics", app.base_url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    assert_eq!(response.status(), 200);
    let text = response
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        Some(
            value
                .parse()
                .unwrap_or_else(|e| panic!("{name} is not a number: {line}: {e}")),
        )
    })
}

/// Waits until queries read from the replica (or, with `false`, from the
/// primary).
async fn until_replica_in_use(app: &TestApp, in_use: bool) {
    let want = if in_use { 1.0 } else { 0.0 };
    eventually(
        &format!("chorus_read_replica_in_use {want}"),
        PATIENCE,
        || async {
            match gauge(app, "chorus_read_replica_in_use").await {
                Some(v) if (v - want).abs() < f64::EPSILON => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

/// A post as a query shows it to `viewer` (null when it does not).
async fn post(app: &TestApp, viewer: &Account, id: &str) -> Value {
    app.ok(
        Some(&viewer.token),
        "query($id: ID!) { post(id: $id) { id content } }",
        json!({ "id": id }),
    )
    .await["post"]
        .clone()
}

/// How many posts a query says `who` has.
async fn posts_count(app: &TestApp, viewer: &Account, who: &Account) -> i64 {
    let data = app
        .ok(
            Some(&viewer.token),
            "query($h: String!) { actor(handle: $h) { postsCount } }",
            json!({ "h": who.handle }),
        )
        .await;
    data["actor"]["postsCount"]
        .as_i64()
        .unwrap_or_else(|| panic!("no postsCount for {}: {data}", who.handle))
}

async fn create_post(app: &TestApp, who: &Account, text: &str) -> Value {
    app.ok(
        Some(&who.token),
        "mutation($t: String!) { createPost(input: { text: $t }) { id content author { handle postsCount } } }",
        json!({ "t": text }),
    )
    .await["createPost"]
        .clone()
}

/// A server reading from a fresh standby, with `handles` as accounts that
/// queries already find there.
async fn replicated_app(handles: &[&str]) -> (Replicated, TestApp, Vec<Account>) {
    let replicated = Replicated::start().await;
    let app = spawn_app_with_replica(&replicated, BOUND).await;
    let mut accounts = Vec::new();
    for handle in handles {
        accounts.push(app.account(handle, false).await);
    }
    until_replica_in_use(&app, true).await;
    // The accounts have reached the standby.
    for account in &accounts {
        eventually(
            &format!("{} on the standby", account.handle),
            PATIENCE,
            || async {
                let data = app
                    .ok(
                        Some(&account.token),
                        "query($h: String!) { actor(handle: $h) { handle } }",
                        json!({ "h": account.handle }),
                    )
                    .await;
                if data["actor"].is_null() {
                    Err(data.to_string())
                } else {
                    Ok(())
                }
            },
        )
        .await;
    }
    (replicated, app, accounts)
}

#[tokio::test]
async fn queries_read_from_the_replica_within_the_bound_and_from_the_primary_beyond_it() {
    let (replicated, app, accounts) = replicated_app(&["alice"]).await;
    let alice = &accounts[0];
    assert_eq!(
        gauge(&app, "chorus_read_replica_max_lag_seconds").await,
        Some(BOUND.as_secs_f64())
    );

    replicated.pause_replay().await;
    let paused = Instant::now();
    let created = create_post(&app, alice, "written while the standby waits").await;
    let id = created["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id: {created}"))
        .to_owned();

    // Within the bound, queries read from the paused standby: no post yet.
    assert_eq!(post(&app, alice, &id).await, Value::Null);
    assert_eq!(posts_count(&app, alice, alice).await, 0);
    assert!(
        paused.elapsed() < BOUND,
        "the queries above ran {:?} after the pause, beyond the bound: they prove nothing",
        paused.elapsed()
    );

    // Beyond it, they read from the primary, which has it.
    eventually("the post, from the primary", BOUND + PATIENCE, || async {
        let found = post(&app, alice, &id).await;
        if found.is_null() {
            Err("no post".to_owned())
        } else {
            Ok(())
        }
    })
    .await;
    let fell_back = paused.elapsed();
    // The newest sample the standby had replayed past when paused may be
    // up to a couple of samples (and replication's delay) older than the
    // pause.
    assert!(
        fell_back + Duration::from_secs(2) >= BOUND,
        "reads left the standby after {fell_back:?}, before the {BOUND:?} bound"
    );
    assert_eq!(posts_count(&app, alice, alice).await, 1);
    assert_eq!(gauge(&app, "chorus_read_replica_in_use").await, Some(0.0));
    let staleness = gauge(&app, "chorus_read_replica_staleness_seconds")
        .await
        .unwrap_or_else(|| panic!("no staleness while the standby is paused"));
    assert!(
        staleness > BOUND.as_secs_f64(),
        "staleness {staleness} s, not beyond the bound"
    );

    // Replaying again, the standby catches up and queries read from it.
    replicated.resume_replay().await;
    until_replica_in_use(&app, true).await;
    assert_eq!(post(&app, alice, &id).await["id"], created["id"]);
    assert_eq!(posts_count(&app, alice, alice).await, 1);
    let staleness = gauge(&app, "chorus_read_replica_staleness_seconds")
        .await
        .unwrap_or_else(|| panic!("no staleness while the standby is in use"));
    assert!(
        staleness <= BOUND.as_secs_f64(),
        "staleness {staleness} s while in use"
    );
}

#[tokio::test]
async fn queries_answer_from_the_primary_while_the_standby_is_down() {
    let (replicated, app, accounts) = replicated_app(&["alice"]).await;
    let alice = &accounts[0];

    replicated.stop_standby().await;
    until_replica_in_use(&app, false).await;
    // Its staleness is unknown while it cannot be asked.
    assert_eq!(
        gauge(&app, "chorus_read_replica_staleness_seconds").await,
        None
    );
    let created = create_post(&app, alice, "written while the standby is down").await;
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    // Every query answers, at once, from the primary.
    for _ in 0..10 {
        assert_eq!(post(&app, alice, &id).await["id"], created["id"]);
        assert_eq!(posts_count(&app, alice, alice).await, 1);
    }
    assert_eq!(gauge(&app, "chorus_read_replica_in_use").await, Some(0.0));
    assert_eq!(gauge(&app, "chorus_metrics_database_up").await, Some(1.0));

    // A server started while its standby is down reads from the primary
    // from the start.
    let late = spawn_app_with_replica(&replicated, BOUND).await;
    let bob = late.account("bob", false).await;
    let created = create_post(&late, &bob, "on a server whose standby never came").await;
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(post(&late, &bob, &id).await["id"], created["id"]);
    assert_eq!(posts_count(&late, &bob, &bob).await, 1);
    assert_eq!(gauge(&late, "chorus_read_replica_in_use").await, Some(0.0));
}

#[tokio::test]
async fn mutations_answer_with_their_own_writes_whatever_the_replica_shows() {
    let (replicated, app, accounts) = replicated_app(&["alice", "bob"]).await;
    let (alice, bob) = (&accounts[0], &accounts[1]);

    replicated.pause_replay().await;
    let paused = Instant::now();

    let created = create_post(&app, alice, "first words").await;
    assert!(
        created["content"]
            .as_str()
            .is_some_and(|c| c.contains("first words")),
        "{created}"
    );
    assert_eq!(created["author"]["postsCount"], 1, "{created}");
    let id = created["id"].as_str().unwrap_or_default().to_owned();

    let edited = app
        .ok(
            Some(&alice.token),
            "mutation($id: ID!) { editPost(id: $id, input: { text: \"second words\" }) { content } }",
            json!({ "id": id }),
        )
        .await;
    assert!(
        edited["editPost"]["content"]
            .as_str()
            .is_some_and(|c| c.contains("second words")),
        "{edited}"
    );

    let followed = app
        .ok(
            Some(&bob.token),
            "mutation($a: String!) { follow(actor: $a) { following } }",
            json!({ "a": alice.handle }),
        )
        .await;
    assert_eq!(followed["follow"]["following"], "ACCEPTED");

    let favorited = app
        .ok(
            Some(&bob.token),
            "mutation($p: ID!) { favorite(post: $p) { favorited favoritesCount } }",
            json!({ "p": id }),
        )
        .await;
    assert_eq!(favorited["favorite"]["favorited"], true);
    assert_eq!(favorited["favorite"]["favoritesCount"], 1);

    // Meanwhile queries read from the paused standby, which has none of it:
    // the answers above came from the primary.
    assert_eq!(post(&app, bob, &id).await, Value::Null);
    assert_eq!(posts_count(&app, bob, alice).await, 0);
    assert!(
        paused.elapsed() < BOUND,
        "the queries above ran {:?} after the pause, beyond the bound: they prove nothing",
        paused.elapsed()
    );
    replicated.resume_replay().await;
}
