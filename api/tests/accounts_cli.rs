//! `chorus accounts delete`, through the real binary against the database
//! of a running Chorus, which then erases the account.

use chorus_tests::app::{TestApp, spawn_app};
use serde_json::json;

fn chorus(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let args = [&["accounts"], args].concat();
    let (code, out, err) = chorus_tests::cli::run(env!("CARGO_BIN_EXE_chorus"), app, &args);
    (code == Some(0), out, err)
}

#[tokio::test]
async fn an_account_is_deleted_from_the_command_line() {
    let app = spawn_app().await;
    let frank = app.account("frank", false).await;
    app.ok(
        Some(&frank.token),
        "mutation { createPost(input: { text: \"from frank\" }) { id } }",
        json!({}),
    )
    .await;

    let (ok, out, err) = chorus(&app, &["delete", "@Frank"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("deleted {}", frank.uri));
    app.settle().await;

    let response = app
        .graphql(Some(&frank.token), "{ me { id } }", json!({}))
        .await;
    assert_eq!(
        response["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{response}"
    );
    let (status, _) = app.activitypub(&frank.uri).await;
    assert_eq!(status, 410);
    let live: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM posts WHERE author = $1 AND (deleted_at IS NULL OR content <> '')",
    )
    .bind(&frank.uri)
    .fetch_one(&app.pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(live, 0);
    let erased: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'ContentErased'")
            .fetch_one(&app.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(erased, 1);

    // Refusals say why.
    let (ok, _, err) = chorus(&app, &["delete", "frank"]);
    assert!(!ok);
    assert!(err.contains("the account was deleted"), "{err}");
    let (ok, _, err) = chorus(&app, &["delete", "nobody"]);
    assert!(!ok);
    assert!(err.contains("no such account"), "{err}");
}
