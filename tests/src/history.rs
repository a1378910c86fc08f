//! A little history to rebuild, reprocess and audit, and the read models as
//! text to compare.

use serde_json::json;
use sqlx::PgPool;

use crate::app::{Account, TestApp};

/// Every row of every read model, as text, table by table.
pub async fn read_models(pool: &PgPool) -> Vec<String> {
    let mut rows = Vec::new();
    for projection in chorus_projections::all() {
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
