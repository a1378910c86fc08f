//! Leases and progress across processes, on a real database: two holders
//! (as two processes would be) want the same leases; one runs each, and
//! the other takes over once the first is gone. Progress announced by one
//! board is heard by another at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chorus_domain::Position;
use chorus_postgres::checkpoints::Progress;
use chorus_postgres::leases::holders;
use chorus_postgres::{Board, LeaseOptions, LeaseSet};
use chorus_tests::pg::test_db;

const FAST: LeaseOptions = LeaseOptions {
    retry: Duration::from_millis(100),
};

/// Counts how many of what a lease guards run at once.
#[derive(Clone, Default)]
struct Running(Arc<AtomicUsize>);

struct Guard(Running);

impl Drop for Guard {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn wanting(names: &[&'static str], running: &Running) -> LeaseSet {
    let mut leases = LeaseSet::default();
    for name in names {
        let running = running.clone();
        leases.add(*name, move || {
            let running = running.clone();
            async move {
                running.0.fetch_add(1, Ordering::SeqCst);
                Ok(Guard(running))
            }
        });
    }
    leases
}

#[tokio::test]
async fn each_lease_is_held_once_and_taken_over_when_its_holder_goes() {
    let pool = test_db().await.pool;
    let names = ["a", "b", "c"];
    let (first, second) = (Running::default(), Running::default());
    let one = wanting(&names, &first).keep(&pool, "holder one", FAST);
    assert!(
        one.wait_until(Duration::from_secs(10), |held| held.len() == 3)
            .await,
        "the first holder never took its leases"
    );
    let two = wanting(&names, &second).keep(&pool, "holder two", FAST);
    // The second tries for a while and wins nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(two.held().is_empty(), "{:?}", two.held());
    assert_eq!(first.0.load(Ordering::SeqCst), 3);
    assert_eq!(second.0.load(Ordering::SeqCst), 0);
    let held: Vec<_> = holders(&pool, &names.map(str::to_owned))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|(name, holder)| (name, holder.map(|(app, _)| app)))
        .collect();
    assert_eq!(
        held,
        names.map(|n| (n.to_owned(), Some("holder one".to_owned())))
    );

    // The first goes (as a killed process's session ends): what it ran
    // stops, and the second takes every lease over.
    drop(one);
    assert!(
        two.wait_until(Duration::from_secs(10), |held| held.len() == 3)
            .await,
        "the leases were not taken over"
    );
    assert_eq!(first.0.load(Ordering::SeqCst), 0);
    assert_eq!(second.0.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_holder_whose_session_is_killed_stops_and_takes_its_leases_again() {
    let pool = test_db().await.pool;
    let running = Running::default();
    let leases = wanting(&["only"], &running).keep(&pool, "holder killed", FAST);
    assert!(
        leases
            .wait_until(Duration::from_secs(10), |held| held.len() == 1)
            .await
    );
    // An operator (or a failover) ends the session holding the lease.
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'holder killed'",
    )
    .fetch_all(&pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ended, [true]);
    assert!(
        leases
            .wait_until(Duration::from_secs(10), |held| held.is_empty())
            .await,
        "the holder did not notice it lost its session"
    );
    assert!(
        leases
            .wait_until(Duration::from_secs(10), |held| held.len() == 1)
            .await,
        "the holder did not take its lease again"
    );
    // What ran under the lost lease stopped before it started again.
    assert_eq!(running.0.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn progress_announced_by_one_board_is_heard_by_another() {
    let pool = test_db().await.pool;
    let here = Board::start(pool.clone(), &["subscriber"])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let there = Board::start(pool.clone(), &["subscriber"])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (moves, progress) = Progress::starting_at(Position::START);
    let _attached = here.attach("subscriber", progress);
    // Nothing is stored: only the announcement can carry it.
    let target = Position::new(42, 7);
    moves.send_replace(target);
    assert!(
        there
            .reached(&["subscriber"], target, Duration::from_secs(5))
            .await,
        "the other board never heard of {target}"
    );
    assert!(
        here.reached(&["subscriber"], target, Duration::from_millis(10))
            .await
    );
    assert!(
        !there
            .reached(
                &["subscriber"],
                Position::new(43, 0),
                Duration::from_millis(300)
            )
            .await
    );
}
