//! Subscriptions never skip an event.
//!
//! Sequence numbers are handed out before commit, so a transaction can commit
//! after one that took a later number. Here many writers append in
//! transactions that sleep before committing, sometimes take their
//! transaction id long before appending, and sometimes roll back. Live
//! subscribers started at different moments must each see exactly the
//! committed events, each once, in one and the same order.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chorus_domain::{
    EventId, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId,
};
use chorus_postgres::PgEventStore;
use chorus_tests::pg::test_db;
use futures::StreamExt;
use rand::Rng;

const WRITERS: usize = 16;
const TRANSACTIONS_PER_WRITER: usize = 40;

fn new_event(writer: usize, n: usize) -> NewEvent {
    NewEvent::new(
        "Stressed",
        1,
        &serde_json::json!({ "writer": writer, "n": n }),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

async fn writer(store: PgEventStore, index: usize, committed: Arc<Mutex<Vec<EventId>>>) {
    let streams: Vec<StreamId> = (0..4)
        .map(|s| {
            StreamId::new(format!("stress-{}", (index + s) % 8)).unwrap_or_else(|e| panic!("{e}"))
        })
        .chain([StreamId::new(format!("stress-own-{index}")).unwrap_or_else(|e| panic!("{e}"))])
        .collect();
    for n in 0..TRANSACTIONS_PER_WRITER {
        let (stream, events, early_xid, delay, rollback, plain) = {
            let mut rng = rand::rng();
            let stream = streams[rng.random_range(0..streams.len())].clone();
            let events: Vec<NewEvent> = (0..rng.random_range(1..=3))
                .map(|i| new_event(index, n * 10 + i))
                .collect();
            (
                stream,
                events,
                rng.random_bool(0.3),
                Duration::from_millis(rng.random_range(0..25)),
                rng.random_bool(0.2),
                rng.random_bool(0.15),
            )
        };
        let ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
        if plain {
            // The ordinary path: one autocommitted append.
            store
                .append(&stream, ExpectedVersion::Any, events)
                .await
                .unwrap_or_else(|e| panic!("append failed: {e:?}"));
            committed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(ids);
            continue;
        }
        let mut tx = store.pool().begin().await.unwrap_or_else(|e| panic!("{e}"));
        if early_xid {
            // Take a transaction id now, append only after others have moved on.
            sqlx::query("SELECT pg_current_xact_id()")
                .execute(&mut *tx)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            tokio::time::sleep(delay).await;
        }
        PgEventStore::append_with(&mut tx, &stream, ExpectedVersion::Any, &events)
            .await
            .unwrap_or_else(|e| panic!("append failed: {e:?}"));
        // The sequence numbers are taken; commit late.
        tokio::time::sleep(delay).await;
        if rollback {
            tx.rollback().await.unwrap_or_else(|e| panic!("{e}"));
        } else {
            tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
            committed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(ids);
            store.appended();
        }
    }
}

/// Collects events from a subscription until it has `want` of them, then
/// keeps listening a little longer to catch any extra or repeated event.
async fn collect(mut sub: chorus_domain::EventStream, want: usize) -> Vec<RecordedEvent> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < want {
        match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Some(Ok(event))) => seen.push(event),
            Ok(Some(Err(e))) => panic!("subscription failed: {e}"),
            Ok(None) => panic!("subscription ended"),
            Err(_) => panic!(
                "subscription saw {} of {want} events within 60 s",
                seen.len()
            ),
        }
    }
    if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_millis(1500), sub.next()).await {
        panic!("subscription delivered an extra event: {extra:?}");
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_subscribers_see_exactly_the_committed_events_once_in_one_order() {
    let db = test_db().await;
    let store = PgEventStore::new(db.pool.clone());
    let committed = Arc::new(Mutex::new(Vec::new()));

    // One subscriber from the start, live through the whole run.
    let early = store.subscribe_all(Position::START);
    let writers: Vec<_> = (0..WRITERS)
        .map(|i| tokio::spawn(writer(store.clone(), i, committed.clone())))
        .collect();
    // Another that joins mid-run and must catch up, then follow live.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late = store.subscribe_all(Position::START);
    for w in writers {
        w.await.unwrap_or_else(|e| panic!("writer panicked: {e}"));
    }
    let committed: HashSet<EventId> = committed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .copied()
        .collect();
    assert!(
        committed.len() > WRITERS * TRANSACTIONS_PER_WRITER / 2,
        "too few commits to mean anything"
    );

    let (early, late) = tokio::join!(
        collect(early, committed.len()),
        collect(late, committed.len())
    );
    for (name, seen) in [("early", &early), ("late", &late)] {
        let ids: Vec<EventId> = seen.iter().map(|e| e.id).collect();
        let unique: HashSet<EventId> = ids.iter().copied().collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "{name} subscriber saw an event twice"
        );
        assert_eq!(
            unique, committed,
            "{name} subscriber did not see exactly the committed events"
        );
        assert!(
            seen.windows(2).all(|w| w[0].position < w[1].position),
            "{name} subscriber saw positions out of order"
        );
    }
    let early_ids: Vec<EventId> = early.iter().map(|e| e.id).collect();
    let late_ids: Vec<EventId> = late.iter().map(|e| e.id).collect();
    assert_eq!(early_ids, late_ids, "two subscribers saw different orders");

    // A plain read of the log, and a subscriber resuming from a checkpoint in
    // the middle, agree with them.
    let mut read = Vec::new();
    let mut after = Position::START;
    loop {
        let page = store
            .read_all(after, 97)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let Some(last) = page.last() else { break };
        after = last.position;
        read.extend(page.into_iter().map(|e| e.id));
    }
    assert_eq!(read, early_ids);
    let middle = early.len() / 2;
    let resumed = collect(
        store.subscribe_all(early[middle].position),
        early.len() - middle - 1,
    )
    .await;
    assert_eq!(
        resumed.iter().map(|e| e.id).collect::<Vec<_>>(),
        early_ids[middle + 1..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_committed_late_is_delivered_after_the_later_numbered_one() {
    let db = test_db().await;
    let store = PgEventStore::new(db.pool.clone());
    let stream_a = StreamId::new("late-a").unwrap_or_else(|e| panic!("{e}"));
    let stream_b = StreamId::new("late-b").unwrap_or_else(|e| panic!("{e}"));
    let mut sub = store.subscribe_all(Position::START);

    // A takes the lower sequence number but commits last.
    let slow = new_event(0, 0);
    let fast = new_event(1, 0);
    let mut tx = store.pool().begin().await.unwrap_or_else(|e| panic!("{e}"));
    let a = PgEventStore::append_with(
        &mut tx,
        &stream_a,
        ExpectedVersion::Any,
        std::slice::from_ref(&slow),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let b = store
        .append(&stream_b, ExpectedVersion::Any, vec![fast.clone()])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(a.events[0].position.minor() < b.events[0].position.minor());

    // B is committed but must not be delivered while A could still commit
    // before it in log order.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sub.next())
            .await
            .is_err()
    );
    tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
    store.appended();
    let first = tokio::time::timeout(Duration::from_secs(5), sub.next()).await;
    let second = tokio::time::timeout(Duration::from_secs(5), sub.next()).await;
    let id = |r: Result<Option<Result<RecordedEvent, _>>, _>| match r {
        Ok(Some(Ok(e))) => e.id,
        other => panic!("expected an event, got {other:?}"),
    };
    assert_eq!(id(first), slow.id);
    assert_eq!(id(second), fast.id);
}

/// Appends race on a few streams without any lock: in log order, each
/// stream's versions still run 1, 2, 3, … (a writer that saw a version
/// committed took its transaction id after that version's writer did).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_appends_keep_each_stream_in_log_order() {
    const STREAMS: usize = 3;
    let db = test_db().await;
    let store = PgEventStore::new(db.pool.clone());
    let writers: Vec<_> = (0..12)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0..30 {
                    let stream = StreamId::new(format!("race-{}", (w + n) % STREAMS))
                        .unwrap_or_else(|e| panic!("{e}"));
                    let events = (0..1 + n % 3).map(|k| new_event(w, n * 3 + k)).collect();
                    store
                        .append(&stream, ExpectedVersion::Any, events)
                        .await
                        .unwrap_or_else(|e| panic!("append failed: {e:?}"));
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap_or_else(|e| panic!("writer panicked: {e}"));
    }

    // Through a subscription: transactions of other tests in the cluster may
    // hold the readable horizon back for a moment.
    let log = collect(store.subscribe_all(Position::START), 12 * 10 * (1 + 2 + 3)).await;
    let mut next = std::collections::HashMap::new();
    for event in &log {
        let expected = next.entry(event.stream_id.as_str().to_owned()).or_insert(1);
        assert_eq!(
            event.stream_version, *expected,
            "{} out of order in the log",
            event.stream_id
        );
        *expected += 1;
    }
}
