//! Delivery (issue 5): one post by an actor with 10,000 remote followers on
//! 500 instances (loopback inboxes on 127.0.0.1, one port per instance,
//! each verifying every signature), through the real command, planner,
//! durable queue and senders of an in-process Chorus on a durable private
//! cluster:
//! - planning time (post appended → every job in the queue), target < 2 s;
//! - with shared inboxes (500 POSTs) and with personal inboxes only
//!   (10,000 POSTs): deliveries/s against the machine's RSA-2048 signing
//!   rate on all cores (aws-lc, measured in the same run; target ≥ 60%);
//! - memory before, after and at its peak;
//! - a server's (an ActivityPub Group's) message to 5,000 members on 250
//!   instances, announced twice to each: deliveries/s against the same
//!   signing rate and the ordinary post's rate;
//! - sustained: half the measured rate to 50 healthy instances while 5
//!   more hang or answer 500; the healthy ones' delay from append to
//!   arrival, target p99 ≤ 1 s.
//!
//! The followers are written straight into the read models the planner
//! reads (actors, follows); everything after the post is the product's.
//!
//! Run with `cargo bench -p chorus-tests --bench delivery`;
//! `CHORUS_BENCH_SCALE` (default 1.0) scales followers, instances and the
//! sustained phase's duration.

/// The allocator of the `chorus` binary, which this benchmark runs in process.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use chorus_tests::bench::scale;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeyPair;
use aws_lc_rs::signature;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use chorus_api::app::{App, LocalActor, PostInput};
use chorus_api::config::FederationSettings;
use chorus_api::federation::Federation;
use chorus_api::federation::delivery::{Delivery, sender_options};
use chorus_domain::Position;
use chorus_domain::posts::Visibility;
use chorus_domain::signatures::{self, PublicKey, RequestParts};
use chorus_postgres::{PgEventStore, PrivateCluster};
use chorus_projections::Projections;
use hdrhistogram::Histogram;
use sqlx::PgPool;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    chorus_tests::bench::on_durable_cluster("delivery", run).await
}

/// What every bench inbox shares: the key it trusts, and what arrived.
#[derive(Default)]
struct Received {
    key: Mutex<Option<(String, PublicKey)>>,
    verified: AtomicU64,
    refused: AtomicU64,
    /// Activity id → arrival instants, for the sustained phase.
    arrivals: Mutex<HashMap<String, Vec<Instant>>>,
    record_arrivals: std::sync::atomic::AtomicBool,
}

/// How a bench inbox answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Healthy,
    Hang,
    Fail,
}

#[derive(Clone)]
struct Inbox {
    authority: String,
    behaviour: Behaviour,
    received: Arc<Received>,
}

/// Starts an inbox server on 127.0.0.1; returns its authority.
async fn inbox(behaviour: Behaviour, received: Arc<Received>) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let authority = listener.local_addr()?.to_string();
    let state = Inbox {
        authority: authority.clone(),
        behaviour,
        received,
    };
    let app = Router::new().fallback(post(receive)).with_state(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(authority)
}

async fn receive(
    State(inbox): State<Inbox>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    match inbox.behaviour {
        Behaviour::Hang => {
            tokio::time::sleep(Duration::from_secs(600)).await;
            return StatusCode::ACCEPTED;
        }
        Behaviour::Fail => return StatusCode::INTERNAL_SERVER_ERROR,
        Behaviour::Healthy => {}
    }
    let arrived = Instant::now();
    let headers: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let parts = RequestParts {
        method: "POST",
        scheme: "http",
        authority: &inbox.authority,
        path_and_query: path,
        headers: &headers,
        body: &body,
    };
    let key = inbox
        .received
        .key
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let verified = key.is_some_and(|(key_id, key)| {
        signatures::parse(&parts).is_ok_and(|s| {
            s.key_id() == key_id
                && s.check_policy(&parts, chrono::Utc::now(), chrono::TimeDelta::hours(1))
                    .is_ok()
                && s.verify(&parts, &key).is_ok()
        })
    });
    let received = &inbox.received;
    if !verified {
        received.refused.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED;
    }
    received.verified.fetch_add(1, Ordering::Relaxed);
    if received.record_arrivals.load(Ordering::Relaxed) {
        let id = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_owned))
            .unwrap_or_default();
        received
            .arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default()
            .push(arrived);
    }
    StatusCode::ACCEPTED
}

