//! Where reads go: a read replica (a streaming standby of the database)
//! while it is fresh enough, else the primary.
//!
//! A monitor samples the primary's WAL insert position every
//! [`SAMPLE_EVERY`], keeping a short ring of (time, position), and asks the
//! replica how far it has replayed. The replica's staleness is how long ago
//! the newest sample it has replayed past was taken: everything the primary
//! showed at that moment, the replica shows now. An idle primary does not
//! make the replica look stale (its position stops moving, and the replica
//! reaches it), unlike `now() - pg_last_xact_replay_timestamp()`.
//!
//! Architecture Invariant: [`ReadPool::pool`] returns the replica only
//! while its staleness is within the bound, measured at the moment of the
//! call; when the replica is unreachable, is no standby, or falls behind,
//! reads go to the primary.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::PgPool;

/// How often the monitor samples the primary and the replica.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// How long one sample may take before it counts as failed.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);

/// The pool reads go to: the primary, or a replica while it is fresh
/// enough. Cheap to clone; the monitor stops with the last clone.
#[derive(Clone, Debug)]
pub struct ReadPool {
    primary: PgPool,
    replica: Option<Arc<Replica>>,
}

#[derive(Debug)]
struct Replica {
    pool: PgPool,
    max_lag: Duration,
    state: Arc<Mutex<State>>,
    monitor: tokio::task::JoinHandle<()>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.monitor.abort();
    }
}

/// What the monitor last found.
#[derive(Debug, Default)]
struct State {
    /// Everything the primary showed at this moment, the replica shows:
    /// the time of the newest sample it has replayed past. `None` until it
    /// has replayed past one, or while it cannot be asked.
    fresh_as_of: Option<Instant>,
    /// When the replica is behind every sample still kept: the oldest
    /// one's time, so that its staleness is at least `now - behind_since`.
    behind_since: Option<Instant>,
    /// Whether reads go to the replica (within the bound, reachable, a
    /// standby). Entering takes a staleness of 3/4 of the bound, so that a
    /// replica lagging right at the bound does not switch at every sample.
    usable: bool,
}

impl State {
    fn staleness(&self, now: Instant) -> Option<Duration> {
        self.fresh_as_of
            .or(self.behind_since)
            .map(|t| now.saturating_duration_since(t))
    }
}

impl ReadPool {
    /// Every read goes to `primary`.
    pub fn primary(primary: PgPool) -> Self {
        Self {
            primary,
            replica: None,
        }
    }

    /// Reads go to `replica` while it lags `primary` by at most `max_lag`;
    /// starts the monitor (on the current Tokio runtime). Until its first
    /// samples, reads go to the primary.
    pub fn with_replica(primary: PgPool, replica: PgPool, max_lag: Duration) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let monitor = tokio::spawn(monitor(
            primary.clone(),
            replica.clone(),
            max_lag,
            state.clone(),
        ));
        Self {
            primary,
            replica: Some(Arc::new(Replica {
                pool: replica,
                max_lag,
                state,
                monitor,
            })),
        }
    }

    /// The pool to read from now: the replica if it is usable and its
    /// staleness, as of this call, is within the bound; else the primary.
    pub fn pool(&self) -> &PgPool {
        match &self.replica {
            Some(replica) if replica.in_use() => &replica.pool,
            _ => &self.primary,
        }
    }

    /// Whether a replica is configured.
    pub fn has_replica(&self) -> bool {
        self.replica.is_some()
    }

    /// Whether reads go to the replica now.
    pub fn replica_in_use(&self) -> bool {
        self.replica.as_ref().is_some_and(|r| r.in_use())
    }

    /// How far the replica is behind the primary now (at least this much
    /// when it is behind every sample kept); `None` without a replica, or
    /// before the monitor knows.
    pub fn staleness(&self) -> Option<Duration> {
        let replica = self.replica.as_ref()?;
        lock(&replica.state).staleness(Instant::now())
    }

    /// The largest staleness at which reads go to the replica.
    pub fn max_lag(&self) -> Option<Duration> {
        self.replica.as_ref().map(|r| r.max_lag)
    }

    /// Closes the replica's pool (the primary's belongs to its owner).
    pub async fn close(&self) {
        if let Some(replica) = &self.replica {
            replica.monitor.abort();
            replica.pool.close().await;
        }
    }
}

