//! Counters of what the inbox did, served at `GET /metrics` in the
//! Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

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