/// Writes `n` remote followers of `followee`, spread over `hosts`, into the
/// actors and follows read models; with a shared inbox per host or not.
async fn followers(
    pool: &PgPool,
    followee: &str,
    hosts: &[String],
    n: usize,
    shared: bool,
    tag: &str,
) -> anyhow::Result<()> {
    let (mut uris, mut domains, mut inboxes, mut shared_inboxes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let host = &hosts[i % hosts.len()];
        let uri = format!("http://{host}/users/{tag}{i}");
        inboxes.push(format!("{uri}/inbox"));
        shared_inboxes.push(shared.then(|| format!("http://{host}/inbox")));
        domains.push(host.clone());
        uris.push(uri);
    }
    sqlx::query(
        "INSERT INTO actors (uri, handle, domain, local, inbox, shared_inbox, registered_at,
                             position_major, position_minor)
         SELECT uri, 'f' || ord, domain, false, inbox, shared_inbox, now(), 0, 0
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
              WITH ORDINALITY AS f (uri, domain, inbox, shared_inbox, ord)",
    )
    .bind(&uris)
    .bind(&domains)
    .bind(&inboxes)
    .bind(&shared_inboxes)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO follows (follower, followee, state, follow_id, created_at, updated_at,
                              position_major, position_minor)
         SELECT uri, $2, 'accepted', uri || '#follow', now(), now(), 0, 0
         FROM unnest($1::text[]) AS f (uri)",
    )
    .bind(&uris)
    .bind(followee)
    .execute(pool)
    .await?;
    Ok(())
}

