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

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for its first or next attempt.
    Pending,
    Delivered,
    /// Given up.
    Dead,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
        }
    }
}

impl std::str::FromStr for JobState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Self::Pending),
            "delivered" => Ok(Self::Delivered),
            "dead" => Ok(Self::Dead),
            other => Err(format!(
                "unknown job state {other:?}: expected pending, delivered or dead"
            )),
        }
    }
}

/// Which jobs to list.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    /// Any state when `None`.
    pub state: Option<JobState>,
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

/// Pending jobs by the class of their host (see [`HostClass`]): the cost
/// is a walk of the pending jobs' index, not of the delivered ones.
///
/// [`HostClass`]: super::HostClass
pub async fn pending_by_class(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {class} AS class, count(*)
         FROM delivery_jobs j LEFT JOIN delivery_hosts h ON h.host = j.host
         WHERE j.state = 'pending'
         GROUP BY 1",
        class = super::HostClass::SQL
    ))
    .fetch_all(pool)
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
    .bind(filter.state.map(JobState::as_str))
    .bind(&filter.host)
    .bind(&filter.activity_id)
    .bind(filter.limit.clamp(1, 1000))
    .fetch_all(pool)
    .await
}

const HOST_COLUMNS: &str = "h.host, h.trusted, h.consecutive_failures, h.failing_since,
    h.open_until, h.unavailable_since, h.last_success_at, h.last_error,
    (SELECT count(*) FROM delivery_jobs j WHERE j.host = h.host AND j.state = 'pending') AS pending";

/// Hosts that are failing (or whose circuit is open), worst first.
pub async fn failing_hosts(pool: &PgPool) -> Result<Vec<HostStatus>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {HOST_COLUMNS} FROM delivery_hosts h
         WHERE h.consecutive_failures > 0 OR h.open_until > now() OR h.unavailable_since IS NOT NULL
         ORDER BY h.consecutive_failures DESC, h.host"
    ))
    .fetch_all(pool)
    .await
}

/// Hosts marked trusted.
pub async fn trusted_hosts(pool: &PgPool) -> Result<Vec<HostStatus>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {HOST_COLUMNS} FROM delivery_hosts h WHERE h.trusted ORDER BY h.host"
    ))
    .fetch_all(pool)
    .await
}

/// One host as deliveries know it (`None` if nothing was ever sent there
/// nor set for it).
pub async fn host(pool: &PgPool, host: &str) -> Result<Option<HostStatus>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {HOST_COLUMNS} FROM delivery_hosts h WHERE h.host = $1"
    ))
    .bind(normalise_host(host))
    .fetch_optional(pool)
    .await
}

/// Hosts as jobs record them: lower case, with a port if the inbox URL
/// has one.
fn normalise_host(host: &str) -> String {
    host.trim().to_lowercase()
}

/// Why an admin action did nothing.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no outbound activity with id {0}")]
    UnknownActivity(String),
    #[error("invalid inbox URL {0:?}: expected http(s)://host/path")]
    InvalidInbox(String),
    #[error("invalid host {0:?}: expected a host name, with a port if it has one")]
    InvalidHost(String),
    #[error("{0} has no outbound activity in that range")]
    NothingToRedeliver(String),
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
    let inboxes: Vec<String> = inbox.map(str::to_owned).into_iter().collect();
    redeliver_event(pool, event, &inboxes).await
}

/// What [`redeliver_actor`] queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Redelivered {
    pub activities: u64,
    pub deliveries: u64,
}

/// Sends every outbound activity of `actor` recorded in `[from, to)` again:
/// to every inbox each was planned for, or to `inboxes` alone.
pub async fn redeliver_actor(
    pool: &PgPool,
    actor: &str,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    inboxes: &[String],
) -> Result<Redelivered, AdminError> {
    let events: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT event_id FROM delivery_activities
         WHERE actor = $1 AND ($2::timestamptz IS NULL OR created_at >= $2)
           AND ($3::timestamptz IS NULL OR created_at < $3)
         ORDER BY position_major, position_minor",
    )
    .bind(actor)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    if events.is_empty() {
        return Err(AdminError::NothingToRedeliver(actor.to_owned()));
    }
    let mut deliveries = 0;
    for event in &events {
        deliveries += redeliver_event(pool, *event, inboxes).await?;
    }
    Ok(Redelivered {
        activities: events.len() as u64,
        deliveries,
    })
}

