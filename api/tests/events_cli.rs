//! `chorus events export` and `chorus tokens create-analytics`, through the
//! real binary against the database of a running Chorus.

use chorus_domain::{Position, RecordedEvent};
use chorus_postgres::{Narrowed, PgEventStore};
use chorus_tests::app::{TestApp, spawn_app};
use chorus_tests::history::some_history;
use serde_json::json;

/// Runs `chorus ARGS…` against `app`'s database: whether it succeeded, and
/// its stdout and stderr.
fn chorus(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let (code, out, err) = chorus_tests::cli::run(env!("CARGO_BIN_EXE_chorus"), app, args);
    (code == Some(0), out, err)
}

fn export(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    chorus(app, &[&["events", "export"], args].concat())
}

async fn log(app: &TestApp) -> Vec<RecordedEvent> {
    PgEventStore::read_after(&app.pool, Position::START, &Narrowed::default(), 100_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The export of `events`, as it must read.
fn ndjson<'a>(events: impl IntoIterator<Item = &'a RecordedEvent>) -> String {
    let mut out = Vec::new();
    for event in events {
        chorus_api::events::ndjson_line(event, &mut out);
    }
    String::from_utf8(out).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn the_log_is_exported_to_stdout_and_to_a_file() {
    let app = spawn_app().await;
    some_history(&app).await;
    let all = log(&app).await;

    let (ok, out, err) = export(&app, &[]);
    assert!(ok, "{err}");
    assert_eq!(out, ndjson(&all));
    assert!(
        err.contains(&format!("exported {} event(s) to stdout", all.len())),
        "{err}"
    );
    // Each line is one JSON object, in log order.
    for (line, event) in out.lines().zip(&all) {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(value["position"], json!(event.position.to_string()));
        assert_eq!(
            value["data"],
            event.decode::<serde_json::Value>().unwrap_or_default()
        );
    }

    let dir = std::env::temp_dir().join(format!("chorus-export-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let file = dir.join("log.ndjson");
    let path = file.to_string_lossy().into_owned();
    let (ok, out, err) = export(&app, &["--format", "ndjson", "--output", &path]);
    assert!(ok, "{err}");
    assert_eq!(out, "", "nothing but the file is written");
    assert!(err.contains(&format!("to {path}")), "{err}");
    let written = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(written, ndjson(&all));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn ranges_are_positions_or_times_and_types_narrow_them() {
    let app = spawn_app().await;
    some_history(&app).await;
    let all = log(&app).await;
    let (from, to) = (all[3].position.to_string(), all[9].position.to_string());

    // Positions: both ends included.
    let (ok, out, err) = export(&app, &["--from", &from, "--to", &to]);
    assert!(ok, "{err}");
    assert_eq!(out, ndjson(&all[3..=9]));
    let (ok, out, _) = export(&app, &["--from", &to]);
    assert!(ok);
    assert_eq!(out, ndjson(&all[9..]));
    let (ok, out, _) = export(&app, &["--to", &from]);
    assert!(ok);
    assert_eq!(out, ndjson(&all[..=3]));

    // Times: from included, to not.
    let middle = all[all.len() / 2].recorded_at;
    let time = middle.to_rfc3339();
    let (ok, out, err) = export(&app, &["--from", &time]);
    assert!(ok, "{err}");
    let later: Vec<&RecordedEvent> = all.iter().filter(|e| e.recorded_at >= middle).collect();
    assert!(!later.is_empty() && later.len() < all.len());
    assert_eq!(out, ndjson(later));
    let (ok, out, _) = export(&app, &["--to", &time]);
    assert!(ok);
    assert_eq!(out, ndjson(all.iter().filter(|e| e.recorded_at < middle)));

    // Types, in a range.
    let (ok, out, err) = export(
        &app,
        &[
            "--type",
            "PostCreated",
            "--type",
            "Favorited",
            "--from",
            &from,
        ],
    );
    assert!(ok, "{err}");
    let chosen: Vec<&RecordedEvent> = all[3..]
        .iter()
        .filter(|e| e.event_type == "PostCreated" || e.event_type == "Favorited")
        .collect();
    assert!(chosen.len() >= 2);
    assert_eq!(out, ndjson(chosen));
}

#[tokio::test]
async fn bad_ranges_formats_and_files_are_refused_with_a_reason() {
    let app = spawn_app().await;
    app.account("alice", false).await;
    for (args, says) in [
        (vec!["--from", "yesterday"], "neither a log position"),
        (vec!["--to", "12"], "neither a log position"),
        (vec!["--format", "csv"], "possible values: ndjson"),
        (vec!["--from", "9.9", "--to", "1.1"], "is after"),
        (vec!["--type", "Post Created"], "not an event type"),
        (
            vec![
                "--from",
                "2026-12-02T00:00:00Z",
                "--to",
                "2026-12-01T00:00:00Z",
            ],
            "before `to`",
        ),
        (
            vec!["--output", "/nonexistent-dir/log.ndjson"],
            "cannot create /nonexistent-dir/log.ndjson",
        ),
    ] {
        let (ok, out, err) = export(&app, &args);
        assert!(!ok, "{args:?} succeeded: {out}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}");
    }
}

#[tokio::test]
async fn an_analytics_token_is_created_and_revoked_from_the_command_line() {
    let app = spawn_app().await;
    app.account("alice", false).await;
    let (ok, out, err) = chorus(
        &app,
        &["tokens", "create-analytics", "--label", "data team"],
    );
    assert!(ok, "{err}");
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no {name} in {out}"))
    };
    let (id, token) = (field("token id:"), field("token:"));
    assert!(token.starts_with("chorus_"), "{out}");
    let label: Option<String> =
        sqlx::query_scalar("SELECT label FROM api_tokens WHERE scope = 'analytics'")
            .fetch_one(&app.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(label.as_deref(), Some("data team"));

    let query = "{ events(last: 1) { edges { node { type stream } } } }";
    let newest = app.ok(Some(&token), query, json!({})).await;
    assert_eq!(
        newest["events"]["edges"][0]["node"]["stream"],
        json!("actor-alice")
    );
    assert_eq!(
        app.error_code(Some(&token), "{ me { handle } }", json!({}))
            .await,
        "FORBIDDEN"
    );

    let (ok, out, err) = chorus(&app, &["tokens", "revoke", &id]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("revoked {id}"));
    assert_eq!(
        app.error_code(Some(&token), query, json!({})).await,
        "UNAUTHENTICATED"
    );
}
