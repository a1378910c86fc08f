//! `chorus events migrate`, through the real binary: a log copied into
//! another Postgres database (the copier is the same for a KurrentDB
//! target), resumed with only what is new, copied back with `--from`, and
//! refused when the target is not a prefix of the source.

use std::process::{Command, Stdio};

use chorus_domain::{
    EventStore, ExpectedVersion, Metadata, NewEvent, Position, RecordedEvent, StreamId,
};
use chorus_postgres::{Narrowed, PgEventStore};
use chorus_tests::app::{TestApp, spawn_app};
use chorus_tests::history::some_history;
use chorus_tests::pg::{empty_db, test_db};
use sqlx::PgPool;

/// Runs `chorus ARGS…` with `database_url` as this server's database and
/// `env` set: whether it succeeded, its stdout and stderr.
fn chorus(database_url: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env_remove("CHORUS_CONFIG")
        .env_remove("CHORUS_EVENT_STORE")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run chorus: {e}"));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn log(pool: &PgPool) -> Vec<RecordedEvent> {
    PgEventStore::read_after(pool, Position::START, &Narrowed::default(), 100_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Waits until every committed event of `pool`'s log is readable (other
/// tests' transactions on the cluster can hold reads back for a moment).
async fn settled(pool: &PgPool) {
    let through = chorus_tests::app::last_committed(pool).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let last = PgEventStore::read_before(pool, Position::END, &Narrowed::default(), 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if last.first().map_or(Position::START, |e| e.position) >= through {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{through} never became readable"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// The two logs hold the same events in the same order: everything but
/// the positions, which each log hands out itself.
fn assert_same(source: &[RecordedEvent], target: &[RecordedEvent]) {
    assert_eq!(source.len(), target.len());
    for (s, t) in source.iter().zip(target) {
        assert_eq!(s.id, t.id);
        assert_eq!(s.stream_id, t.stream_id, "{}", s.id);
        assert_eq!(s.stream_version, t.stream_version, "{}", s.id);
        assert_eq!(s.event_type, t.event_type, "{}", s.id);
        assert_eq!(s.schema_version, t.schema_version, "{}", s.id);
        assert_eq!(s.payload, t.payload, "{}", s.id);
        assert_eq!(s.metadata, t.metadata, "{}", s.id);
        assert_eq!(s.recorded_at, t.recorded_at, "{}", s.id);
    }
}

/// A few events beside the history: a batch with metadata of every kind,
/// and a second schema version.
async fn more_events(app: &TestApp, stream: &str, n: u64) {
    let store = PgEventStore::new(app.pool.clone());
    let stream = StreamId::new(stream).unwrap_or_else(|e| panic!("{e}"));
    let events = (0..n)
        .map(|i| {
            let mut metadata = Metadata {
                actor: Some("https://remote.test/users/bob".into()),
                remote_host: Some("remote.test".into()),
                correlation_id: Some(uuid::Uuid::new_v4()),
                received_at: Some(chrono::Utc::now()),
                ..Metadata::default()
            };
            metadata
                .extra
                .insert("trace".into(), serde_json::json!({ "i": i }));
            let mut event =
                NewEvent::new("Tested", 1, &serde_json::json!({ "i": i, "s": "é\"\\" }))
                    .unwrap_or_else(|e| panic!("{e}"))
                    .with_metadata(metadata);
            event.schema_version = 2;
            event
        })
        .collect();
    store
        .append(&stream, ExpectedVersion::Any, events)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

fn copied(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("copied "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary in {stderr}"))
}

#[tokio::test]
async fn the_log_is_copied_whole_then_only_what_is_new_and_back_again() {
    let app = spawn_app().await;
    some_history(&app).await;
    more_events(&app, "tested-a", 3).await;
    settled(&app.pool).await;
    let source = log(&app.pool).await;
    let streams: std::collections::HashSet<_> = source.iter().map(|e| &e.stream_id).collect();
    assert!(streams.len() > 3, "{streams:?}");

    // Into an empty database, which gets Chorus' schema first.
    let target = empty_db().await;
    let (ok, out, err) = chorus(
        &app.database_url,
        &["events", "migrate", "--to", &target.url],
        &[],
    );
    assert!(ok, "{err}");
    assert_eq!(out, "");
    assert_eq!(copied(&err), source.len() as u64, "{err}");
    assert!(err.contains("events/s"), "{err}");
    assert!(
        !err.contains(&target.url),
        "the URL's password stays hidden: {err}"
    );
    settled(&target.pool).await;
    assert_same(&source, &log(&target.pool).await);

    // More events: only they are copied.
    app.account("zed", false).await;
    more_events(&app, "tested-b", 2).await;
    more_events(&app, "tested-a", 1).await;
    settled(&app.pool).await;
    let source = log(&app.pool).await;
    let before = log(&target.pool).await.len();
    assert!(before < source.len());
    let (ok, _, err) = chorus(
        &app.database_url,
        &["events", "migrate", "--to", &target.url],
        &[],
    );
    assert!(ok, "{err}");
    settled(&target.pool).await;
    let after = log(&target.pool).await;
    assert_eq!(copied(&err) as usize, source.len() - before, "{err}");
    assert_same(&source, &after);

    // Nothing new: nothing copied, everything checked.
    let (ok, _, err) = chorus(
        &app.database_url,
        &["events", "migrate", "--to", &target.url],
        &[],
    );
    assert!(ok, "{err}");
    assert_eq!(copied(&err), 0, "{err}");
    assert!(
        err.contains(&format!("{} already there", source.len())),
        "{err}"
    );

    // And back from it, into a third database as this server's own.
    let third = test_db().await;
    let (ok, _, err) = chorus(
        &third.url,
        &["events", "migrate", "--from", &target.url],
        &[],
    );
    assert!(ok, "{err}");
    assert_eq!(copied(&err), source.len() as u64, "{err}");
    settled(&third.pool).await;
    assert_same(&source, &log(&third.pool).await);
}

#[tokio::test]
async fn a_run_stopped_midway_resumes_without_copying_twice() {
    let app = spawn_app().await;
    more_events(&app, "tested-a", 5).await;
    more_events(&app, "tested-b", 4).await;
    settled(&app.pool).await;
    let source = log(&app.pool).await;
    // A target holding the first three events of the first stream, as a
    // run stopped after part of a page would leave it.
    let target = test_db().await;
    let store = PgEventStore::new(target.pool.clone());
    for event in &source[..3] {
        store
            .import(
                &event.stream_id,
                ExpectedVersion::Exact(event.stream_version - 1),
                std::slice::from_ref(event),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    settled(&target.pool).await;
    let (ok, _, err) = chorus(
        &app.database_url,
        &["events", "migrate", "--to", &target.url],
        &[],
    );
    assert!(ok, "{err}");
    assert_eq!(copied(&err), source.len() as u64 - 3, "{err}");
    assert!(err.contains("3 already there"), "{err}");
    settled(&target.pool).await;
    assert_same(&source, &log(&target.pool).await);
}

#[tokio::test]
async fn a_target_that_is_not_a_prefix_is_refused_and_left_alone() {
    let app = spawn_app().await;
    more_events(&app, "tested-a", 3).await;
    settled(&app.pool).await;

    // A log of its own.
    let target = test_db().await;
    let other = PgEventStore::new(target.pool.clone());
    let stream = StreamId::new("elsewhere-1").unwrap_or_else(|e| panic!("{e}"));
    let event =
        NewEvent::new("Tested", 1, &serde_json::json!({})).unwrap_or_else(|e| panic!("{e}"));
    other
        .append(&stream, ExpectedVersion::NoStream, vec![event])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    settled(&target.pool).await;
    let (ok, _, err) = chorus(
        &app.database_url,
        &["events", "migrate", "--to", &target.url],
        &[],
    );
    assert!(!ok);
    assert!(err.contains("neither empty nor a prefix"), "{err}");
    assert_eq!(log(&target.pool).await.len(), 1);

    // The source's first events, but in another order.
    let source = log(&app.pool).await;
    let swapped = test_db().await;
    let store = PgEventStore::new(swapped.pool.clone());
    let other_stream = StreamId::new("elsewhere-2").unwrap_or_else(|e| panic!("{e}"));
    let event =
        NewEvent::new("Tested", 1, &serde_json::json!({})).unwrap_or_else(|e| panic!("{e}"));
    store
        .append(&other_stream, ExpectedVersion::NoStream, vec![event])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .import(
            &source[0].stream_id,
            ExpectedVersion::NoStream,
            &source[..1],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    settled(&swapped.pool).await;
    let (ok, _, err) = chorus(
        &app.database_url,
        &["events", "migrate", "--to", &swapped.url],
        &[],
    );
    assert!(!ok);
    assert!(err.contains("neither empty nor a prefix"), "{err}");
    assert!(err.contains("elsewhere-2"), "{err}");
    assert_eq!(log(&swapped.pool).await.len(), 2);
}

#[tokio::test]
async fn bad_urls_and_a_kurrentdb_store_for_serve_are_refused_without_showing_passwords() {
    let db = test_db().await;
    for (args, says) in [
        (
            vec!["--to", "mysql://u:hunter2@db.example/x"],
            "neither a Postgres URL",
        ),
        (
            vec!["--to", "postgres://u@h/x", "--from", "postgres://u@h/y"],
            "cannot be used with",
        ),
        (vec![], "--to"),
    ] {
        let (ok, _, err) = chorus(&db.url, &[&["events", "migrate"], &args[..]].concat(), &[]);
        assert!(!ok, "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("hunter2"), "{args:?}: {err}");
    }
    if !cfg!(feature = "kurrentdb") {
        let (ok, _, err) = chorus(
            &db.url,
            &[
                "events",
                "migrate",
                "--to",
                "kurrentdb://admin:hunter2@127.0.0.1:1?tls=false",
            ],
            &[],
        );
        assert!(!ok);
        assert!(
            err.contains("built without the `kurrentdb` feature"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }

    // Without the feature, `serve` refuses a KurrentDB log of record at once.
    if !cfg!(feature = "kurrentdb") {
        let store = (
            "CHORUS_EVENT_STORE",
            "kurrentdb://admin:hunter2@127.0.0.1:2113?tls=false",
        );
        let (ok, _, err) = chorus(
            &db.url,
            &["serve"],
            &[store, ("CHORUS_BIND", "127.0.0.1:0")],
        );
        assert!(!ok);
        assert!(
            err.contains("built without the `kurrentdb` feature"),
            "{err}"
        );
        assert!(
            err.contains("kurrentdb://admin:***@127.0.0.1:2113"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }
    let (ok, _, err) = chorus(
        &db.url,
        &["serve"],
        &[("CHORUS_EVENT_STORE", "mongodb://x")],
    );
    assert!(!ok);
    assert!(err.contains("CHORUS_EVENT_STORE"), "{err}");
}

/// `chorus serve` with another Postgres database as its log of record:
/// refused while this database's log is not a prefix of it, then, once
/// copied there with `chorus events migrate --to`, serving a mutation whose
/// event lands in the log of record and in the mirror.
#[tokio::test]
async fn serve_with_another_database_as_its_log_of_record() {
    let db = test_db().await;
    let upstream = test_db().await;
    let store = PgEventStore::new(db.pool.clone());
    let stream = StreamId::new("before").unwrap_or_else(|e| panic!("{e}"));
    let event = NewEvent::new("Tested", 1, &serde_json::json!({ "n": 1 }))
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .append(&stream, ExpectedVersion::NoStream, vec![event])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let log_of_record = ("CHORUS_EVENT_STORE", upstream.url.as_str());
    let port = chorus_tests::cli::free_port();
    let bind = format!("127.0.0.1:{port}");
    let base = format!("http://127.0.0.1:{port}");
    let env = [
        log_of_record,
        ("CHORUS_BIND", bind.as_str()),
        ("CHORUS_BASE_URL", base.as_str()),
    ];
    let (ok, _, err) = chorus(&db.url, &["serve"], &env);
    assert!(!ok);
    assert!(err.contains("is not a prefix of that log"), "{err}");
    assert!(err.contains("chorus events migrate --to"), "{err}");

    let (ok, _, err) = chorus(&db.url, &["events", "migrate", "--to", &upstream.url], &[]);
    assert!(ok, "{err}");
    let mut server = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env_remove("CHORUS_CONFIG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start chorus serve: {e}"));
    chorus_tests::cli::wait_ready(&mut server, &base).await;
    let (ok, printed, err) = chorus(
        &db.url,
        &["accounts", "create", "alice"],
        &[log_of_record, ("CHORUS_BASE_URL", base.as_str())],
    );
    assert!(ok, "{err}");
    let token = printed
        .lines()
        .find_map(|l| l.strip_prefix("token:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no token in {printed:?}"))
        .to_owned();
    let response: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .bearer_auth(&token)
        .json(&serde_json::json!({
            "query": "mutation { createPost(input: { text: \"served upstream\" }) { id content } }"
        }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = server.kill();
    let _ = server.wait();
    assert!(response.get("errors").is_none(), "{response}");
    assert!(
        response["data"]["createPost"]["content"]
            .as_str()
            .is_some_and(|c| c.contains("served upstream")),
        "{response}"
    );
    settled(&upstream.pool).await;
    settled(&db.pool).await;
    let of_record = log(&upstream.pool).await;
    let types: Vec<&str> = of_record.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["Tested", "ActorRegistered", "PostCreated"]);
    assert_same(&of_record, &log(&db.pool).await);
}
