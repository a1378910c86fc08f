//! What operators see of the delivery queue and what they can do to it; the
//! GraphQL admin fields and the `chorus deliveries` commands call these.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// Jobs by state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct QueueSummary {
    /// Waiting for their first or next attempt.
    pub pending: i64,
    /// Pending and due now.
    pub due: i64,
    pub delivered: i64,
    /// Given up.
    pub dead: i64,
}

/// One job, as operators see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct JobStatus {
    pub job_id: i64,
    pub activity_id: String,
    pub activity_type: String,
    pub actor: String,
    pub inbox: String,
    pub host: String,
    pub state: String,
    pub attempts: i32,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A host with failures, as operators see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct HostStatus {
    pub host: String,
    pub trusted: bool,
    pub consecutive_failures: i32,
    pub failing_since: Option<DateTime<Utc>>,
    pub open_until: Option<DateTime<Utc>>,
    pub unavailable_since: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Its jobs still pending.
    pub pending: i64,
}

/// Which jobs to list.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    /// `pending`, `delivered` or `dead`; any when `None`.
    pub state: Option<String>,
    pub host: Option<String>,
    pub activity_id: Option<String>,
    pub limit: i64,
}

/// Counts jobs by state.
pub async fn summary(pool: &PgPool) -> Result<QueueSummary, sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 'pending') AS pending,
                count(*) FILTER (WHERE state = 'pending' AND next_attempt_at <= now()) AS due,
                count(*) FILTER (WHERE state = 'delivered') AS delivered,
                count(*) FILTER (WHERE state = 'dead') AS dead
         FROM delivery_jobs",
    )
    .fetch_one(pool)
    .await
}

/// Jobs matching `filter`, most recently changed first.
pub async fn jobs(pool: &PgPool, filter: &JobFilter) -> Result<Vec<JobStatus>, sqlx::Error> {
    sqlx::query_as(
        "SELECT j.job_id, a.activity_id, a.activity_type, a.actor, j.inbox, j.host, j.state,
                j.attempts, j.last_status, j.last_error, j.created_at, j.updated_at,
                j.next_attempt_at, j.finished_at
         FROM delivery_jobs j JOIN delivery_activities a ON a.event_id = j.event_id
         WHERE ($1::text IS NULL OR j.state = $1)
           AND ($2::text IS NULL OR j.host = lower($2))
           AND ($3::text IS NULL OR a.activity_id = $3)
         ORDER BY j.updated_at DESC, j.job_id DESC
         LIMIT $4",
    )
    .bind(&filter.state)
    .bind(&filter.host)
    .bind(&filter.activity_id)
    .bind(filter.limit.clamp(1, 1000))
    .fetch_all(pool)
    .await
}

/// Hosts that are failing (or whose circuit is open), worst first.
pub async fn failing_hosts(pool: &PgPool) -> Result<Vec<HostStatus>, sqlx::Error> {
    sqlx::query_as(
        "SELECT h.host, h.trusted, h.consecutive_failures, h.failing_since, h.open_until,
                h.unavailable_since, h.last_success_at, h.last_error,
                (SELECT count(*) FROM delivery_jobs j
                 WHERE j.host = h.host AND j.state = 'pending') AS pending
         FROM delivery_hosts h
         WHERE h.consecutive_failures > 0 OR h.open_until > now() OR h.unavailable_since IS NOT NULL
         ORDER BY h.consecutive_failures DESC, h.host",
    )
    .fetch_all(pool)
    .await
}

/// Why an admin action did nothing.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no outbound activity with id {0}")]
    UnknownActivity(String),
    #[error("invalid inbox URL {0:?}: expected http(s)://host/path")]
    InvalidInbox(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Sends the outbound activity `activity_id` again: to every inbox it was
/// planned for, or to `inbox` alone (planned or not). Returns how many jobs
/// were queued; each starts afresh (two days of retries from now).
pub async fn redeliver(
    pool: &PgPool,
    activity_id: &str,
    inbox: Option<&str>,
) -> Result<u64, AdminError> {
    let event: Option<uuid::Uuid> = sqlx::query_scalar(
        "SELECT event_id FROM delivery_activities WHERE activity_id = $1
         ORDER BY position_major DESC, position_minor DESC LIMIT 1",
    )
    .bind(activity_id)
    .fetch_optional(pool)
    .await?;
    let event = event.ok_or_else(|| AdminError::UnknownActivity(activity_id.to_owned()))?;
    let host = match inbox {
        Some(inbox) => Some(
            chorus_domain::inbound::host_of(inbox)
                .ok_or_else(|| AdminError::InvalidInbox(inbox.to_owned()))?,
        ),
        None => None,
    };
    let queued = sqlx::query(
        "WITH targets AS (
             SELECT inbox, host, personal FROM delivery_jobs WHERE event_id = $1 AND $2::text IS NULL
             UNION ALL
             SELECT $2, $3, NOT EXISTS (SELECT 1 FROM actors WHERE shared_inbox = $2)
             WHERE $2::text IS NOT NULL
         )
         INSERT INTO delivery_jobs (event_id, inbox, host, personal)
         SELECT $1, inbox, host, personal FROM targets
         ON CONFLICT (event_id, inbox) DO UPDATE
         SET state = 'pending', attempts = 0, next_attempt_at = now(), leased_until = NULL,
             created_at = now(), updated_at = now(), finished_at = NULL",
    )
    .bind(event)
    .bind(inbox)
    .bind(host)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(queued)
}

/// Makes every pending job for `host` due now and closes its circuit.
/// Returns how many jobs came due.
pub async fn retry_host(pool: &PgPool, host: &str) -> Result<u64, sqlx::Error> {
    let host = host.trim().to_lowercase();
    sqlx::query(
        "UPDATE delivery_hosts SET open_until = NULL, consecutive_failures = 0, updated_at = now()
         WHERE host = $1",
    )
    .bind(&host)
    .execute(pool)
    .await?;
    Ok(sqlx::query(
        "UPDATE delivery_jobs SET next_attempt_at = now(), updated_at = now()
         WHERE host = $1 AND state = 'pending'",
    )
    .bind(&host)
    .execute(pool)
    .await?
    .rows_affected())
}

/// Marks `host` trusted (served first) or not.
pub async fn set_trusted(pool: &PgPool, host: &str, trusted: bool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO delivery_hosts (host, trusted) VALUES (lower($1), $2)
         ON CONFLICT (host) DO UPDATE SET trusted = $2, updated_at = now()",
    )
    .bind(host.trim())
    .bind(trusted)
    .execute(pool)
    .await?;
    Ok(())
}

/// What [`purge`] removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purge {
    /// Jobs given up.
    Dead,
    /// Jobs delivered.
    Delivered,
    /// Jobs still pending (they will not be sent).
    Pending,
}

/// Removes jobs in the `what` state, for `host` only if given. Returns how
/// many were removed.
pub async fn purge(pool: &PgPool, what: Purge, host: Option<&str>) -> Result<u64, sqlx::Error> {
    let state = match what {
        Purge::Dead => "dead",
        Purge::Delivered => "delivered",
        Purge::Pending => "pending",
    };
    Ok(sqlx::query(
        "DELETE FROM delivery_jobs WHERE state = $1 AND ($2::text IS NULL OR host = lower($2))",
    )
    .bind(state)
    .bind(host)
    .execute(pool)
    .await?
    .rows_affected())
}
