//! Rebuilding read models beside the live ones: copies filled from position
//! 0, swapped in atomically, the live projection carrying on after the swap.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chorus_domain::{EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId};
use chorus_postgres::{PgEventStore, checkpoints};
use chorus_projections::rebuild::{self, Rebuild, RebuildError, RebuildState};
use chorus_projections::{Projection, ProjectionError, run};
use chorus_tests::app::last_committed;
use chorus_tests::pg::test_db;
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;

/// Counts events per stream without any idempotency guard, so that an event
/// applied twice, or missed, by the rebuild or around the swap shows as a
/// wrong count.
struct Counter;

#[async_trait]
impl Projection for Counter {
    fn name(&self) -> &'static str {
        "counter"
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type == "Counted"
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(&["Counted"])
    }

    fn tables(&self) -> &'static [&'static str] {
        &["counts"]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        sqlx::query(
            "INSERT INTO counts (stream_id, n) VALUES ($1, 1)
             ON CONFLICT (stream_id) DO UPDATE SET n = counts.n + 1",
        )
        .bind(event.stream_id.as_str())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

async fn setup() -> (PgPool, PgEventStore) {
    let db = test_db().await;
    sqlx::raw_sql(
        "CREATE TABLE counts (stream_id text PRIMARY KEY, n bigint NOT NULL CHECK (n > 0));
         CREATE INDEX counts_n ON counts (n);
         COMMENT ON TABLE counts IS 'events per stream';
         CREATE VIEW busiest AS SELECT stream_id, n FROM counts WHERE n > 1;
         CREATE VIEW busiest_names AS SELECT stream_id FROM busiest;
         COMMENT ON VIEW busiest IS 'streams with more than one event';
         COMMENT ON COLUMN busiest.n IS 'events in the stream';
",
    )
    .execute(&db.pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let (pool, store) = (db.pool.clone(), PgEventStore::new(db.pool));
    (pool, store)
}

async fn append(store: &PgEventStore, stream: &str, n: usize) -> Position {
    let events = (0..n)
        .map(|_| {
            NewEvent::new("Counted", 1, &serde_json::json!({})).unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    store
        .append(
            &StreamId::new(stream).unwrap_or_else(|e| panic!("{e}")),
            ExpectedVersion::Any,
            events,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .last_position()
        .unwrap_or_default()
}

async fn counts(pool: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT stream_id, n FROM counts ORDER BY stream_id")
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// What the counts must be: the log itself, counted.
async fn expected(pool: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT stream_id, count(*) FROM events WHERE event_type = 'Counted'
         GROUP BY stream_id ORDER BY stream_id",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn a_rebuild_beside_a_busy_live_projection_swaps_in_exact_copies() {
    let (pool, store) = setup().await;
    for i in 0..20 {
        append(&store, &format!("s{}", i % 7), 50).await;
    }
    let (mut progress, live) = run(store.clone(), Arc::new(Counter))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let head = last_committed(&pool).await;
    assert!(
        tokio::time::timeout(Duration::from_secs(20), progress.reached(head))
            .await
            .unwrap_or(false)
    );
    // Damage the live read model: the rebuild must not start from it.
    sqlx::query("UPDATE counts SET n = n + 1000")
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // Writers keep appending during the rebuild and its swap.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                append(&store, &format!("s{}", i % 9), 3).await;
                i += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    // Someone was granted reading the table and a view over it.
    let role = format!("reader_{}", uuid::Uuid::new_v4().simple());
    sqlx::raw_sql(&format!(
        "CREATE ROLE {role} NOLOGIN; GRANT SELECT ON counts TO {role}; GRANT SELECT ON busiest TO {role}"
    ))
    .execute(&pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let rebuild = Rebuild::begin(&pool, vec![Arc::new(Counter)], "test")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let id = rebuild.ids()[0].1;
    // A second rebuild of the same projection is refused while it runs.
    assert!(matches!(
        Rebuild::begin(&pool, vec![Arc::new(Counter)], "test").await,
        Err(RebuildError::AlreadyRunning(name)) if name == "counter"
    ));
    let (tx, _rx) = watch::channel((0, 0));
    rebuild.run(tx).await.unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap_or_else(|e| panic!("{e}"));

    let head = last_committed(&pool).await;
    assert!(
        tokio::time::timeout(Duration::from_secs(20), progress.reached(head))
            .await
            .unwrap_or(false)
    );
    assert_eq!(
        counts(&pool).await,
        expected(&pool).await,
        "every event counted once"
    );

    let status = rebuild::status_of(&pool, id)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no rebuild row"));
    assert_eq!(status.state, RebuildState::Swapped);
    assert!(status.events_done >= 1000, "{status:?}");
    assert!(status.finished_at.is_some());

    // The swapped-in table has the live one's index, check, comment, and
    // the views over it were made again.
    let index: Option<String> =
        sqlx::query_scalar("SELECT indexname::text FROM pg_indexes WHERE tablename = 'counts' AND indexname = 'counts_n'")
            .fetch_optional(&pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(index.as_deref(), Some("counts_n"));
    assert!(
        sqlx::query("INSERT INTO counts VALUES ('bad', 0)")
            .execute(&pool)
            .await
            .is_err(),
        "the check constraint came along"
    );
    let comment: Option<String> =
        sqlx::query_scalar("SELECT obj_description('public.counts'::regclass, 'pg_class')")
            .fetch_one(&pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(comment.as_deref(), Some("events per stream"));
    let busiest: i64 = sqlx::query_scalar("SELECT count(*) FROM busiest_names")
        .fetch_one(&pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(busiest > 0);
    let described: (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT obj_description('public.busiest'::regclass, 'pg_class'),
                col_description('public.busiest'::regclass, 2)",
    )
    .fetch_one(&pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        described,
        (
            Some("streams with more than one event".to_owned()),
            Some("events in the stream".to_owned())
        ),
        "the view's comments came along"
    );
    let granted: (bool, bool) = sqlx::query_as(&format!(
        "SELECT has_table_privilege('{role}', 'counts', 'SELECT'),
                has_table_privilege('{role}', 'busiest', 'SELECT')"
    ))
    .fetch_one(&pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(granted, (true, true), "grants came along");
    sqlx::raw_sql(&format!(
        "REVOKE ALL ON counts, busiest FROM {role}; DROP ROLE {role}"
    ))
    .execute(&pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let schemas: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'rebuild_%' OR nspname LIKE 'retired_%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(schemas, 0, "the copies' schemas are gone");
    live.abort();
}

#[tokio::test]
async fn readers_see_the_old_tables_or_the_new_ones_never_a_half_built_state() {
    let (pool, store) = setup().await;
    for i in 0..40 {
        append(&store, &format!("s{i}"), 100).await;
    }
    let (mut progress, live) = run(store.clone(), Arc::new(Counter))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let head = last_committed(&pool).await;
    assert!(
        tokio::time::timeout(Duration::from_secs(20), progress.reached(head))
            .await
            .unwrap_or(false)
    );
    let before = counts(&pool).await;
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU32::new(0));
    let reader = {
        let (pool, stop, reads, before) =
            (pool.clone(), stop.clone(), reads.clone(), before.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                assert_eq!(
                    counts(&pool).await,
                    before,
                    "a reader saw a partial read model"
                );
                reads.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let rebuild = Rebuild::begin(&pool, vec![Arc::new(Counter)], "test")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (tx, rx) = watch::channel((0, 0));
    rebuild.run(tx).await.unwrap_or_else(|e| panic!("{e}"));
    stop.store(true, Ordering::SeqCst);
    reader.await.unwrap_or_else(|e| panic!("{e}"));
    assert!(reads.load(Ordering::SeqCst) > 0);
    assert_eq!(
        *rx.borrow(),
        (4000, 4000),
        "progress tells events done and in all"
    );
    assert_eq!(counts(&pool).await, before);
    // The live projection carries on over the new tables.
    let later = append(&store, "s0", 5).await;
    assert!(
        tokio::time::timeout(Duration::from_secs(20), progress.reached(later))
            .await
            .unwrap_or(false)
    );
    assert_eq!(counts(&pool).await, expected(&pool).await);
    assert_eq!(
        checkpoints::load(&pool, "counter").await.ok().flatten(),
        Some(later)
    );
    live.abort();
}

#[tokio::test]
async fn a_failed_rebuild_leaves_the_live_tables_alone_and_says_why() {
    struct Undeclared;
    #[async_trait]
    impl Projection for Undeclared {
        fn name(&self) -> &'static str {
            "counter"
        }
        fn handles(&self, event_type: &str) -> bool {
            event_type == "Counted"
        }
        // `counts` is written but not declared.
        fn tables(&self) -> &'static [&'static str] {
            &[]
        }
        async fn apply(
            &self,
            conn: &mut PgConnection,
            event: &RecordedEvent,
        ) -> Result<(), ProjectionError> {
            Counter.apply(conn, event).await
        }
    }
    let (pool, store) = setup().await;
    append(&store, "s", 10).await;
    let (mut progress, live) = run(store.clone(), Arc::new(Counter))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let head = last_committed(&pool).await;
    assert!(
        tokio::time::timeout(Duration::from_secs(20), progress.reached(head))
            .await
            .unwrap_or(false)
    );
    let rebuild = Rebuild::begin(&pool, vec![Arc::new(Undeclared)], "test")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let id = rebuild.ids()[0].1;
    let (tx, _rx) = watch::channel((0, 0));
    assert!(rebuild.run(tx).await.is_err());
    assert_eq!(
        counts(&pool).await,
        [("s".into(), 10)],
        "the live table was not written"
    );
    let status = rebuild::status_of(&pool, id)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no rebuild row"));
    assert_eq!(status.state, RebuildState::Failed);
    assert!(status.error.is_some());
    // And another can start.
    assert!(
        Rebuild::begin(&pool, vec![Arc::new(Counter)], "test")
            .await
            .is_ok()
    );
    live.abort();
}
