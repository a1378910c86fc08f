//! `chorus accounts delete`, through the real binary against the database
//! of a running Chorus, which then erases the account.

use std::process::{Command, Stdio};

use chorus_tests::app::{TestApp, spawn_app};
use serde_json::json;

fn chorus(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .arg("accounts")
        .args(args)
        .env("DATABASE_URL", &app.database_url)
        .env_remove("CHORUS_CONFIG")
        .env("CHORUS_BASE_URL", &app.base_url)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run chorus: {e}"));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
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
