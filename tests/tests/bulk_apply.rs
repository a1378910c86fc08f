//! The bulk paths of the relationship read models (a run of events folded
//! and written with a few statements, and a whole rebuild folded in memory
//! and loaded with COPY) write exactly what applying the same events one by
//! one writes.

use chorus_domain::{EventStore, ExpectedVersion, NewEvent, RecordedEvent, StreamId};
use chorus_postgres::PgEventStore;
use chorus_projections::Projection;
use chorus_projections::blocks::Blocks;
use chorus_projections::favorites::Favorites;
use chorus_projections::follows::Follows;
use chorus_projections::reblogs::Reblogs;
use chorus_tests::pg::test_db;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sqlx::PgPool;

const ACTORS: usize = 4;
const POSTS: usize = 4;

fn actor(i: usize) -> String {
    format!("https://a{}.example/users/u{i}", i % 2)
}

fn post(i: usize) -> String {
    format!("https://a{}.example/posts/{i}", i % 2)
}

/// A random event about a few actors and posts, as its type and payload.
fn random_event(rng: &mut StdRng, n: usize) -> (&'static str, Value) {
    let a = actor(rng.random_range(0..ACTORS));
    let b = actor(rng.random_range(0..ACTORS));
    let p = post(rng.random_range(0..POSTS));
    let id = format!("https://x.example/activities/{n}");
    let at = "2026-12-03T10:00:00.123456Z";
    match rng.random_range(0..18) {
        0 | 1 => (
            "FollowRequested",
            json!({"follower": a, "followee": b, "follow_id": id, "activity": {"type": "Follow"}}),
        ),
        2 | 3 => (
            "FollowAccepted",
            json!({"follower": a, "followee": b, "follow_id": id, "automatic": true, "activity": {}}),
        ),
        4 => (
            "FollowRejected",
            json!({"follower": a, "followee": b, "follow_id": id, "activity": {}}),
        ),
        5 => (
            "Unfollowed",
            json!({"follower": a, "followee": b, "follow_id": id, "activity": {}}),
        ),
        6 => (
            "FollowSevered",
            json!({"follower": a, "followee": b, "follow_id": id}),
        ),
        7 => (
            "Favorited",
            json!({"actor": a, "post": p, "post_author": b, "like_id": id, "activity": {}}),
        ),
        8 => (
            "Unfavorited",
            json!({"actor": a, "post": p, "post_author": b, "like_id": id, "activity": {}}),
        ),
        9 => (
            "Reblogged",
            json!({"actor": a, "post": p, "post_author": b, "announce_id": id, "published": format!("2026-12-03T10:00:{:02}.5Z", n % 60), "activity": {}}),
        ),
        10 => (
            "Unreblogged",
            json!({"actor": a, "post": p, "post_author": b, "announce_id": id, "activity": {}}),
        ),
        11 => (
            "Blocked",
            json!({"blocker": a, "blocked": b, "block_id": id, "activity": {}}),
        ),
        12 => (
            "Unblocked",
            json!({"blocker": a, "blocked": b, "block_id": id, "activity": {}}),
        ),
        13 => (
            "RemotePostDeleted",
            json!({"uri": p, "author": b, "deleted_at": at}),
        ),
        14 => ("RemoteActorDeleted", json!({"uri": a, "deleted_at": at})),
        15 => (
            "PostDeleted",
            json!({"post_id": uuid::Uuid::new_v4(), "uri": p, "author": b, "deleted_at": at, "activity": {}}),
        ),
        _ => (
            "Favorited",
            json!({"actor": b, "post": p, "post_author": a, "like_id": id, "activity": {}}),
        ),
    }
}

async fn rows(pool: &PgPool) -> Vec<String> {
    let mut all = Vec::new();
    for table in ["follows", "favorites", "reblogs", "blocks"] {
        let rows: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT to_jsonb(t)::text FROM {table} t ORDER BY 1"
        ))
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        all.extend(rows.into_iter().map(|r| format!("{table}: {r}")));
    }
    all
}

#[tokio::test]
async fn runs_folded_and_written_together_equal_events_applied_one_by_one() {
    let projections: Vec<Box<dyn Projection>> = vec![
        Box::new(Follows),
        Box::new(Favorites),
        Box::new(Reblogs),
        Box::new(Blocks),
    ];
    for seed in 0..6u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let one_by_one = test_db().await;
        let together = test_db().await;
        let in_memory = test_db().await;
        let store = PgEventStore::new(one_by_one.pool.clone());
        for n in 0..400 {
            let (kind, payload) = random_event(&mut rng, n);
            let event = NewEvent::new(kind, 1, &payload).unwrap_or_else(|e| panic!("{e}"));
            store
                .append(
                    &StreamId::new(format!("s-{}", n % 13)).unwrap_or_else(|e| panic!("{e}")),
                    ExpectedVersion::Any,
                    vec![event],
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let events: Vec<RecordedEvent> = store
            .read_all(chorus_domain::Position::START, 1000)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(events.len(), 400);
        for projection in &projections {
            let handled: Vec<&RecordedEvent> = events
                .iter()
                .filter(|e| projection.handles(&e.event_type))
                .collect();
            let mut conn = one_by_one
                .pool
                .acquire()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            for event in &handled {
                projection
                    .apply(&mut conn, event)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            // A rebuild's fold in memory, loaded into the empty tables.
            if let Some(mut memory) = projection.memory_fold() {
                for event in &handled {
                    memory.apply(event).unwrap_or_else(|e| panic!("{e}"));
                }
                let mut conn = in_memory
                    .pool
                    .acquire()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                memory
                    .load(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            let mut conn = together
                .pool
                .acquire()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let mut rest = &handled[..];
            while !rest.is_empty() {
                let size = rng.random_range(1..=rest.len().min(120));
                projection
                    .apply_all(&mut conn, &rest[..size])
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                rest = &rest[size..];
            }
        }
        let expected = rows(&one_by_one.pool).await;
        assert!(expected.len() > 5, "seed {seed}: too few rows to compare");
        assert_eq!(rows(&together.pool).await, expected, "seed {seed}");
        assert_eq!(
            rows(&in_memory.pool).await,
            expected,
            "seed {seed}, in memory"
        );
    }
}