impl Replica {
    fn in_use(&self) -> bool {
        let state = lock(&self.state);
        state.usable
            && state
                .fresh_as_of
                .is_some_and(|t| t.elapsed() <= self.max_lag)
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // The state is a few plain fields, each written whole: a panicking
    // writer cannot leave it half-updated.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why the replica cannot be read from, as the monitor found.
#[derive(Debug)]
enum Unusable {
    Unreachable(String),
    NotAStandby,
}

/// WAL positions, as bytes from the start of the log.
type Lsn = i64;

/// The WAL page size (`wal_block_size`), used when the primary cannot say.
const DEFAULT_BLOCK: i64 = 8192;
/// The largest WAL page header (`SizeOfXLogLongPHD`).
const LONG_PAGE_HEADER: i64 = 40;

/// Whether a replica that has replayed up to `replay` has replayed
/// everything inserted on the primary before its insert position was
/// `sampled`. The insert position after a record that ends exactly at a
/// page boundary is past the next page's header, while replay stops at
/// the boundary: nothing lies between them.
fn replayed_past(replay: Lsn, sampled: Lsn, block: i64) -> bool {
    replay >= sampled || (replay % block == 0 && sampled - replay <= LONG_PAGE_HEADER)
}

async fn monitor(primary: PgPool, replica: PgPool, max_lag: Duration, state: Arc<Mutex<State>>) {
    // Long enough to tell any staleness up to twice the bound.
    let window = max_lag * 2 + Duration::from_secs(10);
    let keep = usize::try_from(window.as_millis() / SAMPLE_EVERY.as_millis()).unwrap_or(usize::MAX);
    let mut ring: VecDeque<(Instant, Lsn)> = VecDeque::new();
    let mut block = None;
    let mut primary_failing = false;
    let mut last_problem = None;
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // The time is taken before asking: everything visible on the
        // primary by then was inserted before the position it answers.
        let taken = Instant::now();
        match sample(
            &primary,
            "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8",
        )
        .await
        {
            Ok(Some(lsn)) => {
                ring.push_back((taken, lsn));
                if primary_failing {
                    tracing::info!("read replica monitor: the primary answers again");
                    primary_failing = false;
                }
            }
            Ok(None) => {}
            Err(error) => {
                if !primary_failing {
                    tracing::warn!(%error, "read replica monitor: cannot sample the primary's WAL position");
                    primary_failing = true;
                }
            }
        }
        while ring.len() > keep.max(1)
            || (ring.len() > 1 && ring.front().is_some_and(|(t, _)| t.elapsed() > window))
        {
            ring.pop_front();
        }
        if block.is_none() {
            block = sample(&primary, "SELECT current_setting('wal_block_size')::int8")
                .await
                .ok()
                .flatten();
        }
        let block = block.unwrap_or(DEFAULT_BLOCK);

        let replay = sample(
            &replica,
            "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8",
        )
        .await
        .map_err(|e| Unusable::Unreachable(e.to_string()))
        .and_then(|lsn| lsn.ok_or(Unusable::NotAStandby));
        let now = Instant::now();
        let mut state = lock(&state);
        match &replay {
            Ok(replay) => {
                state.fresh_as_of = ring
                    .iter()
                    .rev()
                    .find(|(_, lsn)| replayed_past(*replay, *lsn, block))
                    .map(|(t, _)| *t);
                state.behind_since = match state.fresh_as_of {
                    Some(_) => None,
                    None => ring.front().map(|(t, _)| *t),
                };
            }
            Err(_) => {
                state.fresh_as_of = None;
                state.behind_since = None;
            }
        }
        let staleness = state.staleness(now);
        let entry = if state.usable {
            max_lag
        } else {
            max_lag * 3 / 4
        };
        let usable = replay.is_ok()
            && state
                .fresh_as_of
                .is_some_and(|t| now.saturating_duration_since(t) <= entry);
        let was = std::mem::replace(&mut state.usable, usable);
        drop(state);

        let problem = replay.err();
        let kind = problem.as_ref().map(std::mem::discriminant);
        if usable && !was {
            tracing::info!(
                staleness_ms = staleness.map(|s| s.as_millis()),
                max_lag_ms = max_lag.as_millis(),
                "reads go to the read replica"
            );
        } else if !usable && (was || kind != last_problem) {
            match &problem {
                Some(Unusable::Unreachable(error)) => tracing::warn!(
                    %error,
                    "the read replica cannot be reached: reads go to the primary"
                ),
                Some(Unusable::NotAStandby) => tracing::warn!(
                    "the read replica is not a standby (it replays no WAL): reads go to the primary"
                ),
                None if was => tracing::warn!(
                    staleness_ms = staleness.map(|s| s.as_millis()),
                    max_lag_ms = max_lag.as_millis(),
                    "the read replica lags beyond the bound: reads go to the primary"
                ),
                None => {}
            }
        }
        last_problem = kind;
    }
}

/// One number from `pool`, within [`SAMPLE_TIMEOUT`].
async fn sample(pool: &PgPool, sql: &str) -> Result<Option<i64>, sqlx::Error> {
    match tokio::time::timeout(SAMPLE_TIMEOUT, sqlx::query_scalar(sql).fetch_one(pool)).await {
        Ok(result) => result,
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_has_replayed_past_what_it_has_reached() {
        let check = |replay, sampled, expected| {
            assert_eq!(
                replayed_past(replay, sampled, 8192),
                expected,
                "replay {replay}, sampled {sampled}"
            );
        };
        check(1000, 1000, true);
        check(1001, 1000, true);
        check(999, 1000, false);
        // A record ending at a page boundary: the insert position is past
        // the next page's header (short, or long at a segment's start).
        check(8192, 8192 + 24, true);
        check(16 << 20, (16 << 20) + 40, true);
        check(8192, 8192 + 48, false);
        check(8000, 8000 + 24, false);
    }

    #[test]
    fn staleness_counts_from_the_newest_sample_replayed_past() {
        let now = Instant::now();
        let at = |ms| now.checked_sub(Duration::from_millis(ms));
        let state = State {
            fresh_as_of: at(300),
            behind_since: None,
            usable: true,
        };
        assert!(
            state
                .staleness(now)
                .is_some_and(|s| s == Duration::from_millis(300))
        );
        let behind = State {
            fresh_as_of: None,
            behind_since: at(5000),
            usable: false,
        };
        assert!(
            behind
                .staleness(now)
                .is_some_and(|s| s == Duration::from_millis(5000))
        );
        assert_eq!(State::default().staleness(now), None);
    }
}
