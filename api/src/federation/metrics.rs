//! `GET /metrics`, in the Prometheus text format: counters of what the
//! inbox did and of delivery attempts (this process's), and what the
//! database says of the log, its subscribers, the delivery queue and
//! rebuilds ([`render_state`]), and where GraphQL queries read
//! ([`render_reads`]).
//!
//! A scrape stays cheap however long the log: events by type come from the
//! `activity_stats` projection's totals, lags are counted up to
//! [`LAG_CAP`] events each, the queue is counted over its pending jobs
//! only, and rebuilds are read from their latest rows.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use chorus_postgres::checkpoints;
use chorus_workers::delivery::{HostClass, Outcome, Outcomes, admin};
use sqlx::PgPool;

/// Why the inbox refused a request: one counter each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 400: not JSON, or not an activity.
    Malformed,
    /// 401: a missing, malformed, stale or wrong signature.
    Signature,
    /// 401: the signer's key could not be had.
    UnknownKey,
    /// 401: the key belongs to someone other than the activity's actor.
    ActorMismatch,
    /// 403: the instance is blocked.
    BlockedInstance,
    /// 413: the body is over the limit.
    TooLarge,
    /// 429: over a rate limit.
    RateLimited,
    /// 404: the personal inbox of no one.
    UnknownInbox,
    /// 5xx: our side failed.
    Internal,
}

impl Refusal {
    const ALL: [Self; 9] = [
        Self::Malformed,
        Self::Signature,
        Self::UnknownKey,
        Self::ActorMismatch,
        Self::BlockedInstance,
        Self::TooLarge,
        Self::RateLimited,
        Self::UnknownInbox,
        Self::Internal,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Signature => "signature",
            Self::UnknownKey => "unknown_key",
            Self::ActorMismatch => "actor_mismatch",
            Self::BlockedInstance => "blocked_instance",
            Self::TooLarge => "too_large",
            Self::RateLimited => "rate_limited",
            Self::UnknownInbox => "unknown_inbox",
            Self::Internal => "internal",
        }
    }
}

/// The inbox's counters.
#[derive(Debug, Default)]
pub struct InboxMetrics {
    accepted: AtomicU64,
    duplicates: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
    key_fetches: AtomicU64,
}

impl InboxMetrics {
    /// An activity was stored (`duplicate`: it already had been).
    pub fn accepted(&self, duplicate: bool) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        if duplicate {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn refused(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A remote key or actor was fetched.
    pub fn key_fetched(&self) {
        self.key_fetches.fetch_add(1, Ordering::Relaxed);
    }

    /// How many requests were refused for `why`.
    pub fn refusals(&self, why: Refusal) -> u64 {
        self.refused[why as usize].load(Ordering::Relaxed)
    }

    /// The counters in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP chorus_inbox_accepted_total Activities accepted by the inbox (202).\n\
             # TYPE chorus_inbox_accepted_total counter\n\
             chorus_inbox_accepted_total {}",
            self.accepted.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP chorus_inbox_duplicates_total Accepted activities that were already stored.\n\
             # TYPE chorus_inbox_duplicates_total counter\n\
             chorus_inbox_duplicates_total {}",
            self.duplicates.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP chorus_inbox_refused_total Inbox requests refused, by reason.\n\
             # TYPE chorus_inbox_refused_total counter"
        );
        for why in Refusal::ALL {
            let _ = writeln!(
                out,
                "chorus_inbox_refused_total{{reason=\"{}\"}} {}",
                why.label(),
                self.refusals(why)
            );
        }
        let _ = writeln!(
            out,
            "# HELP chorus_remote_key_fetches_total Remote keys and actors fetched to verify signatures.\n\
             # TYPE chorus_remote_key_fetches_total counter\n\
             chorus_remote_key_fetches_total {}",
            self.key_fetches.load(Ordering::Relaxed)
        );
        out
    }
}

/// Subscribers' lags are counted up to this many events each (a figure
/// equal to it means "at least"): a scrape walks at most that much of the
/// log per subscriber.
pub const LAG_CAP: i64 = 10_000;

/// A metric family: its help, type and samples (labels, value).
fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: &[(Vec<(&str, &str)>, f64)],
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let labels = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect::<Vec<_>>()
            .join(",");
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// A label value as the text format writes it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Counts as sample values (exact up to 2^53).
#[allow(clippy::cast_precision_loss)]
fn number(n: impl TryInto<i64>) -> f64 {
    n.try_into().unwrap_or(i64::MAX) as f64
}

/// This process's delivery attempts by host class and outcome.
pub fn render_outcomes(outcomes: &Outcomes) -> String {
    let mut samples = Vec::new();
    for class in HostClass::ALL {
        for outcome in Outcome::ALL {
            samples.push((
                vec![("class", class.label()), ("outcome", outcome.label())],
                number(outcomes.get(class, outcome)),
            ));
        }
    }
    let mut out = String::new();
    family(
        &mut out,
        "chorus_delivery_attempts_total",
        "counter",
        "Delivery attempts made by this process, by class of host and outcome.",
        &samples,
    );
    out
}

