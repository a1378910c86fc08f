//! Event store benchmarks against raw Postgres baselines measured in the same
//! run, on a fresh private cluster with durable settings (fsync on).
//!
//! Run with `cargo bench -p chorus-tests --bench eventstore`; set
//! `CHORUS_BENCH_SCALE` (default 1.0) to scale the workloads.

/// The allocator of the `chorus` binary, which this benchmark runs in process.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use chorus_tests::bench::scale;
use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chorus_domain::{EventId, EventStore, ExpectedVersion, NewEvent, Position, StreamId};
use chorus_postgres::{ClusterOptions, ClusterProfile, PgEventStore, PrivateCluster};
use futures::StreamExt;
use hdrhistogram::Histogram;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

/// A Create{Note}-sized payload, like most events Chorus stores.
fn payload(n: usize) -> serde_json::Value {
    serde_json::json!({
        "activity": {
            "@context": "https://www.w3.org/ns/activitystreams",
            "id": format!("https://bench.example/users/alice/statuses/{n}/activity"),
            "type": "Create",
            "actor": "https://bench.example/users/alice",
            "to": ["https://www.w3.org/ns/activitystreams#Public"],
            "cc": ["https://bench.example/users/alice/followers"],
            "object": {
                "id": format!("https://bench.example/users/alice/statuses/{n}"),
                "type": "Note",
                "content": "<p>Benchmarking the event log with a post of ordinary length, about as long as most are.</p>",
                "published": "2026-11-23T12:00:00Z",
                "attributedTo": "https://bench.example/users/alice",
                "tag": [{ "type": "Hashtag", "name": "#bench", "href": "https://bench.example/tags/bench" }]
            }
        }
    })
}

fn new_event(n: usize) -> NewEvent {
    NewEvent::new("PostCreated", 1, &payload(n)).unwrap_or_else(|e| panic!("{e}"))
}

fn stream(name: String) -> StreamId {
    StreamId::new(name).unwrap_or_else(|e| panic!("{e}"))
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

struct Report {
    rows: Vec<(String, String, String, String, bool)>,
}

impl Report {
    /// Records a comparison. `ours` and `baseline` hold one rate per round,
    /// measured back to back; the ratio is the median of the rounds' ratios,
    /// which cancels most of the drift of a shared machine.
    fn ratio(&mut self, name: &str, ours: &[f64], baseline: &[f64], unit: &str, target: f64) {
        let ratio = median(ours.iter().zip(baseline).map(|(o, b)| o / b).collect());
        self.rows.push((
            name.to_owned(),
            format!("{:.0} {unit}", median(ours.to_vec())),
            format!("{:.0} {unit}", median(baseline.to_vec())),
            format!("{:.0}% (target ≥ {:.0}%)", ratio * 100.0, target * 100.0),
            ratio >= target,
        ));
    }

    fn print(&self) -> bool {
        println!("\n| benchmark | event store | baseline | ratio / result | met |");
        println!("|---|---|---|---|---|");
        for (name, ours, base, ratio, ok) in &self.rows {
            println!(
                "| {name} | {ours} | {base} | {ratio} | {} |",
                if *ok { "yes" } else { "**no**" }
            );
        }
        self.rows.iter().all(|r| r.4)
    }
}

const RAW_INSERT: &str = "INSERT INTO raw_events (transaction_id, event_id, stream_id, stream_version, event_type, schema_version, payload, metadata)
     SELECT pg_current_xact_id()::text::bigint, u.id, u.s, u.v, u.t, 1, u.p::jsonb, u.m::jsonb
     FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[]) AS u (id, s, v, t, p, m)";

async fn raw_insert(
    pool: &PgPool,
    events: &[NewEvent],
    stream: &str,
    first_version: i64,
) -> anyhow::Result<()> {
    let ids: Vec<Uuid> = events.iter().map(|e| e.id.0).collect();
    let streams: Vec<&str> = events.iter().map(|_| stream).collect();
    let versions: Vec<i64> = (0..events.len() as i64)
        .map(|i| first_version + i)
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let payloads: Vec<&str> = events.iter().map(|e| e.payload.get()).collect();
    let metadata: Vec<&str> = events.iter().map(|_| "{}").collect();
    sqlx::query(RAW_INSERT)
        .bind(ids)
        .bind(streams)
        .bind(versions)
        .bind(types)
        .bind(payloads)
        .bind(metadata)
        .execute(pool)
        .await?;
    Ok(())
}

