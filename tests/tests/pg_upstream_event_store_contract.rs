//! The event store contract, run against the Postgres store in upstream
//! mode: appends go to another Postgres database (the log of record) and
//! come back through the mirror.

use chorus_domain::{EventStore, ExpectedVersion, NewEvent, StreamId};
use chorus_postgres::{GroupAppender, GroupOptions, NewStream};
use chorus_tests::upstream::mirrored;

chorus_tests::event_store_contract!(mirrored());

fn stream(n: usize) -> StreamId {
    StreamId::new(format!("new-{n}")).unwrap_or_else(|e| panic!("{e}"))
}

fn event(n: usize) -> NewEvent {
    NewEvent::new("Tested", 1, &serde_json::json!({ "n": n })).unwrap_or_else(|e| panic!("{e}"))
}

/// One event to each of many new streams, decided by the upstream: a stream
/// that exists there is taken, a repeat is a repeat, and the mirror holds
/// them in the order given, at the upstream's versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_streams_are_decided_upstream_and_mirrored_in_order() {
    let m = mirrored().await;
    // Stream 2 exists upstream only so far: another writer's append.
    m.upstream
        .append(&stream(2), ExpectedVersion::NoStream, vec![event(100)])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let items: Vec<(StreamId, NewEvent)> = (0..5).map(|n| (stream(n), event(n))).collect();
    let written = m
        .store
        .append_new_streams(&items)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    use NewStream::{Appended, Repeated, Taken};
    assert_eq!(written, [Appended, Appended, Taken, Appended, Appended]);
    let again = m
        .store
        .append_new_streams(&items)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, [Repeated, Repeated, Taken, Repeated, Repeated]);
    m.caught_up().await;
    let order = |pool| async move {
        sqlx::query_as::<_, (uuid::Uuid, String, i64)>(
            "SELECT event_id, stream_id, stream_version FROM events ORDER BY transaction_id, seq",
        )
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let upstream = order(&m.upstream_db.pool).await;
    let local = order(m.store.pool()).await;
    assert_eq!(local, upstream);
    let streams: Vec<&str> = local.iter().map(|(_, s, _)| s.as_str()).collect();
    assert_eq!(streams, ["new-2", "new-0", "new-1", "new-3", "new-4"]);
}

/// The inbox's group commit through the upstream: each caller answered as
/// if alone, every event in both logs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_appends_go_upstream_and_answer_each_caller() {
    let m = mirrored().await;
    let appender = GroupAppender::start(
        m.store.clone(),
        GroupOptions {
            max_group: 8,
            writers: 2,
        },
    );
    let answers = futures::future::join_all((0..40).map(|n| {
        let appender = appender.clone();
        async move { appender.append_new_stream(stream(n), event(n)).await }
    }))
    .await;
    assert!(
        answers.iter().all(|a| matches!(a, Ok(NewStream::Appended))),
        "{answers:?}"
    );
    m.caught_up().await;
    for pool in [&m.upstream_db.pool, m.store.pool()] {
        let count: i64 = sqlx::query_scalar("SELECT count(DISTINCT event_id) FROM events")
            .fetch_one(pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(count, 40);
    }
}
