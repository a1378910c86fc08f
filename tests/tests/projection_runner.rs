//! The projection runner: rows and checkpoint commit together, so every event
//! is applied exactly once across restarts and failed batches.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chorus_domain::{EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId};
use chorus_postgres::{PgEventStore, checkpoints};
use chorus_projections::{Projection, ProjectionError, run};
use chorus_tests::pg::test_db;
use sqlx::{PgConnection, PgPool};

/// Counts events per stream, deliberately without any idempotency guard: a
/// double application would show as a wrong count.
struct Counter {
    fail_first: AtomicU32,
}

#[async_trait]
impl Projection for Counter {
    fn name(&self) -> &'static str {
        "test-counter"
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type != "Ignored"
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
        if event.event_type == "Poison"
            && self
                .fail_first
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            // Fails after writing, so the whole batch must roll back.
            sqlx::query("SELECT 1/0").execute(&mut *conn).await?;
        }
        Ok(())
    }
}

async fn setup() -> (PgPool, PgEventStore) {
    let db = test_db().await;
    sqlx::query("CREATE TABLE counts (stream_id text PRIMARY KEY, n bigint NOT NULL)")
        .execute(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let store = PgEventStore::new(db.pool.clone());
    (db.pool, store)
}

async fn append(store: &PgEventStore, stream: &str, types: &[&str]) -> Position {
    let events = types
        .iter()
        .map(|t| NewEvent::new(*t, 1, &serde_json::json!({})).unwrap_or_else(|e| panic!("{e}")))
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

#[tokio::test]
async fn catches_up_follows_live_and_resumes_from_its_checkpoint_exactly_once() {
    let (pool, store) = setup().await;
    append(&store, "a", &["X", "X", "Ignored"]).await;
    let last = append(&store, "b", &["X"]).await;

    let projection = Arc::new(Counter {
        fail_first: AtomicU32::new(0),
    });
    let (mut progress, handle) = run(store.clone(), projection.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        tokio::time::timeout(Duration::from_secs(10), progress.reached(last))
            .await
            .unwrap_or(false)
    );
    assert_eq!(counts(&pool).await, [("a".into(), 2), ("b".into(), 1)]);

    let live = append(&store, "a", &["X"]).await;
    assert!(
        tokio::time::timeout(Duration::from_secs(10), progress.reached(live))
            .await
            .unwrap_or(false)
    );
    assert_eq!(counts(&pool).await, [("a".into(), 3), ("b".into(), 1)]);
    assert_eq!(
        checkpoints::load(&pool, "test-counter")
            .await
            .ok()
            .flatten(),
        Some(live)
    );

    // Stop it, write more, start again: it resumes after its checkpoint.
    handle.abort();
    let _ = handle.await;
    let later = append(&store, "b", &["X", "X"]).await;
    let (mut progress, handle) = run(store.clone(), projection)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(progress.position(), live);
    assert!(
        tokio::time::timeout(Duration::from_secs(10), progress.reached(later))
            .await
            .unwrap_or(false)
    );
    assert_eq!(counts(&pool).await, [("a".into(), 3), ("b".into(), 3)]);
    handle.abort();
}

#[tokio::test]
async fn a_failing_batch_rolls_back_with_its_checkpoint_and_is_retried_not_skipped() {
    let (pool, store) = setup().await;
    append(&store, "a", &["X", "X"]).await;
    append(&store, "p", &["Poison"]).await;
    let last = append(&store, "a", &["X"]).await;

    let projection = Arc::new(Counter {
        fail_first: AtomicU32::new(2),
    });
    let (mut progress, handle) = run(store.clone(), projection.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        tokio::time::timeout(Duration::from_secs(20), progress.reached(last))
            .await
            .unwrap_or(false)
    );
    assert_eq!(
        projection.fail_first.load(Ordering::SeqCst),
        0,
        "the poison event never failed"
    );
    assert_eq!(counts(&pool).await, [("a".into(), 3), ("p".into(), 1)]);
    handle.abort();
}