/// Batched appends of 100 events, one caller, vs the same rows as a raw multi-row INSERT.
async fn batched(pool: &PgPool, store: &PgEventStore, report: &mut Report) -> anyhow::Result<()> {
    let batches = scale(200);
    let mut ours = Vec::new();
    let mut raw = Vec::new();
    for round in 0..5 {
        let data: Vec<Vec<NewEvent>> = (0..batches)
            .map(|b| (0..100).map(|i| new_event(b * 100 + i)).collect())
            .collect();
        let start = Instant::now();
        for (b, batch) in data.iter().enumerate() {
            raw_insert(pool, batch, &format!("raw-batch-{round}-{b}"), 1).await?;
        }
        raw.push((batches * 100) as f64 / start.elapsed().as_secs_f64());

        let data: Vec<Vec<NewEvent>> = (0..batches)
            .map(|b| (0..100).map(|i| new_event(b * 100 + i)).collect())
            .collect();
        let start = Instant::now();
        for (b, batch) in data.into_iter().enumerate() {
            store
                .append(
                    &stream(format!("batch-{round}-{b}")),
                    ExpectedVersion::NoStream,
                    batch,
                )
                .await?;
        }
        ours.push((batches * 100) as f64 / start.elapsed().as_secs_f64());
    }
    println!("batched append, events/s per round: store {ours:.0?}, raw {raw:.0?}");
    report.ratio(
        "batched append (100 events per call)",
        &ours,
        &raw,
        "events/s",
        0.80,
    );
    Ok(())
}

/// Single-event appends from 16 concurrent tasks, each committing alone.
async fn concurrent_single(
    pool: &PgPool,
    store: &PgEventStore,
    report: &mut Report,
) -> anyhow::Result<()> {
    const TASKS: usize = 16;
    let per_task = scale(250);
    let mut ours = Vec::new();
    let mut raw = Vec::new();
    for round in 0..5 {
        // Alternate which side goes first, so drift in the machine's speed
        // favours neither.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for ours_side in order {
            let start = Instant::now();
            let tasks: Vec<_> = (0..TASKS)
                .map(|t| {
                    let pool = pool.clone();
                    let store = store.clone();
                    tokio::spawn(async move {
                        let s = stream(format!("single-{round}-{t}"));
                        let raw_stream = format!("raw-single-{round}-{t}");
                        for i in 0..per_task {
                            if ours_side {
                                store
                                    .append(&s, ExpectedVersion::Any, vec![new_event(i)])
                                    .await?;
                            } else {
                                raw_insert(&pool, &[new_event(i)], &raw_stream, i as i64 + 1)
                                    .await?;
                            }
                        }
                        anyhow::Ok(())
                    })
                })
                .collect();
            for t in tasks {
                t.await??;
            }
            let rate = (TASKS * per_task) as f64 / start.elapsed().as_secs_f64();
            if ours_side {
                ours.push(rate);
            } else {
                raw.push(rate);
            }
        }
    }
    println!("single appends x16, events/s per round: store {ours:.0?}, raw {raw:.0?}");
    report.ratio(
        "single-event appends, 16 concurrent tasks",
        &ours,
        &raw,
        "events/s",
        0.75,
    );
    Ok(())
}

/// Reading `$all` from the start vs `psql \copy` of the same table.
async fn read_all(
    cluster: &PrivateCluster,
    db: &str,
    pool: &PgPool,
    store: &PgEventStore,
    report: &mut Report,
) -> anyhow::Result<()> {
    let target = scale(200_000);
    let have: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await?;
    let mut n = have as usize;
    while n < target {
        let batch: Vec<NewEvent> = (0..1000).map(|i| new_event(n + i)).collect();
        store
            .append(
                &stream(format!("fill-{n}")),
                ExpectedVersion::NoStream,
                batch,
            )
            .await?;
        n += 1000;
    }
    sqlx::query("VACUUM ANALYZE events").execute(pool).await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await?;

    let copy_rate = || -> anyhow::Result<f64> {
        let start = Instant::now();
        let status = Command::new("psql")
            .args([
                &cluster.url(db),
                "-X",
                "-q",
                "-c",
                "\\copy events TO '/dev/null'",
            ])
            .status()
            .context("running psql")?;
        if !status.success() {
            bail!("psql \\copy failed: {status}");
        }
        Ok(total as f64 / start.elapsed().as_secs_f64())
    };
    let read_rate = || async {
        let start = Instant::now();
        let mut after = Position::START;
        let mut read = 0usize;
        loop {
            let page = store.read_all(after, 5000).await?;
            let Some(last) = page.last() else { break };
            after = last.position;
            read += page.len();
        }
        if read as i64 != total {
            bail!("read {read} events of {total}");
        }
        anyhow::Ok(read as f64 / start.elapsed().as_secs_f64())
    };
    // One untimed pass of each, so that both start from warm caches.
    copy_rate()?;
    read_rate().await?;
    let mut ours = Vec::new();
    let mut copy = Vec::new();
    for round in 0..7 {
        if round % 2 == 0 {
            copy.push(copy_rate()?);
            ours.push(read_rate().await?);
        } else {
            ours.push(read_rate().await?);
            copy.push(copy_rate()?);
        }
    }
    println!(
        "read $all of {total} events, events/s per round: store {ours:.0?}, psql \\copy {copy:.0?}"
    );
    report.ratio(
        &format!("read $all from 0 ({total} events)"),
        &ours,
        &copy,
        "events/s",
        0.80,
    );
    Ok(())
}