/// RSA-2048 PKCS#1 v1.5 SHA-256 signatures per second on all cores.
fn rsa_sign_rate() -> f64 {
    let pair =
        KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap_or_else(|e| panic!("{e}"));
    let pair = Arc::new(pair);
    let duration = Duration::from_secs(2);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let pair = pair.clone();
            std::thread::spawn(move || {
                let message = b"(request-target): post /users/f1/inbox\nhost: 127.0.0.1:4000\ndate: Mon, 23 Nov 2026 19:05:11 GMT\ndigest: SHA-256=x\ncontent-type: application/activity+json";
                let rng = SystemRandom::new();
                let mut sig = vec![0; pair.public_modulus_len()];
                let started = Instant::now();
                let mut n = 0u64;
                while started.elapsed() < duration {
                    if pair
                        .sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)
                        .is_ok()
                    {
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    total as f64 / duration.as_secs_f64()
}

/// This process's resident memory now and at its peak, in MiB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn count(pool: &PgPool, sql: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sql).fetch_one(pool).await?)
}

struct Chorus {
    pool: PgPool,
    app: App,
    delivery: Delivery,
}

impl Chorus {
    async fn post(&self, author: &LocalActor, text: String) -> anyhow::Result<(Position, String)> {
        let target = self
            .app
            .create_post(
                author,
                PostInput {
                    text,
                    summary: None,
                    sensitive: false,
                    visibility: Visibility::Public,
                    in_reply_to: None,
                    audience: None,
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let position = target
            .position
            .ok_or_else(|| anyhow::anyhow!("the post appended nothing"))?;
        Ok((position, format!("{}/activity", target.uri)))
    }

    /// Posts once as `author` and times planning and delivery of its
    /// `expected` jobs.
    async fn one_post(
        &self,
        author: &LocalActor,
        received: &Received,
        expected: u64,
    ) -> anyhow::Result<(f64, f64)> {
        let before = received.verified.load(Ordering::Relaxed);
        let started = Instant::now();
        let (position, _) = self.post(author, "to every follower".into()).await?;
        anyhow::ensure!(
            self.delivery
                .planner
                .reached(position, Duration::from_secs(60))
                .await,
            "planning took over a minute"
        );
        let planned = started.elapsed().as_secs_f64();
        let deadline = Instant::now() + Duration::from_secs(300);
        while received.verified.load(Ordering::Relaxed) - before < expected {
            anyhow::ensure!(Instant::now() < deadline, "not delivered within 5 min");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok((planned, started.elapsed().as_secs_f64()))
    }
}

async fn run(cluster: &PrivateCluster) -> anyhow::Result<()> {
    let pool = chorus_tests::bench::bench_database(cluster, 32).await?;
    let base = "http://127.0.0.1:1".to_owned();
    let store = PgEventStore::new(pool.clone());
    let projections = Arc::new(Projections::start(store.clone()).await?);
    let settings = FederationSettings {
        allow_private_addresses: true,
        ..FederationSettings::default()
    };
    let federation = Federation::new(&settings, pool.clone(), store.clone(), &base).await?;
    let delivery = Delivery::start_with(
        store.clone(),
        &federation,
        projections.clone(),
        &base,
        sender_options(&settings),
    )
    .await?;
    let app = App::new(store.clone(), &base);
    let mut authors = Vec::new();
    for handle in ["alice", "bob", "carol"] {
        let created = app.create_account(handle, None, false, false).await?;
        let actor = app
            .local_actor_by_uri(&created.actor.uri)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .ok_or_else(|| anyhow::anyhow!("{handle} is not there"))?;
        authors.push(actor);
    }
    let chorus = Chorus {
        pool: pool.clone(),
        app,
        delivery,
    };
    let followers_n = scale(10_000);
    let instances = scale(500);
    let received = Arc::new(Received::default());
    let mut hosts = Vec::new();
    for _ in 0..instances {
        hosts.push(inbox(Behaviour::Healthy, received.clone()).await?);
    }
    let [alice, bob, carol] = [&authors[0], &authors[1], &authors[2]];
    followers(&pool, &alice.uri, &hosts, followers_n, true, "s").await?;
    followers(&pool, &bob.uri, &hosts, followers_n, false, "p").await?;
    projections
        .wait_for(
            chorus_tests::app::last_committed(&pool).await,
            Duration::from_secs(60),
        )
        .await;

    // The bench inboxes trust the authors' keys (one key each: any works).
    let keys: Vec<(String, String)> =
        sqlx::query_as("SELECT key_id, public_key_pem FROM actors WHERE local ORDER BY handle")
            .fetch_all(&pool)
            .await?;
    anyhow::ensure!(keys.len() == 3, "the read models lack the authors");

    let sign_rate = rsa_sign_rate();
    println!(
        "RSA-2048 signing (aws-lc, {} threads): {sign_rate:.0} signatures/s",
        std::thread::available_parallelism().map_or(2, |n| n.get())
    );
    let (rss_before, _) = memory();

    // 1a: shared inboxes, one POST per instance.
    let trust = |handle: usize| {
        *received.key.lock().unwrap_or_else(|e| e.into_inner()) = Some((
            keys[handle].0.clone(),
            PublicKey::from_pem(&keys[handle].1).unwrap_or_else(|e| panic!("{e}")),
        ));
    };
    trust(0);
    let (planned, total) = chorus.one_post(alice, &received, instances as u64).await?;
    let jobs = count(&pool, "SELECT count(*) FROM delivery_jobs").await?;
    println!(
        "shared inboxes: {followers_n} followers on {instances} instances → {jobs} POSTs; planned in {planned:.3} s (target < 2 s), all delivered in {total:.2} s ({:.0} deliveries/s)",
        jobs as f64 / (total - planned).max(1e-9)
    );

    // 1b: personal inboxes, one POST per follower; twice, to see memory
    // stay flat.
    trust(1);
    let mut rate = 0.0;
    for run in 1..=2 {
        let (planned, total) = chorus.one_post(bob, &received, followers_n as u64).await?;
        rate = followers_n as f64 / (total - planned).max(1e-9);
        let (rss, peak) = memory();
        println!(
            "personal inboxes, post {run}: {followers_n} POSTs; planned in {planned:.3} s (target < 2 s), delivered in {:.2} s after planning: {rate:.0} deliveries/s = {:.0}% of the signing rate (target ≥ 60%); memory {rss:.0} MiB (peak {peak:.0} MiB, {rss_before:.0} MiB before the first post)",
            total - planned,
            100.0 * rate / sign_rate
        );
    }
    // 1c: a server (an ActivityPub Group) with members on their own
    // inboxes announces one message twice (the whole Create, FEP-1b12, and
    // the post alone): the same throughput target as an ordinary post.
    // carol, its owner, has no followers yet: only the server's
    // announcements go out.
    let members_n = scale(5_000);
    let member_hosts = &hosts[..scale(250).min(hosts.len())];
    let server = chorus
        .app
        .create_server(
            carol,
            chorus_api::app::ServerInput {
                name: "bench".into(),
                display_name: None,
                description: None,
                membership: chorus_domain::servers::Membership::Open,
                open_replies: false,
                channels: vec![],
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    followers(
        &pool,
        &server.server.uri,
        member_hosts,
        members_n,
        false,
        "m",
    )
    .await?;
    projections
        .wait_for(
            chorus_tests::app::last_committed(&pool).await,
            Duration::from_secs(60),
        )
        .await;
    let (group_key_id, group_key): (String, String) =
        sqlx::query_as("SELECT key_id, public_key_pem FROM actors WHERE uri = $1")
            .bind(&server.server.uri)
            .fetch_one(&pool)
            .await?;
    *received.key.lock().unwrap_or_else(|e| e.into_inner()) =
        Some((group_key_id, PublicKey::from_pem(&group_key)?));
    let before = received.verified.load(Ordering::Relaxed);
    let started = Instant::now();
    let message = chorus
        .app
        .post_message(
            carol,
            "bench",
            None,
            PostInput {
                text: "to every member".into(),
                summary: None,
                sensitive: false,
                visibility: Visibility::Public,
                in_reply_to: None,
                audience: None,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let position = message
        .position
        .ok_or_else(|| anyhow::anyhow!("the message appended nothing"))?;
    anyhow::ensure!(
        chorus
            .delivery
            .planner
            .reached(position, Duration::from_secs(60))
            .await,
        "planning took over a minute"
    );
    let planned = started.elapsed().as_secs_f64();
    let expected = 2 * members_n as u64;
    let deadline = Instant::now() + Duration::from_secs(300);
    while received.verified.load(Ordering::Relaxed) - before < expected {
        anyhow::ensure!(Instant::now() < deadline, "not delivered within 5 min");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let total = started.elapsed().as_secs_f64();
    let group_rate = expected as f64 / (total - planned).max(1e-9);
    println!(
        "server message: {members_n} members on {} instances, 2 announcements each → {expected} POSTs; planned in {planned:.3} s, delivered in {:.2} s after planning: {group_rate:.0} deliveries/s = {:.0}% of the signing rate (target ≥ 60%), {:.2}x an ordinary post's rate",
        member_hosts.len(),
        total - planned,
        100.0 * group_rate / sign_rate,
        group_rate / rate
    );

    let refused = received.refused.load(Ordering::Relaxed);
    anyhow::ensure!(refused == 0, "{refused} deliveries failed verification");
    // Arrival comes before the outcome is recorded: give the last batch
    // a moment.
    let mut undelivered = i64::MAX;
    for _ in 0..500 {
        undelivered = count(
            &pool,
            "SELECT count(*) FROM delivery_jobs WHERE state <> 'delivered'",
        )
        .await?;
        if undelivered == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("jobs not delivered: {undelivered}");

    // 2: sustained, half that rate to 50 healthy instances, 5 failing.
    let healthy_n = 50;
    let mut healthy = Vec::new();
    for _ in 0..healthy_n {
        healthy.push(inbox(Behaviour::Healthy, received.clone()).await?);
    }
    let mut failing = Vec::new();
    for n in 0..5 {
        let behaviour = if n < 3 {
            Behaviour::Hang
        } else {
            Behaviour::Fail
        };
        failing.push(inbox(behaviour, received.clone()).await?);
    }
    followers(&pool, &carol.uri, &healthy, healthy_n, true, "h").await?;
    followers(&pool, &carol.uri, &failing, failing.len(), true, "x").await?;
    projections
        .wait_for(
            chorus_tests::app::last_committed(&pool).await,
            Duration::from_secs(60),
        )
        .await;
    trust(2);
    received.record_arrivals.store(true, Ordering::Relaxed);
    let offered = rate / 2.0;
    let posts_per_second = offered / healthy_n as f64;
    let seconds = scale(20) as f64;
    let posts = (posts_per_second * seconds).ceil() as usize;
    let interval = Duration::from_secs_f64(1.0 / posts_per_second);
    let mut appended: Vec<(String, Instant)> = Vec::new();
    let mut ticker = tokio::time::interval(interval);
    for n in 0..posts {
        ticker.tick().await;
        let at = Instant::now();
        let (_, activity) = chorus.post(carol, format!("sustained {n}")).await?;
        appended.push((activity, at));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut delays = Histogram::<u64>::new(3)?;
    loop {
        let arrivals = received
            .arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let arrived: usize = appended
            .iter()
            .map(|(id, _)| arrivals.get(id).map_or(0, Vec::len))
            .sum();
        if arrived >= posts * healthy_n || Instant::now() > deadline {
            for (id, at) in &appended {
                for arrival in arrivals.get(id).into_iter().flatten() {
                    let micros = arrival.saturating_duration_since(*at).as_micros();
                    delays.record(u64::try_from(micros).unwrap_or(u64::MAX))?;
                }
            }
            println!(
                "sustained: {posts} posts over {seconds:.0} s to {healthy_n} healthy + {} failing instances (3 hang, 2 answer 500): {offered:.0} healthy deliveries/s offered, {arrived} of {} arrived",
                failing.len(),
                posts * healthy_n
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ms = |q: f64| delays.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "healthy delay from append to arrival: p50 {:.0} ms, p99 {:.0} ms (target ≤ 1000 ms), max {:.0} ms",
        ms(0.5),
        ms(0.99),
        delays.max() as f64 / 1000.0
    );
    let failing_hosts: Vec<(String, i32, Option<chrono::DateTime<chrono::Utc>>)> = sqlx::query_as(
        "SELECT host, consecutive_failures, open_until FROM delivery_hosts
             WHERE consecutive_failures > 0 ORDER BY host",
    )
    .fetch_all(&chorus.pool)
    .await?;
    println!(
        "failing hosts recorded: {} (circuits open: {})",
        failing_hosts.len(),
        failing_hosts.iter().filter(|h| h.2.is_some()).count()
    );
    Ok(())
}
