//! The delivery workers: claim due jobs (`FOR UPDATE SKIP LOCKED`, under a
//! lease, so several processes never send the same job at once), sign each
//! request as the activity's actor, post it, and record what happened.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chorus_domain::remote::{RemoteActorDeleted, remote_actor_stream};
use chorus_domain::signatures::{PrivateKey, sign_rfc9421};
use chorus_domain::{DomainEvent, EventId, EventStore, ExpectedVersion, Metadata};
use chorus_postgres::PgEventStore;
use chrono::{DateTime, Utc};
use rand::Rng;
use sqlx::PgPool;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::policy::{self, Attempt, Next, RetryPolicy};
use crate::fetch::{FetchError, Fetcher, RequestSigner, sign_cavage_request};

/// How the workers of one process share the work.
#[derive(Clone, Copy, Debug)]
pub struct SenderOptions {
    /// Requests in flight at once, over all hosts.
    pub concurrency: usize,
    /// Requests in flight at once to one host: a slow instance holds at
    /// most this many of the slots.
    pub per_host: usize,
    /// How long a claimed job is reserved for this process; a job whose
    /// lease expires (its worker died) is claimed again.
    pub lease: Duration,
    /// How often to look for due jobs when not woken.
    pub poll: Duration,
    /// Retry and circuit timings.
    pub retry: RetryPolicy,
}

impl Default for SenderOptions {
    fn default() -> Self {
        Self {
            concurrency: 64,
            per_host: 8,
            lease: Duration::from_secs(120),
            poll: Duration::from_millis(500),
            retry: RetryPolicy::default(),
        }
    }
}

/// A claimed job.
#[derive(Debug, sqlx::FromRow)]
struct Job {
    job_id: i64,
    event_id: Uuid,
    inbox: String,
    host: String,
    personal: bool,
    attempts: i32,
    created_at: DateTime<Utc>,
    actor: String,
    body: String,
    signature: Option<String>,
}

/// The delivery workers of this process.
#[derive(Debug, Clone)]
pub struct Senders {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    store: PgEventStore,
    fetcher: Fetcher,
    options: SenderOptions,
    /// Successes, recorded in batches by [`record_delivered`].
    delivered: mpsc::UnboundedSender<Success>,
    /// Parsed signing keys of local actors, by actor id.
    keys: Mutex<HashMap<String, Arc<(String, PrivateKey)>>>,
}

impl Senders {
    /// Starts the workers; they run until the pool is closed. `wake` is
    /// notified by the planner when it adds jobs.
    pub fn start(
        store: PgEventStore,
        fetcher: Fetcher,
        wake: Arc<Notify>,
        options: SenderOptions,
    ) -> Self {
        let (delivered, successes) = mpsc::unbounded_channel();
        let pool = store.pool().clone();
        tokio::spawn(record_delivered(pool.clone(), successes));
        let senders = Self {
            inner: Arc::new(Inner {
                pool,
                store,
                fetcher,
                options,
                delivered,
                keys: Mutex::default(),
            }),
        };
        tokio::spawn(senders.clone().run(wake));
        senders
    }

