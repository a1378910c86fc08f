//! What to do after each delivery attempt: pure rules, no IO.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The timings of retries and of host circuits. The defaults are the
/// production ones; tests and benches shorten them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first retry's delay; each later one doubles, up to `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// How long after it was planned a job keeps being retried.
    pub give_up_after: Duration,
    /// Consecutive failures of a host that open its circuit.
    pub open_after: i32,
    /// How long a circuit first stays open; it doubles with each further
    /// failure, up to `max_open`.
    pub first_open: Duration,
    pub max_open: Duration,
    /// How long a host may fail before it is marked unavailable.
    pub unavailable_after: Duration,
    /// How often an unavailable host is probed.
    pub probe_unavailable: Duration,
}

impl Default for RetryPolicy {
    /// 30 s doubling to 6 h, for two days; circuits open after five
    /// failures for a minute, doubling to an hour; unavailable after three
    /// days of failures, then probed hourly.
    fn default() -> Self {
        Self {
            first_delay: Duration::from_secs(30),
            max_delay: Duration::from_secs(6 * 3600),
            give_up_after: Duration::from_secs(48 * 3600),
            open_after: 5,
            first_open: Duration::from_secs(60),
            max_open: Duration::from_secs(3600),
            unavailable_after: Duration::from_secs(3 * 24 * 3600),
            probe_unavailable: Duration::from_secs(3600),
        }
    }
}

/// How one attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// Any 2xx.
    Delivered,
    /// An answer with this status (not 2xx), and `Retry-After` if given.
    Refused {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// No answer: timeout, connection refused or reset.
    Unreachable,
    /// The request could not even be made (a bad inbox URL, a refused
    /// address): retrying cannot help.
    Impossible,
}

/// What becomes of the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    Done,
    /// Try again after this long.
    Retry(Duration),
    /// Give up for good.
    GiveUp,
}

impl RetryPolicy {
    /// Decides what follows `attempt`, the job's `attempts`-th (from 1),
    /// for a job created at `created` (retries stop `give_up_after` it).
    /// `jitter` in [0, 1) spreads retries so that a recovered host is not
    /// hit by every job at the same instant.
    pub fn next(
        &self,
        attempt: &Attempt,
        attempts: u32,
        created: DateTime<Utc>,
        now: DateTime<Utc>,
        jitter: f64,
    ) -> Next {
        let delay = match attempt {
            Attempt::Delivered => return Next::Done,
            Attempt::Impossible => return Next::GiveUp,
            Attempt::Refused {
                status: 429,
                retry_after,
            } => retry_after.unwrap_or_else(|| self.backoff(attempts, jitter)),
            Attempt::Refused { status, .. } if !is_transient(*status) => return Next::GiveUp,
            Attempt::Refused { .. } | Attempt::Unreachable => self.backoff(attempts, jitter),
        };
        let give_up =
            chrono::Duration::from_std(self.give_up_after).unwrap_or(chrono::Duration::MAX);
        let due = now + chrono::Duration::from_std(delay).unwrap_or(give_up);
        if due > created + give_up {
            return Next::GiveUp;
        }
        Next::Retry(delay)
    }

    /// How long a host's circuit stays open after `failures` consecutive
    /// failures: closed below `open_after`, then `first_open`, doubling up
    /// to `max_open`.
    pub fn open_for(&self, failures: i32) -> Option<Duration> {
        if failures < self.open_after {
            return None;
        }
        let doublings = u32::try_from(failures - self.open_after)
            .unwrap_or(0)
            .min(16);
        Some(
            self.first_open
                .saturating_mul(1 << doublings)
                .min(self.max_open),
        )
    }

    /// Exponential backoff with jitter: `first_delay`, twice that, … up to
    /// `max_delay`, each stretched by up to a quarter.
    pub fn backoff(&self, attempts: u32, jitter: f64) -> Duration {
        let doublings = attempts.saturating_sub(1).min(16);
        let base = self
            .first_delay
            .saturating_mul(1 << doublings)
            .min(self.max_delay);
        base.mul_f64(1.0 + 0.25 * jitter.clamp(0.0, 1.0))
    }

    /// Whether a host failing since `failing_since` is by `now` unavailable.
    pub fn unavailable(&self, failing_since: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        chrono::Duration::from_std(self.unavailable_after)
            .is_ok_and(|after| now - failing_since > after)
    }
}

/// Statuses worth retrying: the server may answer differently later.
pub fn is_transient(status: u16) -> bool {
    status == 408 || status == 429 || status >= 500
}

