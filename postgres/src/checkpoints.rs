//! Subscriber checkpoints: where each subscriber of the log has got to.
//!
//! The functions take any executor, so a projection saves its checkpoint in
//! the transaction that writes its rows, and a crash can never separate the
//! two.

use chorus_domain::Position;
use sqlx::PgExecutor;

/// The position `subscriber` has processed up to, or `None` if it never ran.
pub async fn load<'e>(
    executor: impl PgExecutor<'e>,
    subscriber: &str,
) -> Result<Option<Position>, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT position_major, position_minor FROM subscriber_checkpoints WHERE subscriber = $1",
    )
    .bind(subscriber)
    .fetch_optional(executor)
    .await?;
    Ok(row.map(|(major, minor)| from_db(major, minor)))
}

/// Records that `subscriber` has processed everything up to `position`.
pub async fn save<'e>(
    executor: impl PgExecutor<'e>,
    subscriber: &str,
    position: Position,
) -> Result<(), sqlx::Error> {
    let (major, minor) = to_db(position);
    sqlx::query(
        "INSERT INTO subscriber_checkpoints (subscriber, position_major, position_minor)
         VALUES ($1, $2, $3)
         ON CONFLICT (subscriber) DO UPDATE
         SET position_major = excluded.position_major,
             position_minor = excluded.position_minor,
             updated_at = now()",
    )
    .bind(subscriber)
    .bind(major)
    .bind(minor)
    .execute(executor)
    .await?;
    Ok(())
}

/// Moves `subscriber`'s checkpoint from `from` (`None`: it has none yet) to
/// `to`, only if it still is at `from`. Returns false, changing nothing,
/// when someone else moved it meanwhile: an admin replaying the
/// subscriber, or a rebuild swapping in a projection's new tables. The
/// subscriber must then drop what it was about to commit and resume from
/// the stored checkpoint.
///
/// Take it first in the transaction that writes a subscriber's rows: the
/// row lock it holds until commit is what a swap or a replay waits on, so
/// neither can slip between the rows and the checkpoint.
pub async fn advance<'e>(
    executor: impl PgExecutor<'e>,
    subscriber: &str,
    from: Option<Position>,
    to: Position,
) -> Result<bool, sqlx::Error> {
    let (major, minor) = to_db(to);
    let moved =
        match from {
            None => sqlx::query(
                "INSERT INTO subscriber_checkpoints (subscriber, position_major, position_minor)
                 VALUES ($1, $2, $3)
                 ON CONFLICT (subscriber) DO NOTHING",
            )
            .bind(subscriber)
            .bind(major)
            .bind(minor)
            .execute(executor)
            .await?,
            Some(from) => {
                let (from_major, from_minor) = to_db(from);
                sqlx::query(
                    "UPDATE subscriber_checkpoints
                 SET position_major = $2, position_minor = $3, updated_at = now()
                 WHERE subscriber = $1 AND position_major = $4 AND position_minor = $5",
                )
                .bind(subscriber)
                .bind(major)
                .bind(minor)
                .bind(from_major)
                .bind(from_minor)
                .execute(executor)
                .await?
            }
        };
    Ok(moved.rows_affected() == 1)
}

/// Brings the stored checkpoint of a subscriber that is at `at` up to date
/// (it was last stored at `saved`), outside any transaction of its rows:
/// for subscribers that save lazily, and when idle. Returns where to resume
/// from if someone else moved the checkpoint meanwhile (an admin's replay,
/// a rebuild's swap); `saved` is then what is stored now.
pub async fn settle(
    pool: &sqlx::PgPool,
    subscriber: &str,
    saved: &mut Option<Position>,
    at: Position,
) -> Result<Option<Position>, sqlx::Error> {
    if *saved != Some(at) {
        if advance(pool, subscriber, *saved, at).await? {
            *saved = Some(at);
            return Ok(None);
        }
    } else if load(pool, subscriber).await? == *saved {
        return Ok(None);
    }
    let stored = load(pool, subscriber).await?;
    *saved = stored;
    Ok(Some(stored.unwrap_or(Position::START)))
}

/// Every subscriber with a checkpoint, and its position.
pub async fn list<'e>(
    executor: impl PgExecutor<'e>,
) -> Result<Vec<(String, Position)>, sqlx::Error> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT subscriber, position_major, position_minor FROM subscriber_checkpoints ORDER BY subscriber",
    )
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, major, minor)| (name, from_db(major, minor)))
        .collect())
}

