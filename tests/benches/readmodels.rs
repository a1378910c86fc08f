//! Read-model benchmarks (issue 3): a log of 1,000,000 posts by 10,000
//! actors, seeded through the domain's decisions and the event store and
//! projected by the real projections; then
//! - the home-timeline GraphQL query's latency,
//! - mutation-to-visible lag at 200 mutations/s,
//! - GET throughput of an actor document and of WebFinger.
//!
//! Run with `cargo bench -p chorus-tests --bench readmodels`;
//! `CHORUS_BENCH_SCALE` (default 1.0) scales the seeded log.

/// The allocator of the `chorus` binary, which this benchmark runs in process.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use chorus_tests::bench::scale;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chorus_api::app::{App, PostInput};
use chorus_api::http::{AppState, router};
use chorus_domain::actors::{self, ActorState, Handle, RegisterActor};
use chorus_domain::posts::{self, Author, CreatePost, Visibility};
use chorus_domain::relationships::{self, Followee, RelationshipState};
use chorus_domain::{DomainEvent, EventStore, ExpectedVersion, NewEvent, StreamId};
use chorus_postgres::{PgEventStore, PrivateCluster};
use chorus_projections::Projections;
use hdrhistogram::Histogram;
use rand::Rng;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

fn new_events(events: &[DomainEvent]) -> Vec<NewEvent> {
    events
        .iter()
        .map(|e| e.to_new_event().unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Appends `streams` concurrently (16 writers).
async fn append_all(
    store: &PgEventStore,
    streams: Vec<(StreamId, Vec<NewEvent>)>,
) -> anyhow::Result<()> {
    let queue = Arc::new(std::sync::Mutex::new(streams));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            let queue = queue.clone();
            tokio::spawn(async move {
                loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                    let Some((stream, events)) = next else {
                        return anyhow::Ok(());
                    };
                    store.append(&stream, ExpectedVersion::Any, events).await?;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    chorus_tests::bench::on_durable_cluster("rm", run).await
}

async fn run(cluster: &PrivateCluster) -> anyhow::Result<()> {
    let pool = chorus_tests::bench::bench_database(cluster, 40).await?;
    // Seeding need not survive a crash: its commits skip the disk flush.
    let seed_pool = PgPoolOptions::new()
        .max_connections(20)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::query("SET synchronous_commit = off")
                    .execute(conn)
                    .await?;
                Ok(())
            })
        })
        .connect(&cluster.url("bench"))
        .await?;
    let seed_store = PgEventStore::new(seed_pool.clone());
    let store = PgEventStore::new(pool.clone());
    let base = "http://bench.chorus.test";
    let actors_n = scale(10_000);
    let posts_n = scale(1_000_000);
    // 100 viewers following 200 actors each at full scale, so a post fans
    // out to a couple of home timelines on average, as on a real server.
    let viewers = scale(100).min(actors_n);
    let follows_per_viewer = 200.min(actors_n - 1);
    println!(
        "Read-model benchmarks: {actors_n} actors, {posts_n} posts, {viewers} viewers following {follows_per_viewer} each"
    );

    // One key pair for every seeded actor: generating 10,000 RSA keys would
    // dominate the seeding and says nothing about the read path.
    let public_pem = chorus_api::keys::generate()?.public_pem;
    let now = chrono::Utc::now();
    let started = Instant::now();
    let mut actors_seeded = Vec::with_capacity(actors_n);
    let mut streams = Vec::with_capacity(actors_n);
    for i in 0..actors_n {
        let handle = Handle::parse(&format!("user{i}")).map_err(|e| anyhow::anyhow!("{e}"))?;
        let events = actors::register(
            &ActorState::default(),
            RegisterActor {
                actor_id: Uuid::now_v7(),
                handle: handle.clone(),
                display_name: None,
                locked: false,
                admin: false,
                public_key_pem: public_pem.clone(),
            },
            base,
            now,
        )?;
        if let Some(DomainEvent::ActorRegistered(e)) = events.first() {
            actors_seeded.push((e.uris.id.clone(), e.uris.followers.clone()));
        }
        streams.push((actors::actor_stream(&handle), new_events(&events)));
    }
    append_all(&seed_store, streams).await?;
    let mut streams = Vec::new();
    {
        let mut rng = rand::rng();
        for v in 0..viewers {
            let mut followed = std::collections::HashSet::new();
            while followed.len() < follows_per_viewer {
                let f = rng.random_range(0..actors_n);
                if f != v {
                    followed.insert(f);
                }
            }
            for f in followed {
                let (follower, followee) = (&actors_seeded[v].0, &actors_seeded[f].0);
                let events = relationships::follow(
                    &RelationshipState::default(),
                    follower,
                    &Followee {
                        uri: followee.clone(),
                        locked: false,
                        local: true,
                    },
                    &format!("{base}/activities/{}", Uuid::now_v7()),
                    &format!("{base}/activities/{}", Uuid::now_v7()),
                )?;
                streams.push((
                    relationships::relationship_stream(follower, followee),
                    new_events(&events),
                ));
            }
        }
    }
    append_all(&seed_store, streams).await?;
    let seeded = Arc::new(AtomicU64::new(0));
    let chunk = 20_000;
    let mut i = 0;
    while i < posts_n {
        let mut streams = Vec::with_capacity(chunk);
        for n in i..(i + chunk).min(posts_n) {
            let (uri, followers) = &actors_seeded[n % actors_n];
            let post_id = Uuid::now_v7();
            let events = posts::create(
                &Author {
                    uri: uri.clone(),
                    followers: followers.clone(),
                },
                CreatePost {
                    post_id,
                    text: format!("Post number {n} with a #hashtag and a little text to render."),
                    summary: None,
                    sensitive: false,
                    visibility: Visibility::Public,
                    mentions: vec![],
                    audience: None,
                },
                None,
                base,
                now,
            )?;
            streams.push((posts::post_stream(post_id), new_events(&events)));
        }
        append_all(&seed_store, streams).await?;
        i += chunk;
        seeded.store(i as u64, Ordering::Relaxed);
    }
    println!(
        "seeded {} events in {:.0} s",
        actors_n + viewers * follows_per_viewer + posts_n,
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let projections = Arc::new(Projections::start(store.clone()).await?);
    let mut head = chorus_domain::Position::START;
    loop {
        let page = store.read_all(head, 10_000).await?;
        match page.last() {
            Some(e) => head = e.position,
            None => break,
        }
    }
    if !projections.wait_for(head, Duration::from_secs(3600)).await {
        anyhow::bail!("projections did not catch up");
    }
    println!(
        "projected in {:.0} s ({:.0} events/s through all projections)",
        started.elapsed().as_secs_f64(),
        (actors_n + posts_n) as f64 / started.elapsed().as_secs_f64()
    );
    sqlx::query("VACUUM ANALYZE").execute(&pool).await?;

    // The server, on its own runtime threads, as in `chorus serve`.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    listener.set_nonblocking(true)?;
    let url = url::Url::parse(base)?;
    let state = AppState::with_projections(pool.clone(), store.clone(), &url, projections.clone());
    tokio::spawn(async move {
        if let Ok(listener) = tokio::net::TcpListener::from_std(listener) {
            let _ = axum::serve(listener, router(state)).await;
        }
    });
    let server = format!("http://127.0.0.1:{port}");
    let app = App::new(store.clone(), base);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;

    // Home timeline latency: tokens for the viewers, then sequential queries.
    let mut tokens = Vec::new();
    for (uri, _) in actors_seeded.iter().take(viewers) {
        let actor = app
            .local_actor_by_uri(uri)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .context("viewer")?;
        tokens.push(
            chorus_api::tokens::create(&pool, actor.actor_id, uri, None)
                .await?
                .secret,
        );
    }
    let query = json!({ "query": "{ timeline(kind: HOME, first: 20) { edges { cursor node { post { id content published author { handle displayName } favoritesCount reblogsCount } rebloggedBy { handle } } } pageInfo { hasNextPage } } }" });
    let mut hist = Histogram::<u64>::new(3)?;
    let requests = 2000;
    for r in 0..requests + 200 {
        let t = Instant::now();
        let response: serde_json::Value = client
            .post(format!("{server}/graphql"))
            .bearer_auth(&tokens[r % tokens.len()])
            .json(&query)
            .send()
            .await?
            .json()
            .await?;
        let elapsed = t.elapsed();
        if response.get("errors").is_some()
            || response["data"]["timeline"]["edges"]
                .as_array()
                .is_none_or(Vec::is_empty)
        {
            anyhow::bail!("bad timeline response: {response}");
        }
        if r >= 200 {
            hist.record(elapsed.as_micros() as u64)?;
        }
    }
    println!(
        "home timeline (GraphQL over HTTP, 20 items): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(&hist, 0.5),
        ms(&hist, 0.99),
        hist.max() as f64 / 1000.0
    );
    let timeline_p99 = ms(&hist, 0.99);

    // Mutation-to-visible lag at 200 mutations/s: one second of warm-up
    // (not recorded: first use of each statement), then 15 s recorded.
    let rate = 200u64;
    let warm_up = rate as usize;
    let total = warm_up + 15 * rate as usize;
    let lags = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new(3)?));
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut tasks = Vec::with_capacity(total);
    for n in 0..total {
        tick.tick().await;
        let app = app.clone();
        let projections = projections.clone();
        let lags = lags.clone();
        let actor = app
            .local_actor_by_uri(&actors_seeded[n % viewers].0)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .context("actor")?;
        tasks.push(tokio::spawn(async move {
            let target = app
                .create_post(
                    &actor,
                    PostInput {
                        text: format!("live post {n}"),
                        summary: None,
                        sensitive: false,
                        visibility: Visibility::Public,
                        in_reply_to: None,
                        audience: None,
                    },
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let committed = Instant::now();
            let position = target.position.context("no position")?;
            if !projections
                .wait_for(position, Duration::from_secs(30))
                .await
            {
                anyhow::bail!("not visible within 30 s");
            }
            let lag = committed.elapsed().as_micros() as u64;
            if n >= warm_up {
                lags.lock().unwrap_or_else(|e| e.into_inner()).record(lag)?;
            }
            anyhow::Ok((n, lag))
        }));
    }
    let mut windows = vec![Vec::new(); 16];
    for t in tasks {
        let (n, lag) = t.await??;
        if n >= warm_up {
            windows[(n - warm_up) / rate as usize].push(lag);
        }
    }
    let worst_window = windows
        .iter_mut()
        .filter(|w| !w.is_empty())
        .map(|w| {
            w.sort_unstable();
            w[w.len() * 99 / 100] as f64 / 1000.0
        })
        .fold(0.0, f64::max);
    let lags = lags.lock().unwrap_or_else(|e| e.into_inner()).clone();
    println!(
        "mutation-to-visible lag at {rate}/s over {} posts (after {warm_up} of warm-up): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; worst one-second window p99 {worst_window:.2} ms",
        total - warm_up,
        ms(&lags, 0.5),
        ms(&lags, 0.99),
        lags.max() as f64 / 1000.0
    );

    // GET throughput, from `wrk` (a C load generator, `apt-get install wrk`)
    // when installed, else from 32 keep-alive clients in this process (which
    // then compete with the server for the same two cores).
    let mut rates = Vec::new();
    let domain = "bench.chorus.test";
    for (name, path, accept) in [
        (
            "actor document",
            "/users/user1".to_owned(),
            "application/activity+json",
        ),
        (
            "WebFinger",
            format!("/.well-known/webfinger?resource=acct:user1@{domain}"),
            "application/jrd+json",
        ),
    ] {
        let url = format!("{server}{path}");
        let check = client.get(&url).header("Accept", accept).send().await?;
        if !check.status().is_success() {
            anyhow::bail!("GET {url}: {}", check.status());
        }
        let wrk = tokio::process::Command::new("wrk")
            .args([
                "-t",
                "1",
                "-c",
                "32",
                "-d",
                "5s",
                "-H",
                &format!("Accept: {accept}"),
                &url,
            ])
            .output()
            .await;
        let (rate, how) = match wrk {
            Ok(output) if output.status.success() => {
                let text = String::from_utf8_lossy(&output.stdout).to_string();
                let non_2xx = text
                    .lines()
                    .find(|l| l.contains("Non-2xx"))
                    .map(str::to_owned);
                if let Some(line) = non_2xx {
                    anyhow::bail!("wrk saw errors for {url}: {line}");
                }
                let rate = text
                    .lines()
                    .find_map(|l| l.strip_prefix("Requests/sec:"))
                    .and_then(|r| r.trim().parse::<f64>().ok())
                    .context("no rate in wrk's output")?;
                (rate, "wrk, 32 connections")
            }
            _ => (
                builtin_load(&client, &url, accept).await?,
                "built-in client, 32 connections",
            ),
        };
        println!("GET {name}: {rate:.0} requests/s ({how})");
        rates.push((name, rate));
    }

    println!("\n| benchmark | measured | target | met |\n|---|---|---|---|");
    println!(
        "| home timeline GraphQL query, p99 | {timeline_p99:.2} ms | ≤ 10 ms | {} |",
        if timeline_p99 <= 10.0 {
            "yes"
        } else {
            "**no**"
        }
    );
    let lag = ms(&lags, 0.99);
    println!(
        "| mutation-to-visible lag at 200/s, p99 | {lag:.2} ms | ≤ 50 ms | {} |",
        if lag <= 50.0 { "yes" } else { "**no**" }
    );
    for (name, rate) in &rates {
        println!(
            "| GET {name} | {rate:.0} req/s | ≥ 5,000 req/s | {} |",
            if *rate >= 5000.0 { "yes" } else { "**no**" }
        );
    }
    Ok(())
}

/// Requests/s from 32 keep-alive clients in this process for 5 s.
async fn builtin_load(
    client: &reqwest::Client,
    url: &str,
    accept: &'static str,
) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(5);
    let workers: Vec<_> = (0..32)
        .map(|_| {
            let client = client.clone();
            let url = url.to_owned();
            let done = done.clone();
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let response = client.get(&url).header("Accept", accept).send().await?;
                    if !response.status().is_success() {
                        anyhow::bail!("GET {url}: {}", response.status());
                    }
                    response.bytes().await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for w in workers {
        w.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / 5.0)
}