    async fn run(self, wake: Arc<Notify>) {
        let options = self.inner.options;
        let mut inflight: HashMap<String, usize> = HashMap::new();
        let mut running: JoinSet<String> = JoinSet::new();
        loop {
            if self.inner.pool.is_closed() {
                running.shutdown().await;
                return;
            }
            let free = options.concurrency.saturating_sub(running.len());
            let mut claimed = 0;
            if free > 0 {
                match self.claim(free, &inflight).await {
                    Ok(jobs) => {
                        claimed = jobs.len();
                        for job in jobs {
                            *inflight.entry(job.host.clone()).or_default() += 1;
                            let senders = self.clone();
                            running.spawn(async move {
                                let host = job.host.clone();
                                senders.deliver(job).await;
                                host
                            });
                        }
                    }
                    Err(error) => {
                        if self.inner.pool.is_closed() {
                            continue;
                        }
                        tracing::error!(%error, "delivery workers cannot claim jobs; paused");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            // A full claim may leave more due: claim again once enough slots
            // free (one claim per freed slot would cost a statement and a
            // commit per delivery). Otherwise wait for a finished job, the
            // planner, or the poll interval (retries come due by themselves).
            let full = claimed > 0 && claimed == free;
            let batch = (options.concurrency / 8).max(1);
            loop {
                tokio::select! {
                    Some(done) = running.join_next() => finished(&mut inflight, done),
                    () = wake.notified(), if !full => {}
                    () = tokio::time::sleep(options.poll), if !full => {}
                }
                // Collect every other finished job without waiting.
                while let Some(done) = running.try_join_next() {
                    finished(&mut inflight, done);
                }
                let free = options.concurrency.saturating_sub(running.len());
                if !full || free >= batch || running.is_empty() {
                    break;
                }
            }
        }
    }

    /// Claims up to `limit` due jobs, at most `per_host` in flight per host
    /// (counting `inflight`), trusted hosts first; a host whose circuit has
    /// just closed gets one probe at a time.
    async fn claim(
        &self,
        limit: usize,
        inflight: &HashMap<String, usize>,
    ) -> Result<Vec<Job>, sqlx::Error> {
        let (hosts, counts): (Vec<String>, Vec<i32>) = inflight
            .iter()
            .map(|(host, n)| (host.clone(), i32::try_from(*n).unwrap_or(i32::MAX)))
            .unzip();
        let options = self.inner.options;
        // A claim need not wait for its commit to reach the disk: should
        // the database lose it in a crash, the job is pending again and is
        // sent again, as after a worker's crash. Without this, every claim
        // waits for a WAL flush.
        let mut tx = self.inner.pool.begin().await?;
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
        let jobs = sqlx::query_as::<_, Job>(
            "WITH busy AS (
                 SELECT * FROM unnest($1::text[], $2::int[]) AS b (host, n)
             ), candidates AS (
                 SELECT j.job_id, j.next_attempt_at, coalesce(h.trusted, false) AS trusted,
                        row_number() OVER (PARTITION BY j.host ORDER BY j.next_attempt_at, j.job_id)
                            + coalesce(b.n, 0) AS slot,
                        CASE WHEN coalesce(h.consecutive_failures, 0) >= $6 THEN 1 ELSE $3 END AS cap
                 FROM delivery_jobs j
                 LEFT JOIN delivery_hosts h ON h.host = j.host
                 LEFT JOIN busy b ON b.host = j.host
                 WHERE j.state = 'pending' AND j.next_attempt_at <= now()
                   AND (j.leased_until IS NULL OR j.leased_until < now())
                   AND (h.open_until IS NULL OR h.open_until <= now())
             ), chosen AS (
                 SELECT job_id FROM candidates WHERE slot <= cap
                 ORDER BY trusted DESC, next_attempt_at, job_id
                 LIMIT $4
             ), locked AS (
                 -- Checked again on the row as it is now: a job another
                 -- worker leased since this statement began is skipped.
                 SELECT job_id FROM delivery_jobs
                 WHERE job_id IN (SELECT job_id FROM chosen)
                   AND state = 'pending'
                   AND (leased_until IS NULL OR leased_until < now())
                 FOR UPDATE SKIP LOCKED
             )
             UPDATE delivery_jobs j
             SET leased_until = now() + make_interval(secs => $5),
                 attempts = j.attempts + 1,
                 updated_at = now()
             FROM locked, delivery_activities a
             WHERE j.job_id = locked.job_id AND a.event_id = j.event_id
             RETURNING j.job_id, j.event_id, j.inbox, j.host, j.personal, j.attempts,
                       j.created_at, a.actor, a.body,
                       (SELECT signature FROM delivery_hosts h WHERE h.host = j.host)",
        )
        .bind(&hosts)
        .bind(&counts)
        .bind(i64::try_from(options.per_host).unwrap_or(i64::MAX))
        .bind(i64::try_from(options.concurrency.min(limit)).unwrap_or(i64::MAX))
        .bind(options.lease.as_secs_f64())
        .bind(options.retry.open_after)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(jobs)
    }

    /// Sends one job and records the outcome.
    async fn deliver(&self, job: Job) {
        let (attempt, scheme, error) = match self.key(&job.actor).await {
            Ok(key) => self.post(&job, &key).await,
            Err(error) => (Attempt::Impossible, Scheme::Cavage, Some(error)),
        };
        if attempt == Attempt::Delivered {
            // Most outcomes: recorded with others, in one statement. Until
            // then the job stays leased, so nobody sends it again.
            let success = Success {
                job_id: job.job_id,
                host: job.host,
                scheme,
            };
            if self.inner.delivered.send(success).is_ok() {
                return;
            }
            tracing::error!(
                job = job.job_id,
                "delivery outcomes can no longer be recorded"
            );
            return;
        }
        if let Err(error) = self.record(&job, &attempt, error.as_deref()).await {
            // The lease runs out and the job is tried again.
            tracing::error!(job = job.job_id, %error, "could not record a delivery's outcome");
        }
    }

    /// Posts the job with the host's preferred signature; on a 401 that
    /// asks for another kind, once more with the other (double knocking).
    async fn post(
        &self,
        job: &Job,
        key: &Arc<(String, PrivateKey)>,
    ) -> (Attempt, Scheme, Option<String>) {
        let first = match job.signature.as_deref() {
            Some("rfc9421") => Scheme::Rfc9421,
            _ => Scheme::Cavage,
        };
        let (attempt, error, asks) = self.post_with(job, key, first).await;
        if asks && matches!(attempt, Attempt::Refused { status: 401, .. }) {
            let other = first.other();
            let (again, error, _) = self.post_with(job, key, other).await;
            return (again, other, error);
        }
        (attempt, first, error)
    }

    async fn post_with(
        &self,
        job: &Job,
        key: &Arc<(String, PrivateKey)>,
        scheme: Scheme,
    ) -> (Attempt, Option<String>, bool) {
        let signer = Signer {
            key: key.clone(),
            scheme,
        };
        match self
            .inner
            .fetcher
            .post_activity_as(&job.inbox, job.body.as_bytes(), &signer)
            .await
        {
            Ok(delivered) if delivered.is_success() => (Attempt::Delivered, None, false),
            Ok(delivered) => (
                Attempt::Refused {
                    status: delivered.status,
                    retry_after: delivered.retry_after,
                },
                Some(format!(
                    "HTTP {}: {}",
                    delivered.status, delivered.body_excerpt
                )),
                delivered.accept_signature || delivered.status == 401,
            ),
            Err(error) => {
                let attempt = match &error {
                    FetchError::InvalidUrl { .. }
                    | FetchError::UnsupportedScheme(_)
                    | FetchError::PrivateAddress { .. }
                    | FetchError::InvalidSignatureHeader(_) => Attempt::Impossible,
                    _ => Attempt::Unreachable,
                };
                (attempt, Some(error.to_string()), false)
            }
        }
    }

    /// The signing key of a local actor, parsed once.
    async fn key(&self, actor: &str) -> Result<Arc<(String, PrivateKey)>, String> {
        if let Some(key) = self
            .inner
            .keys
            .lock()
            .ok()
            .and_then(|k| k.get(actor).cloned())
        {
            return Ok(key);
        }
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT coalesce(a.key_id, a.uri || '#main-key'), k.private_key_pem
             FROM actors a JOIN actor_keys k ON k.actor_id = a.actor_id
             WHERE a.uri = $1 AND a.local",
        )
        .bind(actor)
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(|e| format!("loading the signing key: {e}"))?;
        let (key_id, pem) = row.ok_or_else(|| format!("{actor} has no signing key"))?;
        // The key itself never appears in errors.
        let key = PrivateKey::from_pem(&pem)
            .map_err(|_| format!("{actor}'s signing key cannot be read"))?;
        let key = Arc::new((key_id, key));
        if let Ok(mut keys) = self.inner.keys.lock() {
            keys.insert(actor.to_owned(), key.clone());
        }
        Ok(key)
    }

    /// Records a failed attempt on the job and on its host (successes go
    /// to [`record_delivered`]).
    async fn record(
        &self,
        job: &Job,
        attempt: &Attempt,

        error: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        let now = Utc::now();
        let attempts = u32::try_from(job.attempts).unwrap_or(u32::MAX);
        let jitter: f64 = rand::rng().random();
        let next = self
            .inner
            .options
            .retry
            .next(attempt, attempts, job.created_at, now, jitter);
        let status = match attempt {
            Attempt::Delivered => Some(200),
            Attempt::Refused { status, .. } => Some(i32::from(*status)),
            _ => None,
        };
        let (state, delay) = match next {
            Next::Done => ("delivered", None),
            Next::Retry(delay) => ("pending", Some(delay.as_secs_f64())),
            Next::GiveUp => ("dead", None),
        };
        let pool = &self.inner.pool;
        sqlx::query(
            "UPDATE delivery_jobs
             SET state = $2,
                 next_attempt_at = CASE WHEN $3::float8 IS NULL THEN next_attempt_at
                                        ELSE now() + make_interval(secs => $3) END,
                 leased_until = NULL,
                 last_status = coalesce($4, last_status),
                 last_error = $5,
                 updated_at = now(),
                 finished_at = CASE WHEN $2 = 'pending' THEN NULL ELSE now() END
             WHERE job_id = $1",
        )
        .bind(job.job_id)
        .bind(state)
        .bind(delay)
        .bind(status)
        .bind(error)
        .execute(pool)
        .await?;
        if policy::host_failed(attempt) {
            self.host_failed(job, error).await?;
        }
        if matches!(attempt, Attempt::Refused { status: 410, .. }) && job.personal {
            self.recipient_gone(job).await;
        }
        Ok(())
    }

    /// Counts a failure against the host; opens its circuit after enough,
    /// and marks it unavailable once it has failed for days.
    async fn host_failed(&self, job: &Job, error: Option<&str>) -> Result<(), sqlx::Error> {
        let pool = &self.inner.pool;
        let (failures, failing_since, unavailable): (i32, DateTime<Utc>, bool) = sqlx::query_as(
            "INSERT INTO delivery_hosts (host, consecutive_failures, failing_since, last_error)
             VALUES ($1, 1, now(), $2)
             ON CONFLICT (host) DO UPDATE
             SET consecutive_failures = delivery_hosts.consecutive_failures + 1,
                 failing_since = coalesce(delivery_hosts.failing_since, now()),
                 last_error = $2, updated_at = now()
             RETURNING consecutive_failures, failing_since, unavailable_since IS NOT NULL",
        )
        .bind(&job.host)
        .bind(error)
        .fetch_one(pool)
        .await?;
        let now = Utc::now();
        let retry = &self.inner.options.retry;
        let unavailable = unavailable || retry.unavailable(failing_since, now);
        let open = if unavailable {
            Some(retry.probe_unavailable)
        } else {
            retry.open_for(failures)
        };
        if let Some(open) = open {
            tracing::warn!(host = %job.host, failures, unavailable, "delivery circuit open");
            sqlx::query(
                "UPDATE delivery_hosts
                 SET open_until = now() + make_interval(secs => $2),
                     unavailable_since = CASE WHEN $3 THEN coalesce(unavailable_since, now()) END
                 WHERE host = $1",
            )
            .bind(&job.host)
            .bind(open.as_secs_f64())
            .bind(unavailable)
            .execute(pool)
            .await?;
        }
        Ok(())
    }

    /// A 410 from an actor's own inbox: the actor is gone. Recorded as the
    /// actor's deletion (once: the event id derives from the job), so that
    /// nothing more is planned for it.
    async fn recipient_gone(&self, job: &Job) {
        let actor: Option<String> =
            sqlx::query_scalar("SELECT uri FROM actors WHERE inbox = $1 AND NOT local LIMIT 1")
                .bind(&job.inbox)
                .fetch_optional(&self.inner.pool)
                .await
                .ok()
                .flatten();
        let Some(actor) = actor else {
            return;
        };
        let event = DomainEvent::RemoteActorDeleted(RemoteActorDeleted {
            uri: actor.clone(),
            deleted_at: Utc::now(),
        });
        let Ok(new) = event.to_new_event() else {
            return;
        };
        let mut new = new.with_metadata(Metadata {
            causation_id: Some(EventId(job.event_id)),
            ..Metadata::default()
        });
        new.id = EventId::derived(EventId(job.event_id), &format!("gone:{}", job.inbox));
        if let Err(error) = self
            .inner
            .store
            .append(
                &remote_actor_stream(&actor),
                ExpectedVersion::Any,
                vec![new],
            )
            .await
        {
            tracing::error!(%actor, %error, "could not record that an actor is gone");
        } else {
            tracing::info!(%actor, "the actor's inbox answered 410: recorded as deleted");
        }
    }
}

/// A job delivered, to be recorded.
#[derive(Debug)]
struct Success {
    job_id: i64,
    host: String,
    scheme: Scheme,
}

/// Records successes in batches (whatever finished while the last batch
/// was written: one transaction, two statements), until the senders stop.
/// A host's row is only written when its state changes (it was failing,
/// or answers another signature) or once a minute for `last_success_at`.
async fn record_delivered(pool: PgPool, mut successes: mpsc::UnboundedReceiver<Success>) {
    let mut batch = Vec::new();
    while successes.recv_many(&mut batch, 4096).await > 0 {
        let jobs: Vec<i64> = batch.iter().map(|s| s.job_id).collect();
        let mut hosts: HashMap<&str, &'static str> = HashMap::new();
        for success in &batch {
            hosts.insert(&success.host, success.scheme.name());
        }
        let (hosts, schemes): (Vec<&str>, Vec<&str>) = hosts.into_iter().unzip();
        loop {
            match write_successes(&pool, &jobs, &hosts, &schemes).await {
                Ok(()) => break,
                Err(_) if pool.is_closed() => return,
                Err(error) => {
                    // The jobs stay leased meanwhile; should this never
                    // succeed, their leases run out and they are sent again.
                    tracing::error!(%error, jobs = jobs.len(), "could not record deliveries; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        batch.clear();
    }
}

async fn write_successes(
    pool: &PgPool,
    jobs: &[i64],
    hosts: &[&str],
    schemes: &[&str],
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE delivery_jobs
         SET state = 'delivered', leased_until = NULL, last_status = 200, last_error = NULL,
             updated_at = now(), finished_at = now()
         WHERE job_id = ANY($1)",
    )
    .bind(jobs)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO delivery_hosts (host, signature, last_success_at)
         SELECT * , now() FROM unnest($1::text[], $2::text[])
         ON CONFLICT (host) DO UPDATE
         SET signature = EXCLUDED.signature, consecutive_failures = 0, open_until = NULL,
             failing_since = NULL, unavailable_since = NULL,
             last_success_at = now(), last_error = NULL, updated_at = now()
         WHERE delivery_hosts.consecutive_failures > 0
            OR delivery_hosts.open_until IS NOT NULL
            OR delivery_hosts.unavailable_since IS NOT NULL
            OR delivery_hosts.signature IS DISTINCT FROM EXCLUDED.signature
            OR delivery_hosts.last_success_at IS NULL
            OR delivery_hosts.last_success_at < now() - interval '1 minute'",
    )
    .bind(hosts)
    .bind(schemes)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Frees the slot a finished job held on its host.
fn finished(inflight: &mut HashMap<String, usize>, done: Result<String, tokio::task::JoinError>) {
    if let Ok(host) = done
        && let Some(n) = inflight.get_mut(&host)
    {
        *n = n.saturating_sub(1);
        if *n == 0 {
            inflight.remove(&host);
        }
    }
}

/// Which HTTP signature a request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Cavage,
    Rfc9421,
}

impl Scheme {
    fn other(self) -> Self {
        match self {
            Self::Cavage => Self::Rfc9421,
            Self::Rfc9421 => Self::Cavage,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Cavage => "cavage",
            Self::Rfc9421 => "rfc9421",
        }
    }
}

/// Signs a delivery as the activity's actor.
#[derive(Debug)]
struct Signer {
    key: Arc<(String, PrivateKey)>,
    scheme: Scheme,
}

impl RequestSigner for Signer {
    fn sign(
        &self,
        method: &str,
        url: &url::Url,
        body: Option<&[u8]>,
        content_type: Option<&str>,
    ) -> Vec<(String, String)> {
        let (key_id, key) = &*self.key;
        match self.scheme {
            Scheme::Cavage => sign_cavage_request(method, url, body, content_type, key_id, key),
            Scheme::Rfc9421 => sign_rfc9421(method, url, body, key_id, key, Utc::now())
                .unwrap_or_else(|error| {
                    tracing::warn!(%error, "could not sign a delivery; sending it unsigned");
                    Vec::new()
                }),
        }
    }
}
