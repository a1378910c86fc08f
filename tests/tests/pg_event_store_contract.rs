//! The event store contract, run against the Postgres store.

use chorus_postgres::PgEventStore;
use chorus_tests::pg::test_db;

chorus_tests::event_store_contract!(async { PgEventStore::new(test_db().await.pool) });

/// Beyond the contract: one event to each of many new streams in one
/// statement, as the interpreter writes a batch of new remote posts.
#[tokio::test]
async fn appending_to_many_new_streams_skips_existing_ones_and_keeps_order() {
    use chorus_domain::{EventStore, ExpectedVersion, NewEvent, Position, StreamId};

    let store = PgEventStore::new(test_db().await.pool);
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
    assert_eq!(written, [true, true, false, true, true]);
    // The same again: every new one is already in, the existing stream still not.
    let again = store
        .append_new_streams(&items)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, [true, true, false, true, true]);

    let log = store
        .read_all(Position::START, 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let order: Vec<&str> = log.iter().map(|e| e.stream_id.as_str()).collect();
    assert_eq!(order, ["new-2", "new-0", "new-1", "new-3", "new-4"]);
    assert!(log.iter().all(|e| e.stream_version == 1));
}
