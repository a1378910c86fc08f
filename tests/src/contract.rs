//! The contract every [`EventStore`] implementation must pass.
//!
//! Each check takes a store and works in streams of its own (unique names),
//! so the suite can also run against a shared server such as a KurrentDB node.
//! [`event_store_contract!`](crate::event_store_contract) turns the suite into
//! one test per check for a given store constructor.

use std::collections::HashSet;
use std::time::Duration;

use chorus_domain::{
    EventId, EventStore, EventStoreError, ExpectedVersion, Metadata, NewEvent, Position,
    RecordedEvent, StreamId,
};
use futures::StreamExt;
use serde_json::json;

/// Generates one `#[tokio::test]` per contract check; `$store` is an async
/// expression producing a fresh store. With `skip_unless`, it produces an
/// `Option` of a store instead, and `None` (no server to test against: the
/// expression says why) passes every check without running it.
#[macro_export]
macro_rules! event_store_contract {
    (@tests $mode:ident $store:expr) => {
        $crate::event_store_contract!(@each $mode $store;
            appended_events_read_back_exactly,
            expected_version_is_enforced_and_conflicts_write_nothing,
            appending_the_same_ids_again_is_a_no_op_returning_the_original_positions,
            a_partially_duplicate_batch_is_refused_whole,
            invalid_appends_are_refused,
            read_stream_pages_by_version,
            read_all_pages_through_the_log_in_one_order,
            a_batch_is_contiguous_in_the_log,
            concurrent_writers_of_one_stream_cannot_both_win,
            subscriptions_catch_up_then_follow_live_appends,
            subscriptions_resume_strictly_after_a_checkpoint,
        );
    };
    (@each required $store:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store = $store.await;
                $crate::contract::$name(&store).await;
            }
        )*
    };
    (@each optional $store:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(store) = $store.await {
                    $crate::contract::$name(&store).await;
                }
            }
        )*
    };
    (skip_unless $store:expr) => {
        $crate::event_store_contract!(@tests optional $store);
    };
    ($store:expr) => {
        $crate::event_store_contract!(@tests required $store);
    };
}

const WAIT: Duration = Duration::from_secs(10);

