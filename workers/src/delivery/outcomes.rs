//! What became of delivery attempts, by class of host: counters the
//! senders of a process keep, for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

/// How a host stands, as the delivery queue sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostClass {
    /// Marked trusted by an admin (served first).
    Trusted,
    /// No failure since its last success (or never sent to).
    Healthy,
    /// Failed at least once since its last success.
    Failing,
    /// Failing for days: probed rarely until it answers.
    Unavailable,
}

impl HostClass {
    pub const ALL: [Self; 4] = [
        Self::Trusted,
        Self::Healthy,
        Self::Failing,
        Self::Unavailable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Trusted => "trusted",
            Self::Healthy => "healthy",
            Self::Failing => "failing",
            Self::Unavailable => "unavailable",
        }
    }

    /// A class as [`SQL`] spells it; an unknown one is healthy.
    pub fn parse(label: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|c| c.label() == label)
            .unwrap_or(Self::Healthy)
    }

    /// The class of the `delivery_hosts` row `h` (which may be missing:
    /// a host never failed nor set is healthy), as SQL.
    pub const SQL: &'static str = "CASE WHEN h.trusted THEN 'trusted'
         WHEN h.unavailable_since IS NOT NULL THEN 'unavailable'
         WHEN h.consecutive_failures > 0 THEN 'failing'
         ELSE 'healthy' END";
}

/// What became of one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Failed; tried again later.
    Retry,
    /// Failed for good: given up.
    Dead,
}

impl Outcome {
    pub const ALL: [Self; 3] = [Self::Delivered, Self::Retry, Self::Dead];

    pub fn label(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retry => "retry",
            Self::Dead => "dead",
        }
    }
}

/// Attempts by host class and outcome, since the process started.
#[derive(Debug, Default)]
pub struct Outcomes {
    counts: [[AtomicU64; Outcome::ALL.len()]; HostClass::ALL.len()],
}

impl Outcomes {
    pub fn count(&self, class: HostClass, outcome: Outcome) {
        self.counts[class as usize][outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, class: HostClass, outcome: Outcome) -> u64 {
        self.counts[class as usize][outcome as usize].load(Ordering::Relaxed)
    }
}
