//! `chorus servers create|list`, through the real binary against the
//! database of a running Chorus, which serves the server it creates.

use chorus_tests::app::{TestApp, spawn_app};

fn chorus(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let args = [&["servers"], args].concat();
    let (code, out, err) = chorus_tests::cli::run(env!("CARGO_BIN_EXE_chorus"), app, &args);
    (code == Some(0), out, err)
}

#[tokio::test]
async fn a_server_is_created_and_listed_from_the_command_line() {
    let app = spawn_app().await;
    let alice = app.account("alice", false).await;

    let (ok, out, err) = chorus(
        &app,
        &[
            "create",
            "Gardening",
            "--owner",
            "alice",
            "--approval",
            "--channel",
            "general",
            "--channel",
            "tools:What to buy",
        ],
    );
    assert!(ok, "{err}");
    let uri = format!("{}/servers/gardening", app.base_url);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            format!("created gardening ({uri})"),
            "channels: general, tools".to_owned()
        ]
    );
    app.settle().await;
    // Served as a Group, owned by alice.
    let (status, group) = app.activitypub(&uri).await;
    assert_eq!(status, 200, "{group}");
    assert_eq!(group["type"], "Group");
    assert_eq!(group["manuallyApprovesFollowers"], true);
    let owner: String = sqlx::query_scalar("SELECT owner FROM servers WHERE uri = $1")
        .bind(&uri)
        .fetch_one(&app.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(owner, alice.uri);

    let (ok, out, err) = chorus(&app, &["list"]);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        format!("gardening\t{uri}\tapproval\t0 members\t#general #tools")
    );

    // Refusals say why, and change nothing.
    for (args, says) in [
        (&["create", "gardening", "--owner", "alice"][..], "is taken"),
        (&["create", "alice", "--owner", "alice"][..], "is taken"),
        (
            &["create", "books", "--owner", "nobody"][..],
            "owner nobody",
        ),
        (
            &["create", "books", "--owner", "alice", "--channel", "no way"][..],
            "not a valid channel name",
        ),
        (
            &["create", "bad name", "--owner", "alice"][..],
            "may only contain",
        ),
    ] {
        let (ok, _, err) = chorus(&app, args);
        assert!(!ok, "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let servers: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'ServerCreated'")
            .fetch_one(&app.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(servers, 1);
}