fn unique_stream(name: &str) -> StreamId {
    StreamId::new(format!("contract-{name}-{}", uuid::Uuid::new_v4().simple()))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn event(event_type: &str, n: u64) -> NewEvent {
    NewEvent::new(
        event_type,
        1,
        &json!({ "n": n, "text": format!("event {n}") }),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn events(n: u64) -> Vec<NewEvent> {
    (1..=n).map(|i| event("Tested", i)).collect()
}

async fn ok<T>(result: Result<T, EventStoreError>) -> T {
    result.unwrap_or_else(|e| panic!("unexpected event store error: {e:?}"))
}

/// All events of the given streams in the whole log up to `through`, paging
/// `page` at a time. Events behind a transaction still running elsewhere are
/// not readable yet, so an early end is waited out, never taken as the end.
async fn read_all_of<S: EventStore>(
    store: &S,
    streams: &[&StreamId],
    page: usize,
    through: Position,
) -> Vec<RecordedEvent> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut after = Position::START;
    let mut out = Vec::new();
    while after < through {
        let batch = ok(store.read_all(after, page).await).await;
        let Some(last) = batch.last() else {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{through} never became readable"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        assert!(last.position > after, "read_all went backwards");
        after = last.position;
        out.extend(
            batch
                .into_iter()
                .filter(|e| streams.contains(&&e.stream_id)),
        );
    }
    out
}

fn last(outcome: &chorus_domain::AppendOutcome) -> Position {
    outcome
        .last_position()
        .unwrap_or_else(|| panic!("an append without events"))
}

pub async fn appended_events_read_back_exactly<S: EventStore>(store: &S) {
    let stream = unique_stream("roundtrip");
    let metadata = Metadata {
        actor: Some("https://example.test/users/alice".into()),
        remote_host: Some("remote.test".into()),
        correlation_id: Some(uuid::Uuid::new_v4()),
        ..Metadata::default()
    };
    let first = event("FirstHappened", 1).with_metadata(metadata.clone());
    let mut second = event("SecondHappened", 2);
    second.schema_version = 3;
    let ids = [first.id, second.id];
    let outcome = ok(store
        .append(&stream, ExpectedVersion::NoStream, vec![first, second])
        .await)
    .await;
    assert!(!outcome.deduplicated);
    assert_eq!(outcome.events.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    assert_eq!(
        outcome
            .events
            .iter()
            .map(|e| e.stream_version)
            .collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(outcome.events[0].position < outcome.events[1].position);
    assert_eq!(ok(store.stream_version(&stream).await).await, Some(2));

    let read = ok(store.read_stream(&stream, 1, 10).await).await;
    assert_eq!(read.len(), 2);
    assert_eq!(read[0].id, ids[0]);
    assert_eq!(read[0].event_type, "FirstHappened");
    assert_eq!(read[0].schema_version, 1);
    assert_eq!(read[0].stream_id, stream);
    assert_eq!(read[0].stream_version, 1);
    assert_eq!(read[0].metadata, metadata);
    assert_eq!(read[0].position, outcome.events[0].position);
    let payload: serde_json::Value = read[0].decode().unwrap_or_default();
    assert_eq!(payload, json!({ "n": 1, "text": "event 1" }));
    assert_eq!(read[1].event_type, "SecondHappened");
    assert_eq!(read[1].schema_version, 3);
    assert_eq!(read[1].stream_version, 2);

    let all = read_all_of(store, &[&stream], 100, last(&outcome)).await;
    assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), ids);

    let missing = unique_stream("missing");
    assert_eq!(ok(store.stream_version(&missing).await).await, None);
    assert!(
        ok(store.read_stream(&missing, 1, 10).await)
            .await
            .is_empty()
    );
}

pub async fn expected_version_is_enforced_and_conflicts_write_nothing<S: EventStore>(store: &S) {
    let stream = unique_stream("versions");
    let conflict = |r: Result<_, EventStoreError>, on: &StreamId, want: Option<u64>| match r {
        Err(EventStoreError::WrongExpectedVersion {
            actual, stream: s, ..
        }) => {
            assert_eq!(actual, want);
            assert_eq!(&s, on);
        }
        other => panic!("expected a version conflict, got {other:?}"),
    };

    conflict(
        store
            .append(&stream, ExpectedVersion::StreamExists, events(1))
            .await,
        &stream,
        None,
    );
    conflict(
        store
            .append(&stream, ExpectedVersion::Exact(3), events(1))
            .await,
        &stream,
        None,
    );
    ok(store
        .append(&stream, ExpectedVersion::NoStream, events(2))
        .await)
    .await;
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(0),
        ExpectedVersion::Exact(1),
        ExpectedVersion::Exact(5),
    ] {
        conflict(
            store.append(&stream, expected, events(1)).await,
            &stream,
            Some(2),
        );
    }
    let o = ok(store
        .append(&stream, ExpectedVersion::Exact(2), events(3))
        .await)
    .await;
    assert_eq!(o.stream_version(), Some(5));
    let o = ok(store
        .append(&stream, ExpectedVersion::StreamExists, events(1))
        .await)
    .await;
    assert_eq!(o.stream_version(), Some(6));
    let o = ok(store.append(&stream, ExpectedVersion::Any, events(1)).await).await;
    assert_eq!(o.stream_version(), Some(7));

    let fresh = unique_stream("any");
    let o = ok(store.append(&fresh, ExpectedVersion::Any, events(2)).await).await;
    assert_eq!(o.stream_version(), Some(2));
    conflict(
        store
            .append(&fresh, ExpectedVersion::Exact(0), events(1))
            .await,
        &fresh,
        Some(2),
    );

    // Conflicts wrote nothing.
    let read = ok(store.read_stream(&stream, 1, 100).await).await;
    assert_eq!(read.len(), 7);
    assert_eq!(
        read.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
}

pub async fn appending_the_same_ids_again_is_a_no_op_returning_the_original_positions<
    S: EventStore,
>(
    store: &S,
) {
    let stream = unique_stream("idempotent");
    let batch = events(3);
    let first = ok(store
        .append(&stream, ExpectedVersion::NoStream, batch.clone())
        .await)
    .await;
    assert!(!first.deduplicated);
    let fourth = ok(store
        .append(&stream, ExpectedVersion::Exact(3), events(1))
        .await)
    .await;

    // A retry of the original batch, even with its now stale expectation.
    let again = ok(store
        .append(&stream, ExpectedVersion::NoStream, batch.clone())
        .await)
    .await;
    assert!(again.deduplicated);
    assert_eq!(again.events, first.events);
    let single = ok(store
        .append(&stream, ExpectedVersion::Any, vec![batch[1].clone()])
        .await)
    .await;
    assert!(single.deduplicated);
    assert_eq!(single.events, vec![first.events[1]]);

    assert_eq!(ok(store.stream_version(&stream).await).await, Some(4));
    assert_eq!(
        read_all_of(store, &[&stream], 1000, last(&fourth))
            .await
            .len(),
        4
    );
}

pub async fn a_partially_duplicate_batch_is_refused_whole<S: EventStore>(store: &S) {
    let stream = unique_stream("partial");
    let batch = events(2);
    ok(store
        .append(&stream, ExpectedVersion::Any, batch.clone())
        .await)
    .await;
    let mixed = vec![batch[0].clone(), event("Tested", 9)];
    match store.append(&stream, ExpectedVersion::Any, mixed).await {
        Err(EventStoreError::PartialDuplicate {
            existing: 1,
            total: 2,
        }) => {}
        other => panic!("expected a partial duplicate refusal, got {other:?}"),
    }
    assert_eq!(ok(store.stream_version(&stream).await).await, Some(2));
}

pub async fn invalid_appends_are_refused<S: EventStore>(store: &S) {
    let stream = unique_stream("invalid");
    let invalid = |r: Result<_, EventStoreError>| {
        assert!(
            matches!(r, Err(EventStoreError::InvalidAppend(_))),
            "expected InvalidAppend, got {r:?}"
        )
    };
    invalid(store.append(&stream, ExpectedVersion::Any, vec![]).await);
    let e = event("Tested", 1);
    invalid(
        store
            .append(&stream, ExpectedVersion::Any, vec![e.clone(), e])
            .await,
    );
    invalid(
        store
            .append(&stream, ExpectedVersion::Any, vec![event("", 1)])
            .await,
    );
    let mut v0 = event("Tested", 1);
    v0.schema_version = 0;
    invalid(store.append(&stream, ExpectedVersion::Any, vec![v0]).await);
    assert_eq!(ok(store.stream_version(&stream).await).await, None);
}

pub async fn read_stream_pages_by_version<S: EventStore>(store: &S) {
    let stream = unique_stream("pages");
    ok(store
        .append(&stream, ExpectedVersion::NoStream, events(10))
        .await)
    .await;
    let page = ok(store.read_stream(&stream, 4, 3).await).await;
    assert_eq!(
        page.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        [4, 5, 6]
    );
    let tail = ok(store.read_stream(&stream, 9, 100).await).await;
    assert_eq!(
        tail.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        [9, 10]
    );
    assert!(
        ok(store.read_stream(&stream, 11, 100).await)
            .await
            .is_empty()
    );
}

pub async fn read_all_pages_through_the_log_in_one_order<S: EventStore>(store: &S) {
    let a = unique_stream("all-a");
    let b = unique_stream("all-b");
    let mut expected = Vec::new();
    let mut through = Position::START;
    for round in 0..5 {
        for stream in [&a, &b] {
            let batch = events(round + 1);
            expected.extend(batch.iter().map(|e| e.id));
            through = last(&ok(store.append(stream, ExpectedVersion::Any, batch).await).await);
        }
    }
    for page in [1, 4, 7, 1000] {
        let all = read_all_of(store, &[&a, &b], page, through).await;
        assert_eq!(
            all.iter().map(|e| e.id).collect::<Vec<_>>(),
            expected,
            "page size {page}"
        );
        assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    }
    // Reading after the last event gives nothing (for our streams).
    let after: Vec<_> = ok(store.read_all(through, 1000).await)
        .await
        .into_iter()
        .filter(|e| e.stream_id == a || e.stream_id == b)
        .collect();
    assert!(after.is_empty());
}

pub async fn a_batch_is_contiguous_in_the_log<S: EventStore>(store: &S) {
    // A position before the batch that every store hands out (a made-up
    // one, such as the batch's minus one, is not a place in every log).
    let marker = ok(store
        .append(
            &unique_stream("before-batch"),
            ExpectedVersion::NoStream,
            events(1),
        )
        .await)
    .await;
    let stream = unique_stream("batch");
    let outcome = ok(store
        .append(&stream, ExpectedVersion::NoStream, events(100))
        .await)
    .await;
    // Once the batch is readable, nothing can appear in its midst. Other
    // writers' events may stand between the marker and the batch.
    read_all_of(store, &[&stream], 1000, last(&outcome)).await;
    let mut read = Vec::new();
    let mut after = last(&marker);
    while after < last(&outcome) {
        let page = ok(store.read_all(after, 1000).await).await;
        let Some(end) = page.last().map(|e| e.position) else {
            panic!("the log ends before the batch it returned");
        };
        after = end;
        read.extend(page.into_iter().map(|e| e.id));
    }
    let batch: Vec<EventId> = outcome.events.iter().map(|e| e.id).collect();
    let start = read
        .iter()
        .position(|id| *id == batch[0])
        .unwrap_or_else(|| panic!("the batch is not after the marker"));
    assert_eq!(read.get(start..start + batch.len()), Some(&batch[..]));
}

pub async fn concurrent_writers_of_one_stream_cannot_both_win<S: EventStore>(store: &S) {
    let stream = unique_stream("race");
    ok(store
        .append(&stream, ExpectedVersion::NoStream, events(1))
        .await)
    .await;
    for round in 1..=10u64 {
        let (x, y) = tokio::join!(
            store.append(&stream, ExpectedVersion::Exact(round), events(1)),
            store.append(&stream, ExpectedVersion::Exact(round), events(1)),
        );
        let wins = [&x, &y].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {x:?} / {y:?}");
        for r in [x, y] {
            if let Err(e) = r {
                assert!(
                    matches!(e, EventStoreError::WrongExpectedVersion { actual: Some(v), .. } if v == round + 1)
                );
            }
        }
    }
    assert_eq!(ok(store.stream_version(&stream).await).await, Some(11));
}

async fn next_of(sub: &mut chorus_domain::EventStream, streams: &[&StreamId]) -> RecordedEvent {
    loop {
        let event = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap_or_else(|_| panic!("no event within {WAIT:?}"))
            .unwrap_or_else(|| panic!("subscription ended"))
            .unwrap_or_else(|e| panic!("subscription failed: {e}"));
        if streams.contains(&&event.stream_id) {
            return event;
        }
    }
}

pub async fn subscriptions_catch_up_then_follow_live_appends<S: EventStore>(store: &S) {
    let stream = unique_stream("live");
    let stored = events(5);
    let mut expected: Vec<EventId> = stored.iter().map(|e| e.id).collect();
    ok(store
        .append(&stream, ExpectedVersion::NoStream, stored)
        .await)
    .await;

    let mut sub = store.subscribe_all(Position::START);
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(next_of(&mut sub, &[&stream]).await);
    }
    for round in 0..3 {
        let live = events(round + 1);
        expected.extend(live.iter().map(|e| e.id));
        ok(store.append(&stream, ExpectedVersion::Any, live).await).await;
        for _ in 0..=round {
            seen.push(next_of(&mut sub, &[&stream]).await);
        }
    }
    assert_eq!(seen.iter().map(|e| e.id).collect::<Vec<_>>(), expected);
    assert!(seen.windows(2).all(|w| w[0].position < w[1].position));
    let unique: HashSet<_> = seen.iter().map(|e| e.id).collect();
    assert_eq!(unique.len(), seen.len());
}

pub async fn subscriptions_resume_strictly_after_a_checkpoint<S: EventStore>(store: &S) {
    let stream = unique_stream("resume");
    let outcome = ok(store
        .append(&stream, ExpectedVersion::NoStream, events(6))
        .await)
    .await;
    let checkpoint = outcome.events[2].position;
    let mut sub = store.subscribe_all(checkpoint);
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_of(&mut sub, &[&stream]).await.id);
    }
    assert_eq!(
        seen,
        outcome.events[3..].iter().map(|e| e.id).collect::<Vec<_>>()
    );
}
