//! The delivery workers: claim due jobs (`FOR UPDATE SKIP LOCKED`, under a
//! lease, so several processes never send the same job at once), sign each
//! request as the activity's actor, post it, and record what happened.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

use super::outcomes::{HostClass, Outcome, Outcomes};
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
            concurrency: 128,
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
    trusted: bool,
    signature: Option<String>,
    /// The host's class when the job was claimed.
    class: String,
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
    /// What became of the attempts, by host class.
    outcomes: Arc<Outcomes>,
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
        Self::start_counting(store, fetcher, wake, options, Arc::default())
    }

    /// The same, counting what becomes of each attempt in `outcomes`.
    pub fn start_counting(
        store: PgEventStore,
        fetcher: Fetcher,
        wake: Arc<Notify>,
        options: SenderOptions,
        outcomes: Arc<Outcomes>,
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
                outcomes,
            }),
        };
        tokio::spawn(senders.clone().run(wake));
        senders
    }

    async fn run(self, wake: Arc<Notify>) {
        let options = self.inner.options;
        let concurrency = options.concurrency.max(1);
        let mut waiting = Waiting::new(options.per_host.max(1));
        let mut running: JoinSet<(String, bool)> = JoinSet::new();
        // Jobs are claimed in batches, a statement for hundreds of
        // deliveries (its cost is mostly one probe per host with pending
        // jobs): when fewer than twice `concurrency` wait, up to eight
        // times that many held (waiting or running). A claim runs beside
        // the sending, so slots that free meanwhile are filled from what
        // waits.
        let low = 2 * concurrency;
        let most = 8 * concurrency;
        let mut claiming: Option<Claim> = None;
        // Whether a claim may find more due now: the last one was full, or
        // the planner or the poll interval says so.
        let mut more_due = true;
        let mut last_claimed = 0;
        let mut finished_since_claim = 0;
        loop {
            if self.inner.pool.is_closed() {
                running.shutdown().await;
                return;
            }
            let held = running.len() + waiting.len();
            // A short claim (hosts at their limit) is worth repeating once
            // half of what it gave has finished and freed its hosts.
            let worth = more_due || (last_claimed > 0 && 2 * finished_since_claim >= last_claimed);
            if claiming.is_none() && waiting.len() < low && held < most && worth {
                let limit = most - held;
                let senders = self.clone();
                let held = waiting.held();
                more_due = false;
                claiming = Some(Box::pin(async move {
                    let claimed = senders.claim(limit, &held).await;
                    (limit, claimed)
                }));
            }
            // Fill the free slots, host by host in turn. A job that waited
            // too long for its turn (its host is slow) is given back rather
            // than sent near the end of its lease.
            let mut stale = Vec::new();
            while running.len() < concurrency
                && let Some((job, claimed)) = waiting.next()
            {
                if claimed.elapsed() > options.lease / 4 {
                    waiting.finished(&job.host);
                    stale.push(job.job_id);
                    continue;
                }
                let senders = self.clone();
                running.spawn(async move {
                    let host = job.host.clone();
                    let opened = senders.deliver(job).await;
                    (host, opened)
                });
            }
            self.release(&stale).await;
            // Wait for a claim, a finished job, the planner, or the poll
            // interval (retries come due by themselves).
            let mut done = Vec::new();
            tokio::select! {
                Some((limit, claimed)) = claim_done(&mut claiming), if claiming.is_some() => {
                    claiming = None;
                    match claimed {
                        Ok(jobs) => {
                            more_due = jobs.len() == limit;
                            last_claimed = jobs.len();
                            finished_since_claim = 0;
                            let now = Instant::now();
                            for job in jobs {
                                waiting.push(job, now);
                            }
                        }
                        Err(error) => {
                            if !self.inner.pool.is_closed() {
                                tracing::error!(%error, "delivery workers cannot claim jobs; paused");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                            more_due = true;
                        }
                    }
                }
                Some(finished) = running.join_next() => done.push(finished),
                () = wake.notified() => more_due = true,
                () = tokio::time::sleep(options.poll) => more_due = true,
            }
            while let Some(finished) = running.try_join_next() {
                done.push(finished);
            }
            let mut closed = Vec::new();
            for (host, opened) in done.into_iter().flatten() {
                finished_since_claim += 1;
                waiting.finished(&host);
                if opened {
                    // The host's circuit opened: what waits for it goes
                    // back to the queue, to be claimed once it closes.
                    closed.extend(waiting.remove(&host));
                }
            }
            self.release(&closed).await;
        }
    }

    /// Gives claimed jobs back unsent: pending again at once, their claim
    /// not counted as an attempt.
    async fn release(&self, jobs: &[i64]) {
        if jobs.is_empty() {
            return;
        }
        let released = sqlx::query(
            "UPDATE delivery_jobs
             SET leased_until = NULL, attempts = greatest(attempts - 1, 0), updated_at = now()
             WHERE job_id = ANY($1) AND state = 'pending'",
        )
        .bind(jobs)
        .execute(&self.inner.pool)
        .await;
        if let Err(error) = released {
            // Their leases run out and they are claimed again.
            tracing::warn!(%error, jobs = jobs.len(), "could not give back claimed jobs");
        }
    }

    /// Claims up to `limit` due jobs, trusted hosts first, then one host's
    /// oldest job after another's, round after round, so that every host
    /// with work gets some at once; a host holds at most twice `per_host`
    /// (counting `held`, this process's jobs by host: `per_host` running,
    /// as many waiting), and one whose circuit has just closed holds one,
    /// a probe. The cost is one index probe per host with pending jobs,
    /// however long their queues.
    async fn claim(&self, limit: usize, held: &[(String, i32)]) -> Result<Vec<Job>, sqlx::Error> {
        let (hosts, counts): (Vec<&str>, Vec<i32>) =
            held.iter().map(|(host, n)| (host.as_str(), *n)).unzip();
        let options = self.inner.options;
        // A claim need not wait for its commit to reach the disk: should
        // the database lose it in a crash, the job is pending again and is
        // sent again, as after a worker's crash. Without this, every claim
        // waits for a WAL flush.
        let mut tx = self.inner.pool.begin().await?;
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
        let jobs = sqlx::query_as::<_, Job>(&format!(
            "WITH RECURSIVE pending_hosts (host) AS (
                 -- Every host with a pending job, one index probe each.
                 (SELECT host FROM delivery_jobs WHERE state = 'pending' ORDER BY host LIMIT 1)
                 UNION ALL
                 SELECT (SELECT j.host FROM delivery_jobs j
                         WHERE j.state = 'pending' AND j.host > p.host
                         ORDER BY j.host LIMIT 1)
                 FROM pending_hosts p WHERE p.host IS NOT NULL
             ), held AS (
                 SELECT * FROM unnest($1::text[], $2::int[]) AS b (host, n)
             ), hosts AS MATERIALIZED (
                 SELECT p.host, coalesce(d.trusted, false) AS trusted,
                        CASE WHEN coalesce(d.consecutive_failures, 0) >= $6 THEN 1
                             ELSE 2 * $3::int END - coalesce(b.n, 0) AS room
                 FROM pending_hosts p
                 LEFT JOIN delivery_hosts d ON d.host = p.host
                 LEFT JOIN held b ON b.host = p.host
                 WHERE p.host IS NOT NULL AND (d.open_until IS NULL OR d.open_until <= now())
             ), share AS (
                 -- Enough rounds for `limit` jobs should every host have work.
                 SELECT greatest(1, ceil(($4::bigint)::float8 / greatest(count(*), 1)))::int AS n
                 FROM hosts WHERE room > 0
             ), candidates AS (
                 SELECT c.job_id, c.next_attempt_at, h.trusted, c.round
                 FROM hosts h CROSS JOIN share s
                 CROSS JOIN LATERAL (
                     SELECT j.job_id, j.next_attempt_at,
                            row_number() OVER (ORDER BY j.next_attempt_at, j.job_id) AS round
                     FROM delivery_jobs j
                     WHERE j.host = h.host AND j.state = 'pending' AND j.next_attempt_at <= now()
                       AND (j.leased_until IS NULL OR j.leased_until < now())
                     ORDER BY j.next_attempt_at, j.job_id
                     LIMIT least(h.room, s.n)
                 ) c
                 WHERE h.room > 0
             ), chosen AS (
                 SELECT job_id, trusted FROM candidates
                 ORDER BY trusted DESC, round, next_attempt_at, job_id
                 LIMIT $4
             ), locked AS (
                 -- Checked again on the row as it is now: a job another
                 -- worker leased since this statement began is skipped.
                 SELECT j.job_id, c.trusted FROM delivery_jobs j JOIN chosen c USING (job_id)
                 WHERE j.state = 'pending'
                   AND (j.leased_until IS NULL OR j.leased_until < now())
                 FOR UPDATE OF j SKIP LOCKED
             )
             UPDATE delivery_jobs j
             SET leased_until = now() + make_interval(secs => $5),
                 attempts = j.attempts + 1,
                 updated_at = now()
             FROM locked, delivery_activities a
             WHERE j.job_id = locked.job_id AND a.event_id = j.event_id
             RETURNING j.job_id, j.event_id, j.inbox, j.host, j.personal, j.attempts,
                       j.created_at, a.actor, a.body, locked.trusted,
                       (SELECT signature FROM delivery_hosts h WHERE h.host = j.host),
                       coalesce((SELECT {class} FROM delivery_hosts h WHERE h.host = j.host),
                                'healthy') AS class",
            class = HostClass::SQL
        ))
        .bind(&hosts)
        .bind(&counts)
        .bind(i32::try_from(options.per_host).unwrap_or(i32::MAX / 2))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(options.lease.as_secs_f64())
        .bind(options.retry.open_after)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(jobs)
    }

    /// Sends one job and records the outcome; true when the failure opened
    /// its host's circuit.
    async fn deliver(&self, job: Job) -> bool {
        let (attempt, scheme, error) = match self.key(&job.actor).await {
            Ok(key) => self.post(&job, &key).await,
            Err(error) => (Attempt::Impossible, Scheme::Cavage, Some(error)),
        };
        if attempt == Attempt::Delivered {
            self.inner
                .outcomes
                .count(HostClass::parse(&job.class), Outcome::Delivered);
            // Most outcomes: recorded with others, in one statement. Until
            // then the job stays leased, so nobody sends it again.
            let success = Success {
                job_id: job.job_id,
                host: job.host,
                scheme,
            };
            if self.inner.delivered.send(success).is_err() {
                tracing::error!(
                    job = job.job_id,
                    "delivery outcomes can no longer be recorded"
                );
            }
            return false;
        }
        match self.record(&job, &attempt, error.as_deref()).await {
            Ok(opened) => opened,
            Err(error) => {
                // The lease runs out and the job is tried again.
                tracing::error!(job = job.job_id, %error, "could not record a delivery's outcome");
                false
            }
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
    /// to [`record_delivered`]); true when it opened the host's circuit.
    async fn record(
        &self,
        job: &Job,
        attempt: &Attempt,
        error: Option<&str>,
    ) -> Result<bool, sqlx::Error> {
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
        let (state, delay, outcome) = match next {
            Next::Done => ("delivered", None, Outcome::Delivered),
            Next::Retry(delay) => ("pending", Some(delay.as_secs_f64()), Outcome::Retry),
            Next::GiveUp => ("dead", None, Outcome::Dead),
        };
        self.inner
            .outcomes
            .count(HostClass::parse(&job.class), outcome);
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
        let opened = policy::host_failed(attempt) && self.host_failed(job, error).await?;
        if matches!(attempt, Attempt::Refused { status: 410, .. }) && job.personal {
            self.recipient_gone(job).await;
        }
        Ok(opened)
    }

    /// Counts a failure against the host; opens its circuit after enough
    /// (and says so), and marks it unavailable once it has failed for days.
    async fn host_failed(&self, job: &Job, error: Option<&str>) -> Result<bool, sqlx::Error> {
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
        Ok(open.is_some())
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

/// A claim under way: how many jobs it asked for, and what it got.
type Claim = Pin<Box<dyn Future<Output = (usize, Result<Vec<Job>, sqlx::Error>)> + Send>>;

/// Waits for the claim under way, if any.
async fn claim_done(
    claiming: &mut Option<Claim>,
) -> Option<(usize, Result<Vec<Job>, sqlx::Error>)> {
    match claiming {
        Some(claim) => Some(claim.await),
        None => None,
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

/// Claimed jobs waiting for a slot, by host. Hosts take turns (trusted
/// ones first), one job a turn, and a host with `per_host` jobs running
/// waits until one finishes: a slow instance holds at most that many of the
/// slots, and every instance with work is served in the same round.
#[derive(Debug)]
struct Waiting {
    per_host: usize,
    hosts: HashMap<String, HostJobs>,
    /// Hosts whose turn it may be: trusted ones, then the others. A host
    /// is here at most once; one without a job or a free slot when its
    /// turn comes is skipped.
    turns: [VecDeque<String>; 2],
    len: usize,
}

#[derive(Debug, Default)]
struct HostJobs {
    /// With the instant each was claimed.
    jobs: VecDeque<(Job, Instant)>,
    running: usize,
    in_turn: bool,
}

impl Waiting {
    fn new(per_host: usize) -> Self {
        Self {
            per_host,
            hosts: HashMap::new(),
            turns: [VecDeque::new(), VecDeque::new()],
            len: 0,
        }
    }

    /// Jobs waiting, over all hosts.
    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, job: Job, claimed: Instant) {
        let turn = usize::from(!job.trusted);
        let host = job.host.clone();
        let entry = self.hosts.entry(host.clone()).or_default();
        entry.jobs.push_back((job, claimed));
        self.len += 1;
        if !entry.in_turn && entry.running < self.per_host {
            entry.in_turn = true;
            self.turns[turn].push_back(host);
        }
    }

    /// The next job to send, counted as running until [`Self::finished`].
    fn next(&mut self) -> Option<(Job, Instant)> {
        for turn in 0..self.turns.len() {
            while let Some(host) = self.turns[turn].pop_front() {
                let Some(entry) = self.hosts.get_mut(&host) else {
                    continue;
                };
                entry.in_turn = false;
                if entry.running >= self.per_host {
                    continue;
                }
                let Some(next) = entry.jobs.pop_front() else {
                    if entry.running == 0 {
                        self.hosts.remove(&host);
                    }
                    continue;
                };
                entry.running += 1;
                self.len -= 1;
                if !entry.jobs.is_empty() && entry.running < self.per_host {
                    entry.in_turn = true;
                    self.turns[turn].push_back(host);
                }
                return Some(next);
            }
        }
        None
    }

    /// A job of `host` returned by [`Self::next`] is done.
    fn finished(&mut self, host: &str) {
        let Some(entry) = self.hosts.get_mut(host) else {
            return;
        };
        entry.running = entry.running.saturating_sub(1);
        if let Some((job, _)) = entry.jobs.front()
            && !entry.in_turn
        {
            entry.in_turn = true;
            self.turns[usize::from(!job.trusted)].push_back(host.to_owned());
        } else if entry.running == 0 && entry.jobs.is_empty() && !entry.in_turn {
            self.hosts.remove(host);
        }
    }

    /// Takes back every job waiting for `host`.
    fn remove(&mut self, host: &str) -> Vec<i64> {
        let Some(entry) = self.hosts.get_mut(host) else {
            return Vec::new();
        };
        self.len -= entry.jobs.len();
        entry.jobs.drain(..).map(|(job, _)| job.job_id).collect()
    }

    /// What this process holds of each host, running or waiting.
    fn held(&self) -> Vec<(String, i32)> {
        self.hosts
            .iter()
            .map(|(host, entry)| {
                let n = entry.running + entry.jobs.len();
                (host.clone(), i32::try_from(n).unwrap_or(i32::MAX))
            })
            .filter(|(_, n)| *n > 0)
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn job(job_id: i64, host: &str, trusted: bool) -> Job {
        Job {
            job_id,
            event_id: Uuid::nil(),
            inbox: format!("https://{host}/inbox"),
            host: host.to_owned(),
            personal: false,
            attempts: 1,
            created_at: Utc::now(),
            actor: "https://chorus.example/users/alice".to_owned(),
            body: "{}".to_owned(),
            trusted,
            signature: None,
            class: "healthy".to_owned(),
        }
    }

    /// Takes jobs until none is ready, returning their ids.
    fn drain(waiting: &mut Waiting) -> Vec<i64> {
        std::iter::from_fn(|| waiting.next().map(|(job, _)| job.job_id)).collect()
    }

    #[test]
    fn hosts_take_turns_trusted_ones_first_and_never_exceed_their_share() {
        let mut waiting = Waiting::new(2);
        let now = Instant::now();
        // A host with a long queue comes first, as claims return it.
        for id in 1..=5 {
            waiting.push(job(id, "busy.example", false), now);
        }
        waiting.push(job(6, "quiet.example", false), now);
        waiting.push(job(7, "trusted.example", true), now);
        waiting.push(job(8, "quiet.example", false), now);
        assert_eq!(waiting.len(), 8);
        // Trusted first, then one job a host a round; busy.example stops
        // at two running, so quiet.example is never stuck behind it.
        assert_eq!(drain(&mut waiting), [7, 1, 6, 2, 8]);
        assert_eq!(waiting.len(), 3);
        let mut held = waiting.held();
        held.sort();
        assert_eq!(
            held,
            [
                ("busy.example".to_owned(), 5),
                ("quiet.example".to_owned(), 2),
                ("trusted.example".to_owned(), 1),
            ]
        );
        // A finished job frees its host's slot, and its next job is ready.
        waiting.finished("busy.example");
        assert_eq!(drain(&mut waiting), [3]);
        waiting.finished("quiet.example");
        assert_eq!(drain(&mut waiting), Vec::<i64>::new());
    }

    #[test]
    fn a_hosts_waiting_jobs_are_taken_back_and_finished_hosts_forgotten() {
        let mut waiting = Waiting::new(1);
        let now = Instant::now();
        for id in 1..=3 {
            waiting.push(job(id, "down.example", false), now);
        }
        waiting.push(job(4, "up.example", false), now);
        assert_eq!(drain(&mut waiting), [1, 4]);
        assert_eq!(waiting.remove("down.example"), [2, 3]);
        assert_eq!(waiting.len(), 0);
        waiting.finished("down.example");
        assert_eq!(drain(&mut waiting), Vec::<i64>::new());
        waiting.finished("up.example");
        assert!(waiting.held().is_empty());
        assert!(waiting.hosts.is_empty(), "{:?}", waiting.hosts.keys());
        // Jobs claimed later are served as before.
        waiting.push(job(5, "down.example", false), now);
        assert_eq!(drain(&mut waiting), [5]);
    }
}