/// Positions are stored as two `bigint`s. Both parts come from Postgres
/// `bigint`s in the first place (a transaction id and a sequence value, never
/// negative), so the conversions below cannot lose anything.
pub fn from_db(major: i64, minor: i64) -> Position {
    Position::new(major.max(0).unsigned_abs(), minor.max(0).unsigned_abs())
}

/// A position as the two `bigint`s it is stored as.
pub fn to_db(position: Position) -> (i64, i64) {
    (
        i64::try_from(position.major()).unwrap_or(i64::MAX),
        i64::try_from(position.minor()).unwrap_or(i64::MAX),
    )
}

/// How far a running subscriber of the log has got, to wait on.
#[derive(Clone, Debug)]
pub struct Progress(pub(crate) tokio::sync::watch::Receiver<Position>);

impl Progress {
    /// A progress starting at `start`, and what the subscriber moves it with.
    pub fn starting_at(start: Position) -> (tokio::sync::watch::Sender<Position>, Self) {
        let (sender, receiver) = tokio::sync::watch::channel(start);
        (sender, Self(receiver))
    }

    /// The progress a subscriber reports through its own channel.
    pub fn following(receiver: tokio::sync::watch::Receiver<Position>) -> Self {
        Self(receiver)
    }

    /// Waits until everything up to `position` is done; false after
    /// `timeout`, or if the subscriber stopped first.
    pub async fn reached(&self, position: Position, timeout: std::time::Duration) -> bool {
        let mut progress = self.0.clone();
        tokio::time::timeout(timeout, progress.wait_for(|p| *p >= position))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The last position done.
    pub fn position(&self) -> Position {
        *self.0.borrow()
    }
}

/// How far a subscriber is behind the readable end of the log.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Lag {
    /// Readable events after its position, counted up to the cap asked for
    /// (a figure equal to the cap means "at least").
    pub events: i64,
    /// How long the first of them has waited; 0 when caught up.
    pub seconds: f64,
}

/// The events after a position, up to a cap, in log order: a walk of the
/// log's primary key from the position, never beyond the cap.
const BEHIND: &str = "
    SELECT recorded_at FROM events
    WHERE (transaction_id, seq) > (%MAJOR%, %MINOR%)
      AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
    ORDER BY transaction_id, seq
    LIMIT %CAP%";

fn behind(major: &str, minor: &str, cap: &str) -> String {
    BEHIND
        .replace("%MAJOR%", major)
        .replace("%MINOR%", minor)
        .replace("%CAP%", cap)
}

/// How far `position` is behind the readable end of the log, counting at
/// most `cap` events (the cost is one index walk of at most that many).
pub async fn lag<'e>(
    executor: impl PgExecutor<'e>,
    position: Position,
    cap: i64,
) -> Result<Lag, sqlx::Error> {
    let (major, minor) = to_db(position);
    let (events, seconds): (i64, Option<f64>) = sqlx::query_as(&format!(
        "SELECT count(*), extract(epoch FROM now() - min(recorded_at))::float8
         FROM ({}) behind",
        behind("$1", "$2", "$3")
    ))
    .bind(major)
    .bind(minor)
    .bind(cap)
    .fetch_one(executor)
    .await?;
    Ok(Lag {
        events,
        seconds: seconds.unwrap_or(0.0).max(0.0),
    })
}

/// Every subscriber with a checkpoint, its position and its lag (counted up
/// to `cap` events each), in one statement.
pub async fn lags<'e>(
    executor: impl PgExecutor<'e>,
    cap: i64,
) -> Result<Vec<(String, Position, Lag)>, sqlx::Error> {
    let rows: Vec<(String, i64, i64, i64, Option<f64>)> = sqlx::query_as(&format!(
        "SELECT c.subscriber, c.position_major, c.position_minor, l.events, l.seconds
         FROM subscriber_checkpoints c
         CROSS JOIN LATERAL (
             SELECT count(*) AS events,
                    extract(epoch FROM now() - min(recorded_at))::float8 AS seconds
             FROM ({}) behind
         ) l
         ORDER BY c.subscriber",
        behind("c.position_major", "c.position_minor", "$1")
    ))
    .bind(cap)
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, major, minor, events, seconds)| {
            let lag = Lag {
                events,
                seconds: seconds.unwrap_or(0.0).max(0.0),
            };
            (name, from_db(major, minor), lag)
        })
        .collect())
}