/// Where GraphQL queries read: whether the read replica is in use, and how
/// far it is behind the primary (omitted until the monitor knows). Nothing
/// without a replica configured.
pub fn render_reads(reads: &crate::database::ReadPool) -> String {
    let mut out = String::new();
    if !reads.has_replica() {
        return out;
    }
    family(
        &mut out,
        "chorus_read_replica_in_use",
        "gauge",
        "1 while GraphQL queries read from the read replica, 0 while they read from the primary.",
        &[(vec![], if reads.replica_in_use() { 1.0 } else { 0.0 })],
    );
    let bound = reads.max_lag().map_or(0.0, |d| d.as_secs_f64());
    family(
        &mut out,
        "chorus_read_replica_max_lag_seconds",
        "gauge",
        "The staleness beyond which queries read from the primary.",
        &[(vec![], bound)],
    );
    if let Some(staleness) = reads.staleness() {
        family(
            &mut out,
            "chorus_read_replica_staleness_seconds",
            "gauge",
            "How long ago the newest primary WAL position the replica has replayed past was sampled.",
            &[(vec![], staleness.as_secs_f64())],
        );
    }
    out
}

/// What the database says: events in the log by type, each subscriber's
/// lag, the delivery queue by host class, and rebuilds.
pub async fn render_state(pool: &PgPool) -> Result<String, sqlx::Error> {
    let mut out = String::new();

    let totals: Vec<(String, i64)> =
        sqlx::query_as("SELECT event_type, events FROM activity_stats_totals ORDER BY event_type")
            .fetch_all(pool)
            .await?;
    let samples: Vec<_> = totals
        .iter()
        .map(|(t, n)| (vec![("type", t.as_str())], number(*n)))
        .collect();
    family(
        &mut out,
        "chorus_events_total",
        "counter",
        "Events in the log, by type (as far as the activity_stats projection has counted).",
        &samples,
    );

    let lags = checkpoints::lags(pool, LAG_CAP).await?;
    let events: Vec<_> = lags
        .iter()
        .map(|(name, _, lag)| (vec![("subscriber", name.as_str())], number(lag.events)))
        .collect();
    family(
        &mut out,
        "chorus_subscriber_lag_events",
        "gauge",
        "Readable events after the subscriber's checkpoint (counted up to 10000).",
        &events,
    );
    let seconds: Vec<_> = lags
        .iter()
        .map(|(name, _, lag)| (vec![("subscriber", name.as_str())], lag.seconds))
        .collect();
    family(
        &mut out,
        "chorus_subscriber_lag_seconds",
        "gauge",
        "How long the first event after the subscriber's checkpoint has waited; 0 when caught up.",
        &seconds,
    );
    let leases = crate::roles::all_leases();
    let held = chorus_postgres::leases::holders(pool, &leases).await?;
    let samples: Vec<_> = held
        .iter()
        .map(|(lease, holder)| {
            let up = if holder.is_some() { 1.0 } else { 0.0 };
            (vec![("lease", lease.as_str())], up)
        })
        .collect();
    family(
        &mut out,
        "chorus_lease_held",
        "gauge",
        "1 while a process holds the lease (runs the subscriber), 0 while none does.",
        &samples,
    );

    let pending = admin::pending_by_class(pool).await?;
    let samples: Vec<_> = HostClass::ALL
        .iter()
        .map(|class| {
            let n = pending
                .iter()
                .find(|(c, _)| c == class.label())
                .map_or(0, |(_, n)| *n);
            (vec![("class", class.label())], number(n))
        })
        .collect();
    family(
        &mut out,
        "chorus_delivery_queue_pending",
        "gauge",
        "Delivery jobs waiting for their first or next attempt, by class of host.",
        &samples,
    );

    let rebuilds = chorus_projections::rebuild::latest(pool).await?;
    let running: Vec<_> = rebuilds
        .iter()
        .map(|r| {
            let running = r.state == chorus_projections::rebuild::RebuildState::Running;
            (
                vec![("projection", r.projection.as_str())],
                if running { 1.0 } else { 0.0 },
            )
        })
        .collect();
    family(
        &mut out,
        "chorus_rebuild_running",
        "gauge",
        "1 while the projection is being rebuilt.",
        &running,
    );
    let done: Vec<_> = rebuilds
        .iter()
        .map(|r| {
            (
                vec![("projection", r.projection.as_str())],
                number(r.events_done),
            )
        })
        .collect();
    family(
        &mut out,
        "chorus_rebuild_events_done",
        "gauge",
        "Events applied by the projection's latest rebuild.",
        &done,
    );
    let total: Vec<_> = rebuilds
        .iter()
        .map(|r| {
            (
                vec![("projection", r.projection.as_str())],
                number(r.events_total.max(r.events_done)),
            )
        })
        .collect();
    family(
        &mut out,
        "chorus_rebuild_events_total",
        "gauge",
        "Events the projection's latest rebuild has to apply.",
        &total,
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_in_the_prometheus_format() {
        let m = InboxMetrics::default();
        m.accepted(false);
        m.accepted(true);
        m.refused(Refusal::Signature);
        m.refused(Refusal::Signature);
        m.refused(Refusal::TooLarge);
        let text = m.render();
        assert!(text.contains("chorus_inbox_accepted_total 2\n"));
        assert!(text.contains("chorus_inbox_duplicates_total 1\n"));
        assert!(text.contains("chorus_inbox_refused_total{reason=\"signature\"} 2\n"));
        assert!(text.contains("chorus_inbox_refused_total{reason=\"too_large\"} 1\n"));
        assert!(text.contains("chorus_inbox_refused_total{reason=\"internal\"} 0\n"));
    }
}
