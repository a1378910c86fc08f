//! The delivery queue, for admins: what is pending, failing or given up,
//! and the actions on it. The same as the `chorus deliveries` commands.

use async_graphql::{Context, Enum, Object, SimpleObject};
use chorus_workers::delivery::admin::{self, AdminError, HostStatus, JobFilter, JobState};
use chrono::{DateTime, Utc};

use super::{Result, Services, acting, error, internal};

/// Where a delivery job stands.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    /// Waiting for its first or next attempt.
    Pending,
    Delivered,
    /// Given up: refused for good, or failing for too long.
    Dead,
}

impl From<DeliveryState> for JobState {
    fn from(state: DeliveryState) -> Self {
        match state {
            DeliveryState::Pending => Self::Pending,
            DeliveryState::Delivered => Self::Delivered,
            DeliveryState::Dead => Self::Dead,
        }
    }
}

impl DeliveryState {
    fn of(state: &str) -> Self {
        match state {
            "pending" => Self::Pending,
            "delivered" => Self::Delivered,
            _ => Self::Dead,
        }
    }
}

/// The queue at a glance.
#[derive(SimpleObject, Clone, Debug)]
pub struct DeliverySummary {
    /// Waiting for their first or next attempt.
    pub pending: i64,
    /// Pending and due now.
    pub due: i64,
    pub delivered: i64,
    pub dead: i64,
}

/// One activity to one inbox.
#[derive(SimpleObject, Clone, Debug)]
pub struct DeliveryJob {
    pub id: i64,
    pub activity_id: String,
    pub activity_type: String,
    pub actor: String,
    pub inbox: String,
    pub host: String,
    pub state: DeliveryState,
    pub attempts: i32,
    /// The last HTTP status answered, if any answer came.
    pub last_status: Option<i32>,
    /// Why the last attempt failed (an excerpt of the answer, a timeout, …).
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When a pending job is tried next.
    pub next_attempt_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<admin::JobStatus> for DeliveryJob {
    fn from(j: admin::JobStatus) -> Self {
        Self {
            id: j.job_id,
            activity_id: j.activity_id,
            activity_type: j.activity_type,
            actor: j.actor,
            inbox: j.inbox,
            host: j.host,
            state: DeliveryState::of(&j.state),
            attempts: j.attempts,
            last_status: j.last_status,
            last_error: j.last_error,
            created_at: j.created_at,
            updated_at: j.updated_at,
            next_attempt_at: j.next_attempt_at,
            finished_at: j.finished_at,
        }
    }
}

/// A remote host as deliveries see it.
#[derive(SimpleObject, Clone, Debug)]
pub struct DeliveryHost {
    pub host: String,
    /// Served before other hosts.
    pub trusted: bool,
    pub consecutive_failures: i32,
    pub failing_since: Option<DateTime<Utc>>,
    /// Nothing is sent before then (the circuit is open).
    pub open_until: Option<DateTime<Utc>>,
    /// Failing for days: probed now and then until it answers again.
    pub unavailable_since: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Its jobs still pending.
    pub pending: i64,
}

impl From<HostStatus> for DeliveryHost {
    fn from(h: HostStatus) -> Self {
        Self {
            host: h.host,
            trusted: h.trusted,
            consecutive_failures: h.consecutive_failures,
            failing_since: h.failing_since,
            open_until: h.open_until,
            unavailable_since: h.unavailable_since,
            last_success_at: h.last_success_at,
            last_error: h.last_error,
            pending: h.pending,
        }
    }
}

/// The delivery queue (admins only).
#[derive(Debug)]
pub struct Deliveries;

#[Object]
impl Deliveries {
    async fn summary(&self, ctx: &Context<'_>) -> Result<DeliverySummary> {
        let s = ctx.data::<Services>()?;
        let summary = admin::summary(&s.pool).await.map_err(internal)?;
        Ok(DeliverySummary {
            pending: summary.pending,
            due: summary.due,
            delivered: summary.delivered,
            dead: summary.dead,
        })
    }

    /// Jobs, most recently changed first.
    async fn jobs(
        &self,
        ctx: &Context<'_>,
        state: Option<DeliveryState>,
        host: Option<String>,
        activity_id: Option<String>,
        #[graphql(default = 50, validator(minimum = 1, maximum = 1000))] first: i64,
    ) -> Result<Vec<DeliveryJob>> {
        let s = ctx.data::<Services>()?;
        let filter = JobFilter {
            state: state.map(JobState::from),
            host,
            activity_id,
            limit: first,
        };
        Ok(admin::jobs(&s.pool, &filter)
            .await
            .map_err(internal)?
            .into_iter()
            .map(DeliveryJob::from)
            .collect())
    }

    /// Hosts with failures or an open circuit, worst first.
    async fn failing_hosts(&self, ctx: &Context<'_>) -> Result<Vec<DeliveryHost>> {
        let s = ctx.data::<Services>()?;
        hosts(admin::failing_hosts(&s.pool).await)
    }

    /// Hosts marked trusted.
    async fn trusted_hosts(&self, ctx: &Context<'_>) -> Result<Vec<DeliveryHost>> {
        let s = ctx.data::<Services>()?;
        hosts(admin::trusted_hosts(&s.pool).await)
    }
}

fn hosts(found: std::result::Result<Vec<HostStatus>, sqlx::Error>) -> Result<Vec<DeliveryHost>> {
    Ok(found
        .map_err(internal)?
        .into_iter()
        .map(DeliveryHost::from)
        .collect())
}

/// The queue, if the viewer is an admin.
pub(crate) async fn deliveries(ctx: &Context<'_>) -> Result<Deliveries> {
    admin_only(ctx).await?;
    Ok(Deliveries)
}

/// Passes admins; says FORBIDDEN to everyone else.
pub(crate) async fn admin_only(ctx: &Context<'_>) -> Result<String> {
    let me = acting(ctx).await?;
    if !me.admin {
        return Err(error("FORBIDDEN", "only admins may do this"));
    }
    Ok(me.uri)
}

/// An admin action's failure, as clients see it.
pub(crate) fn admin_error(e: AdminError) -> async_graphql::Error {
    match e {
        AdminError::UnknownActivity(_) | AdminError::NothingToRedeliver(_) => {
            error("NOT_FOUND", e.to_string())
        }
        AdminError::InvalidInbox(_) | AdminError::InvalidHost(_) => {
            error("INVALID_INPUT", e.to_string())
        }
        AdminError::Database(e) => internal(e),
    }
}
