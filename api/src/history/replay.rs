//! Replaying the log for one subscriber: its checkpoint moved back to a
//! position or a time, so that it sees the events after it again. Every
//! subscriber is idempotent by design (projections upsert, the delivery
//! planner's jobs are keyed by event and inbox, the interpreter's events
//! have derived ids), so a replay re-derives state without re-sending.

use chorus_domain::admin::SubscriberReplayed;
use chorus_domain::{DomainEvent, Position};
use chorus_postgres::{PgEventStore, checkpoints};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// Where to move a subscriber.
#[derive(Clone, Copy, Debug)]
pub enum ReplayFrom {
    /// It sees the events after this position.
    Position(Position),
    /// It sees the events recorded at or after this time.
    Time(DateTime<Utc>),
}

/// Why a replay was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no subscriber is called `{0}`")]
    UnknownSubscriber(String),
    #[error(
        "`{subscriber}` is at {at}: a replay moves it back, never forward past events it has not seen"
    )]
    Forward { subscriber: String, at: Position },
    #[error("`{0}` is being rebuilt; wait for the rebuild to end")]
    Rebuilding(String),
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("the replay could not be recorded")]
    Store(#[from] chorus_domain::EventStoreError),
}

/// What a replay does (or, dry, would do).
#[derive(Clone, Debug)]
pub struct Replay {
    pub subscriber: String,
    pub from: Option<Position>,
    pub to: Position,
    /// Events after the new position: what the subscriber will see again.
    pub events: u64,
    pub applied: bool,
}

/// The position a time stands for: just before the first event recorded at
/// or after it.
async fn position_at(pool: &PgPool, time: DateTime<Utc>) -> Result<Position, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT transaction_id, seq FROM events WHERE recorded_at < $1
         ORDER BY transaction_id DESC, seq DESC LIMIT 1",
    )
    .bind(time)
    .fetch_optional(pool)
    .await?;
    Ok(row.map_or(Position::START, |(major, minor)| {
        Position::new(major.unsigned_abs(), minor.unsigned_abs())
    }))
}

/// Moves `subscriber` back to `from` (or, `dry_run`, only says what that
/// would do), recording the replay.
pub async fn replay(
    store: &PgEventStore,
    subscriber: &str,
    from: ReplayFrom,
    dry_run: bool,
    requested_by: &str,
) -> Result<Replay, ReplayError> {
    let pool = store.pool();
    let current = checkpoints::list(pool)
        .await?
        .into_iter()
        .find(|(name, _)| name == subscriber)
        .map(|(_, at)| at);
    let known = current.is_some()
        || chorus_projections::all()
            .iter()
            .any(|p| p.name() == subscriber);
    if !known {
        return Err(ReplayError::UnknownSubscriber(subscriber.to_owned()));
    }
    let to = match from {
        ReplayFrom::Position(p) => p,
        ReplayFrom::Time(t) => position_at(pool, t).await?,
    };
    let at = current.unwrap_or(Position::START);
    if to > at {
        return Err(ReplayError::Forward {
            subscriber: subscriber.to_owned(),
            at,
        });
    }
    let (events, _) = super::rebuilds::lag(pool, to).await?;
    let mut replay = Replay {
        subscriber: subscriber.to_owned(),
        from: current,
        to,
        events: events.unsigned_abs(),
        applied: false,
    };
    if dry_run {
        return Ok(replay);
    }
    let rebuilding: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM projection_rebuilds WHERE projection = $1 AND state = 'running')",
    )
    .bind(subscriber)
    .fetch_one(pool)
    .await?;
    if rebuilding {
        return Err(ReplayError::Rebuilding(subscriber.to_owned()));
    }
    // The subscriber notices at its next commit (or within a second, idle)
    // that its checkpoint moved, and resumes from here.
    checkpoints::save(pool, subscriber, to).await?;
    replay.applied = true;
    let event = DomainEvent::SubscriberReplayed(SubscriberReplayed {
        subscriber: subscriber.to_owned(),
        requested_by: requested_by.to_owned(),
        from: current,
        to,
        events: replay.events,
        replayed_at: Utc::now(),
    });
    super::record(store, Uuid::now_v7(), requested_by, &[event]).await?;
    Ok(replay)
}