/// Commit-to-subscriber latency while 500 events/s are appended.
async fn latency(store: &PgEventStore, report: &mut Report) -> anyhow::Result<()> {
    let seconds = scale(10) as u64;
    let rate = 500u64;
    let committed: Arc<Mutex<HashMap<EventId, Instant>>> = Arc::default();
    let head = store.read_all(Position::START, 1).await?; // warm the pool
    drop(head);
    let mut last = Position::START;
    loop {
        let page = store.read_all(last, 10_000).await?;
        match page.last() {
            Some(e) => last = e.position,
            None => break,
        }
    }
    let mut sub = store.subscribe_all(last);
    let expected = (seconds * rate) as usize;
    let receiver = {
        let committed = committed.clone();
        tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3)?;
            let mut seen = 0;
            while seen < expected {
                let event = tokio::time::timeout(Duration::from_secs(10), sub.next())
                    .await
                    .context("subscriber stalled")?
                    .context("subscription ended")??;
                let received = Instant::now();
                // The append call may not have returned yet when the
                // subscriber already has the event; wait for its timestamp.
                let at = loop {
                    if let Some(at) = committed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&event.id)
                    {
                        break *at;
                    }
                    tokio::task::yield_now().await;
                };
                hist.record(received.saturating_duration_since(at).as_micros() as u64)?;
                seen += 1;
            }
            anyhow::Ok(hist)
        })
    };
    // Four writers, 125 events/s each, on separate streams.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            let committed = committed.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 * 4 / rate));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let s = stream(format!("latency-{w}"));
                for i in 0..(expected / 4) {
                    tick.tick().await;
                    let event = new_event(i);
                    let id = event.id;
                    store.append(&s, ExpectedVersion::Any, vec![event]).await?;
                    committed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id, Instant::now());
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for w in writers {
        w.await??;
    }
    let hist = receiver.await??;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "commit-to-subscriber latency at {rate} events/s over {seconds} s: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(0.5),
        ms(0.99),
        hist.max() as f64 / 1000.0
    );
    report.rows.push((
        format!("commit-to-subscriber latency at {rate} events/s"),
        format!("p99 {:.2} ms (p50 {:.2} ms)", ms(0.99), ms(0.5)),
        "—".into(),
        "target p99 ≤ 50 ms".into(),
        ms(0.99) <= 50.0,
    ));
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("chorus-bench-{}", std::process::id()));
    let cluster = PrivateCluster::start(&ClusterOptions {
        data_dir: dir.clone(),
        profile: ClusterProfile::Durable,
    })
    .await
    .context("provisioning the benchmark cluster")?;
    let result = async {
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&cluster.url("postgres"))
            .await?;
        sqlx::query("CREATE DATABASE bench").execute(&admin).await?;
        admin.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(20)
            .connect(&cluster.url("bench"))
            .await?;
        chorus_postgres::migrate::run(&pool).await?;
        sqlx::query("CREATE TABLE raw_events (LIKE events INCLUDING ALL)")
            .execute(&pool)
            .await?;
        let store = PgEventStore::new(pool.clone());
        println!(
            "Event store benchmarks: fresh private cluster (fsync on), {} cores",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        );
        let mut report = Report { rows: Vec::new() };
        batched(&pool, &store, &mut report).await?;
        concurrent_single(&pool, &store, &mut report).await?;
        read_all(&cluster, "bench", &pool, &store, &mut report).await?;
        latency(&store, &mut report).await?;
        pool.close().await;
        anyhow::Ok(report.print())
    }
    .await;
    let _ = cluster.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    if !result? {
        bail!("some targets were not met");
    }
    Ok(())
}
