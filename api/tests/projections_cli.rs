//! `chorus projections …`, through the real binary against the database of
//! a running Chorus: the rebuilt read models replace the live ones while
//! the server serves.

use chorus_tests::app::{TestApp, spawn_app};
use chorus_tests::history::{read_models, some_history};

/// Runs `chorus ARGS…` against `app`'s database; its exit code and output.
fn run(app: &TestApp, args: &[&str]) -> (Option<i32>, String, String) {
    chorus_tests::cli::run(env!("CARGO_BIN_EXE_chorus"), app, args)
}

fn chorus(app: &TestApp, args: &[&str]) -> (Option<i32>, String, String) {
    run(app, &[&["projections"], args].concat())
}

fn reprocess(app: &TestApp, args: &[&str]) -> (Option<i32>, String, String) {
    run(app, &[&["reprocess"], args].concat())
}

#[tokio::test]
async fn read_models_are_listed_and_rebuilt_from_the_command_line() {
    let app = spawn_app().await;
    some_history(&app).await;
    let before = read_models(&app.pool).await;

    let (code, out, err) = chorus(&app, &["rebuild", "follows", "favorites"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("follows: rebuilt from 8 event(s) and swapped in"),
        "{out}"
    );
    assert!(
        out.contains("favorites: rebuilt from 4 event(s) and swapped in"),
        "{out}"
    );
    app.settle().await;
    assert_eq!(read_models(&app.pool).await, before);

    // Caught-up projections save their checkpoint within a second or so,
    // even those that skipped every recent event.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (code, out, _) = chorus(&app, &["list"]);
        assert_eq!(code, Some(0));
        let lines: Vec<&str> = chorus_projections::all()
            .iter()
            .map(|p| {
                out.lines()
                    .find(|l| l.starts_with(&format!("{}\t", p.name())))
                    .unwrap_or_else(|| panic!("{} is not listed: {out}", p.name()))
            })
            .collect();
        if lines.iter().all(|l| l.contains("lag 0 event(s), 0.0 s")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{out}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (code, out, _) = chorus(&app, &["status", "follows"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("(Swapped)"), "{out}");
    assert!(out.contains("8 of 8 events"), "{out}");
    assert!(out.contains("by cli"), "{out}");

    // Bad input is refused clearly.
    let (code, _, err) = chorus(&app, &["rebuild", "nope"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no projection is called `nope`"), "{err}");
    let (code, _, err) = chorus(&app, &["rebuild"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = chorus(&app, &["status", "nope"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("there are: actors, posts"), "{err}");

    // And the request and outcome are in the log.
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE stream_id LIKE 'admin-%' AND metadata->>'actor' IS NULL",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(recorded, 4);
}

#[tokio::test]
async fn inbound_history_is_reprocessed_from_the_command_line() {
    let app = spawn_app().await;
    some_history(&app).await;
    let (code, out, err) = reprocess(&app, &["preview", "--outcome", "unsupported"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "0 activit(ies) selected\n");
    let (code, out, err) = reprocess(&app, &["run", "--type", "Follow"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(": 0 activities, 0 applied now"), "{out}");
    assert!(out.ends_with("nothing held\n"), "{out}");
    let run = err
        .lines()
        .find_map(|l| l.strip_prefix("reprocessing run "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no run id: {err}"))
        .to_owned();
    let (code, out, _) = reprocess(&app, &["status", &run]);
    assert_eq!(code, Some(0));
    assert!(out.contains("asked by cli"), "{out}");
    let (code, _, err) = reprocess(&app, &["release", &run]);
    assert_eq!(code, Some(1));
    assert!(err.contains("held nothing to send"), "{err}");
    let (code, _, err) = reprocess(&app, &["run", "--outcome", "odd"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = reprocess(&app, &["preview", "--after", "x"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = reprocess(&app, &["status", "01a23dad-01d4-7698-8f0a-62db45aea0b3"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no reprocessing run"), "{err}");
}
