//! The event store contract, run against a KurrentDB server: the one named
//! by `KURRENTDB_URL` (e.g. `kurrentdb://127.0.0.1:2113?tls=false`). Each
//! check works in streams of its own, so the server may be shared and
//! need not be empty. Without `KURRENTDB_URL` every test says it skipped.
//!
//! Run with `cargo test -p chorus-tests --features kurrentdb --test kurrent_event_store_contract`.

use chorus_kurrent::KurrentEventStore;

/// The store on `KURRENTDB_URL`, or `None` (after saying so) without one.
async fn store() -> Option<KurrentEventStore> {
    let Some(url) = std::env::var("KURRENTDB_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!(
            "skipped: KURRENTDB_URL is not set (set it to a KurrentDB server, \
             e.g. kurrentdb://127.0.0.1:2113?tls=false, to run the contract against it)"
        );
        return None;
    };
    Some(KurrentEventStore::connect(&url).unwrap_or_else(|e| panic!("KURRENTDB_URL: {e}")))
}

chorus_tests::event_store_contract!(skip_unless store());
