//! A Postgres event store in upstream mode: its log of record another
//! Postgres database (as `CHORUS_EVENT_STORE=postgres://…` makes
//! `chorus serve` run), with the mirror running.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chorus_domain::{
    AppendOutcome, EventStore, EventStoreError, EventStream, ExpectedVersion, NewEvent, Position,
    RecordedEvent, StreamId,
};
use chorus_postgres::{Mirror, PgEventStore};

use crate::pg::{TestDb, test_db};

/// A store in upstream mode and what it runs on.
#[derive(Debug)]
pub struct Mirrored {
    /// The store the server appends through (upstream mode).
    pub store: PgEventStore,
    /// The log of record, a store on a database of its own.
    pub upstream: PgEventStore,
    pub upstream_db: TestDb,
    pub mirror: Mirror,
}

impl Mirrored {
    /// Waits until the mirror has copied the upstream up to its last event.
    pub async fn caught_up(&self) {
        let last = crate::app::last_committed(&self.upstream_db.pool).await;
        assert!(
            self.mirror.reached(last, Duration::from_secs(10)).await,
            "the mirror did not copy the upstream up to {last}"
        );
    }
}

/// A fresh upstream database, and a store on `local` that mirrors it.
pub async fn mirrored_on(local: &TestDb) -> Mirrored {
    let upstream_db = test_db().await;
    let upstream = PgEventStore::new(upstream_db.pool.clone());
    let store = PgEventStore::with_upstream(local.pool.clone(), Arc::new(upstream.clone()));
    let mirror = Mirror::start(&store)
        .await
        .unwrap_or_else(|e| panic!("cannot start the mirror: {e}"));
    Mirrored {
        store,
        upstream,
        upstream_db,
        mirror,
    }
}

/// A store in upstream mode on fresh databases.
pub async fn mirrored() -> Mirrored {
    mirrored_on(&test_db().await).await
}

#[async_trait]
impl EventStore for Mirrored {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, EventStoreError> {
        self.store.append(stream, expected, events).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        self.store.read_stream(stream, from, limit).await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<u64>, EventStoreError> {
        self.store.stream_version(stream).await
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        self.store.read_all(after, limit).await
    }

    fn subscribe_all(&self, after: Position) -> EventStream {
        self.store.subscribe_all(after)
    }
}
