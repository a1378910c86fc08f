//! The event store contract, run against the Postgres store.

use chorus_postgres::PgEventStore;
use chorus_tests::pg::test_db;

chorus_tests::event_store_contract!(async { PgEventStore::new(test_db().await.pool) });