/// Whether the attempt counts against the host's health (its circuit): no
/// answer, or a server error. A 4xx is about the request, not the host.
pub fn host_failed(attempt: &Attempt) -> bool {
    match attempt {
        Attempt::Unreachable => true,
        Attempt::Refused { status, .. } => *status >= 500 || *status == 408,
        Attempt::Delivered | Attempt::Impossible => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST_DELAY: Duration = Duration::from_secs(30);
    const MAX_DELAY: Duration = Duration::from_secs(6 * 3600);

    fn next(
        attempt: &Attempt,
        attempts: u32,
        created: DateTime<Utc>,
        now: DateTime<Utc>,
        jitter: f64,
    ) -> Next {
        RetryPolicy::default().next(attempt, attempts, created, now, jitter)
    }

    fn backoff(attempts: u32, jitter: f64) -> Duration {
        RetryPolicy::default().backoff(attempts, jitter)
    }

    fn open_for(failures: i32) -> Option<Duration> {
        RetryPolicy::default().open_for(failures)
    }

    fn at(hours: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::hours(hours)
    }

    #[test]
    fn successes_finish_and_client_errors_give_up_at_once() {
        assert_eq!(next(&Attempt::Delivered, 1, at(0), at(0), 0.0), Next::Done);
        for status in [400, 401, 403, 404, 410, 422] {
            let refused = Attempt::Refused {
                status,
                retry_after: None,
            };
            assert_eq!(
                next(&refused, 1, at(0), at(0), 0.0),
                Next::GiveUp,
                "{status}"
            );
        }
        assert_eq!(
            next(&Attempt::Impossible, 1, at(0), at(0), 0.0),
            Next::GiveUp
        );
    }

    #[test]
    fn server_errors_timeouts_and_408_back_off_exponentially() {
        let failures = [
            Attempt::Unreachable,
            Attempt::Refused {
                status: 500,
                retry_after: None,
            },
            Attempt::Refused {
                status: 503,
                retry_after: None,
            },
            Attempt::Refused {
                status: 408,
                retry_after: None,
            },
        ];
        for failure in failures {
            assert_eq!(
                next(&failure, 1, at(0), at(0), 0.0),
                Next::Retry(FIRST_DELAY)
            );
            assert_eq!(
                next(&failure, 3, at(0), at(0), 0.0),
                Next::Retry(FIRST_DELAY * 4)
            );
        }
        assert_eq!(backoff(40, 0.0), MAX_DELAY);
        assert!(backoff(1, 0.99) > backoff(1, 0.0));
        assert!(backoff(1, 0.99) <= FIRST_DELAY.mul_f64(1.25));
    }

    #[test]
    fn retries_stop_two_days_after_the_job_was_planned() {
        let failure = Attempt::Unreachable;
        assert!(matches!(
            next(&failure, 12, at(0), at(40), 0.0),
            Next::Retry(_)
        ));
        assert_eq!(next(&failure, 12, at(0), at(47), 0.0), Next::GiveUp);
    }

    #[test]
    fn too_many_requests_waits_as_long_as_asked() {
        let asked = Attempt::Refused {
            status: 429,
            retry_after: Some(Duration::from_secs(120)),
        };
        assert_eq!(
            next(&asked, 1, at(0), at(0), 0.5),
            Next::Retry(Duration::from_secs(120))
        );
        let unsaid = Attempt::Refused {
            status: 429,
            retry_after: None,
        };
        assert_eq!(
            next(&unsaid, 1, at(0), at(0), 0.0),
            Next::Retry(FIRST_DELAY)
        );
    }

    #[test]
    fn a_host_circuit_opens_after_five_failures_and_grows_to_an_hour() {
        assert_eq!(open_for(4), None);
        assert_eq!(open_for(5), Some(Duration::from_secs(60)));
        assert_eq!(open_for(6), Some(Duration::from_secs(120)));
        assert_eq!(open_for(50), Some(Duration::from_secs(3600)));
        assert!(host_failed(&Attempt::Unreachable));
        let policy = RetryPolicy::default();
        assert!(!policy.unavailable(at(0), at(71)));
        assert!(policy.unavailable(at(0), at(73)));
        assert!(!host_failed(&Attempt::Refused {
            status: 404,
            retry_after: None
        }));
        assert!(!host_failed(&Attempt::Refused {
            status: 429,
            retry_after: None
        }));
    }
}
