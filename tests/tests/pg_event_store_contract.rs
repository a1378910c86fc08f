//! The event store contract, run against the Postgres store.

use chorus_postgres::{NewStream, PgEventStore};
use chorus_tests::pg::test_db;

chorus_tests::event_store_contract!(async { PgEventStore::new(test_db().await.pool) });

/// Beyond the contract: one event to each of many new streams in one
/// statement, as the interpreter writes a batch of new remote posts.
#[tokio::test]
async fn appending_to_many_new_streams_skips_existing_ones_and_keeps_order() {
    use chorus_domain::{EventStore, ExpectedVersion, NewEvent, Position, StreamId};

    let pool = test_db().await.pool;
    let store = PgEventStore::new(pool.clone());
    let stream = |n: usize| StreamId::new(format!("new-{n}")).unwrap_or_else(|e| panic!("{e}"));
    let event = |n: usize| {
        NewEvent::new("Tested", 1, &serde_json::json!({ "n": n })).unwrap_or_else(|e| panic!("{e}"))
    };
    // Stream 2 exists already.
    store
        .append(&stream(2), ExpectedVersion::NoStream, vec![event(100)])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let items: Vec<(StreamId, NewEvent)> = (0..5).map(|n| (stream(n), event(n))).collect();
    let written = store
        .append_new_streams(&items)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    use NewStream::{Appended, Repeated, Taken};
    assert_eq!(written, [Appended, Appended, Taken, Appended, Appended]);
    // The same again: every new one is already in, the existing stream still not.
    let again = store
        .append_new_streams(&items)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, [Repeated, Repeated, Taken, Repeated, Repeated]);

    // Reads stop short of transactions still running anywhere in the
    // cluster (other tests share it), so wait until the whole log is readable.
    let through = chorus_tests::app::last_committed(&pool).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let log = loop {
        let log = store
            .read_all(Position::START, 100)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if log.last().is_some_and(|e| e.position >= through) {
            break log;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{through} never became readable"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    let order: Vec<&str> = log.iter().map(|e| e.stream_id.as_str()).collect();
    assert_eq!(order, ["new-2", "new-0", "new-1", "new-3", "new-4"]);
    assert!(log.iter().all(|e| e.stream_version == 1));
}

/// Group commit, as the inbox appends: many concurrent callers, each with
/// one event for a new stream, answered as if each had appended alone,
/// with fewer statements than callers.
#[tokio::test]
async fn grouped_appends_answer_each_caller_as_if_alone() {
    use chorus_domain::{EventStore, ExpectedVersion, NewEvent, StreamId};
    use chorus_postgres::{GroupAppender, GroupOptions};

    let pool = test_db().await.pool;
    let store = PgEventStore::new(pool.clone());
    let stream = |n: usize| StreamId::new(format!("grouped-{n}")).unwrap_or_else(|e| panic!("{e}"));
    let event = |n: usize| {
        let mut event = NewEvent::new("Tested", 1, &serde_json::json!({ "n": n }))
            .unwrap_or_else(|e| panic!("{e}"));
        // Deterministic ids, as the inbox derives them from the activity id.
        event.id = chorus_domain::EventId(uuid::Uuid::from_u128(n as u128 + 1));
        event
    };
    // Stream 7 already has an event of its own.
    store
        .append(&stream(7), ExpectedVersion::NoStream, vec![event(1_000)])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let appender = GroupAppender::start(
        store.clone(),
        GroupOptions {
            max_group: 16,
            writers: 2,
        },
    );
    // 200 callers at once; every tenth sends its event twice (a repeat in
    // the same group, or in a later one), and one has an invalid event.
    let calls = (0..200).flat_map(|n| {
        let copies = if n % 10 == 0 { 2 } else { 1 };
        std::iter::repeat_n(n, copies)
    });
    let answers = futures::future::join_all(calls.map(|n| {
        let appender = appender.clone();
        async move {
            let mut event = event(n);
            if n == 13 {
                event.event_type.clear();
            }
            (n, appender.append_new_stream(stream(n), event).await)
        }
    }))
    .await;

    let mut appended = std::collections::HashMap::<usize, usize>::new();
    for (n, answer) in answers {
        match (n, answer) {
            (13, Err(e)) => assert!(e.to_string().contains("empty type"), "{e}"),
            (7, Ok(outcome)) => assert_eq!(outcome, NewStream::Taken),
            (n, Ok(NewStream::Appended)) => *appended.entry(n).or_default() += 1,
            (n, Ok(NewStream::Repeated)) => assert_eq!(n % 10, 0, "only repeats are repeated"),
            (n, other) => panic!("{n}: {other:?}"),
        }
    }
    // Every valid event of a new stream was appended exactly once.
    assert_eq!(appended.len(), 198);
    assert!(appended.values().all(|&count| count == 1));
    // Counted in the table: reading the log waits for the visibility
    // horizon, which other tests' databases on the cluster hold back.
    let (events, first_versions, transactions): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE stream_version = 1),
                count(DISTINCT transaction_id)
         FROM events",
    )
    .fetch_one(&pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((events, first_versions), (1 + 198, 1 + 198));
    // Grouped: far fewer transactions than events.
    assert!(transactions < 50, "{transactions} transactions");
}
