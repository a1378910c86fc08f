//! A little history to rebuild, reprocess and audit, and the read models as
//! text to compare.

use serde_json::json;
use sqlx::PgPool;

use crate::app::{Account, TestApp};

/// Every row of every read model, as text, table by table. The counts of
/// `activity_stats` change with every event appended (an admin's rebuild
/// too), so they stand as the rows that differ from the log's own counts
/// ([`activity_stats_against_the_log`]): none when they are right.
pub async fn read_models(pool: &PgPool) -> Vec<String> {
    let mut rows = Vec::new();
    for projection in chorus_projections::all() {
        if projection.name() == "activity_stats" {
            rows.extend(activity_stats_against_the_log(pool).await);
            continue;
        }
        for table in projection.tables() {
            let found: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT to_jsonb(t)::text FROM {table} t ORDER BY 1"
            ))
            .fetch_all(pool)
            .await
            .unwrap_or_else(|e| panic!("{table}: {e}"));
            rows.extend(found.into_iter().map(|r| format!("{table} {r}")));
        }
    }
    rows
}

pub async fn admin(app: &TestApp) -> Account {
    let created = app
        .app
        .create_account("admin1", None, false, true)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    app.settle().await;
    Account {
        handle: "admin1".into(),
        uri: created.actor.uri,
        token: created.token.secret,
    }
}

pub async fn post(app: &TestApp, who: &Account, text: &str) -> String {
    app.ok(
        Some(&who.token),
        "mutation($t: String!) { createPost(input: { text: $t }) { id } }",
        json!({ "t": text }),
    )
    .await["createPost"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A little of everything: posts, a reply, follows (one pending), favorites,
/// reblogs, a block, an edit and a delete.
pub async fn some_history(app: &TestApp) -> (Account, Account, Account) {
    let alice = app.account("alice", false).await;
    let bob = app.account("bob", false).await;
    let carol = app.account("carol", true).await;
    let first = post(app, &alice, "hello #world").await;
    let second = post(app, &alice, "second").await;
    for (who, whom) in [
        (&bob, &alice),
        (&alice, &bob),
        (&bob, &carol),
        (&carol, &alice),
    ] {
        app.ok(
            Some(&who.token),
            "mutation($a: String!) { follow(actor: $a) { following } }",
            json!({ "a": whom.handle }),
        )
        .await;
    }
    for (who, what) in [(&bob, &first), (&carol, &first), (&bob, &second)] {
        app.ok(
            Some(&who.token),
            "mutation($p: ID!) { favorite(post: $p) { id } }",
            json!({ "p": what }),
        )
        .await;
    }
    app.ok(
        Some(&bob.token),
        "mutation($p: ID!) { reblog(post: $p) { id } }",
        json!({ "p": first }),
    )
    .await;
    app.ok(
        Some(&bob.token),
        "mutation($t: String!, $r: ID!) { createPost(input: { text: $t, inReplyTo: $r }) { id } }",
        json!({ "t": "@alice nice", "r": first }),
    )
    .await;
    app.ok(
        Some(&alice.token),
        "mutation($id: ID!) { editPost(id: $id, input: { text: \"second, edited\" }) { id } }",
        json!({ "id": second }),
    )
    .await;
    app.ok(
        Some(&carol.token),
        "mutation($a: String!) { block(actor: $a) { blocking } }",
        json!({ "a": "bob" }),
    )
    .await;
    let third = post(app, &bob, "to be deleted").await;
    app.ok(
        Some(&bob.token),
        "mutation($id: ID!) { deletePost(id: $id) }",
        json!({ "id": third }),
    )
    .await;
    app.settle().await;
    (alice, bob, carol)
}

/// The rows of `activity_stats` and `activity_stats_totals` that differ
/// from counts of the log itself (read whole: for tests), each side's
/// extra rows prefixed with where they are.
pub async fn activity_stats_against_the_log(pool: &PgPool) -> Vec<String> {
    let diff: Vec<String> = sqlx::query_scalar(
        "WITH log AS (
             SELECT (recorded_at AT TIME ZONE 'UTC')::date AS day, event_type,
                    coalesce(payload->>'activity_type',
                             CASE jsonb_typeof(payload->'activity'->'type')
                                  WHEN 'string' THEN payload->'activity'->>'type'
                                  WHEN 'array' THEN payload->'activity'->'type'->>0 END,
                             '') AS activity_type,
                    coalesce(metadata->>'remote_host', '') AS remote_host,
                    count(*) AS events
             FROM events GROUP BY 1, 2, 3, 4
         ), stats AS (
             SELECT day, event_type, activity_type, remote_host, events FROM activity_stats
         ), log_totals AS (
             SELECT event_type, count(*) AS events FROM events GROUP BY 1
         ), totals AS (
             SELECT event_type, events FROM activity_stats_totals
         )
         (SELECT 'only in the log: ' || to_jsonb(x)::text FROM (TABLE log EXCEPT TABLE stats) x)
         UNION ALL
         (SELECT 'only in activity_stats: ' || to_jsonb(x)::text FROM (TABLE stats EXCEPT TABLE log) x)
         UNION ALL
         (SELECT 'only in the log: ' || to_jsonb(x)::text FROM (TABLE log_totals EXCEPT TABLE totals) x)
         UNION ALL
         (SELECT 'only in activity_stats_totals: ' || to_jsonb(x)::text
          FROM (TABLE totals EXCEPT TABLE log_totals) x)
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_else(|e| panic!("activity_stats: {e}"));
    diff
}