/// Queues the activity of `event` again, to its planned inboxes or to
/// `inboxes` (planned or not).
async fn redeliver_event(
    pool: &PgPool,
    event: uuid::Uuid,
    inboxes: &[String],
) -> Result<u64, AdminError> {
    let hosts = inboxes
        .iter()
        .map(|inbox| {
            chorus_domain::inbound::host_of(inbox)
                .ok_or_else(|| AdminError::InvalidInbox(inbox.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let queued = sqlx::query(
        "WITH targets AS (
             SELECT inbox, host, personal FROM delivery_jobs
             WHERE event_id = $1 AND cardinality($2::text[]) = 0
             UNION ALL
             SELECT t.inbox, t.host, NOT EXISTS (SELECT 1 FROM actors WHERE shared_inbox = t.inbox)
             FROM unnest($2::text[], $3::text[]) AS t (inbox, host)
         )
         INSERT INTO delivery_jobs (event_id, inbox, host, personal)
         SELECT $1, inbox, host, personal FROM targets
         ON CONFLICT (event_id, inbox) DO UPDATE
         SET state = 'pending', attempts = 0, next_attempt_at = now(), leased_until = NULL,
             created_at = now(), updated_at = now(), finished_at = NULL
         -- A job being sent right now is left to finish.
         WHERE delivery_jobs.leased_until IS NULL OR delivery_jobs.leased_until < now()",
    )
    .bind(event)
    .bind(inboxes)
    .bind(&hosts)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(queued)
}

/// Makes every pending job for `host` due now and closes its circuit.
/// Returns how many jobs came due.
pub async fn retry_host(pool: &PgPool, host: &str) -> Result<u64, AdminError> {
    let host = valid_host(host)?;
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

/// Marks `host` trusted (served first) or not; returns it as it is now.
pub async fn set_trusted(
    pool: &PgPool,
    host: &str,
    trusted: bool,
) -> Result<HostStatus, AdminError> {
    let host = valid_host(host)?;
    sqlx::query(
        "INSERT INTO delivery_hosts (host, trusted) VALUES ($1, $2)
         ON CONFLICT (host) DO UPDATE SET trusted = $2, updated_at = now()",
    )
    .bind(&host)
    .bind(trusted)
    .execute(pool)
    .await?;
    self::host(pool, &host)
        .await?
        .ok_or_else(|| AdminError::InvalidHost(host))
}

/// A host as an admin typed it, checked and normalised: a DNS name or an
/// address, with an optional port, nothing else.
fn valid_host(host: &str) -> Result<String, AdminError> {
    let normalised = normalise_host(host);
    url::Url::parse(&format!("http://{normalised}/"))
        .ok()
        .filter(|u| {
            !normalised.is_empty()
                && u.path() == "/"
                && u.username().is_empty()
                && u.query().is_none()
                && u.fragment().is_none()
        })
        .and_then(|u| chorus_domain::inbound::host_of(u.as_str()))
        .ok_or_else(|| AdminError::InvalidHost(host.to_owned()))
}

/// Removes jobs in `state` (pending ones will then never be sent), for
/// `host` only if given. Returns how many were removed. Jobs being sent at
/// this moment are left alone.
pub async fn purge(pool: &PgPool, state: JobState, host: Option<&str>) -> Result<u64, AdminError> {
    let host = host.map(valid_host).transpose()?;
    Ok(sqlx::query(
        "DELETE FROM delivery_jobs
         WHERE state = $1 AND ($2::text IS NULL OR host = $2)
           AND (leased_until IS NULL OR leased_until < now())",
    )
    .bind(state.as_str())
    .bind(host)
    .execute(pool)
    .await?
    .rows_affected())
}
