//! What to do after each delivery attempt: pure rules, no IO.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// How long a job keeps being retried before it is given up.
pub const GIVE_UP_AFTER: chrono::Duration = chrono::Duration::hours(48);
/// The first retry's delay; each later one doubles, up to [`MAX_DELAY`].
pub const FIRST_DELAY: Duration = Duration::from_secs(30);
pub const MAX_DELAY: Duration = Duration::from_secs(6 * 3600);
/// Consecutive failures of a host that open its circuit.
pub const OPEN_AFTER: i32 = 5;
/// How long a host may fail before it is marked unavailable.
pub const UNAVAILABLE_AFTER: chrono::Duration = chrono::Duration::days(3);
/// How often an unavailable host is probed.
pub const PROBE_UNAVAILABLE: Duration = Duration::from_secs(3600);

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

/// Decides what follows `attempt`, the job's `attempts`-th (from 1), for a
/// job created at `created` (retries stop [`GIVE_UP_AFTER`] it).
/// `jitter` in [0, 1) spreads retries so that a recovered host is not hit
/// by every job at the same instant.
pub fn next(
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
        } => retry_after.unwrap_or_else(|| backoff(attempts, jitter)),
        Attempt::Refused { status, .. } if !is_transient(*status) => return Next::GiveUp,
        Attempt::Refused { .. } | Attempt::Unreachable => backoff(attempts, jitter),
    };
    let due = now + chrono::Duration::from_std(delay).unwrap_or(GIVE_UP_AFTER);
    if due > created + GIVE_UP_AFTER {
        return Next::GiveUp;
    }
    Next::Retry(delay)
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

/// How long a host's circuit stays open after `failures` consecutive
/// failures: closed below [`OPEN_AFTER`], then one minute, doubling up to an
/// hour.
pub fn open_for(failures: i32) -> Option<Duration> {
    if failures < OPEN_AFTER {
        return None;
    }
    let doublings = u32::try_from(failures - OPEN_AFTER).unwrap_or(0).min(6);
    Some(Duration::from_secs(60 << doublings).min(Duration::from_secs(3600)))
}

/// Exponential backoff with jitter: 30 s, 1 min, 2 min, … up to 6 h, each
/// stretched by up to a quarter.
pub fn backoff(attempts: u32, jitter: f64) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    let base = FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY);
    base.mul_f64(1.0 + 0.25 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

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
