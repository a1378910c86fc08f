//! The cost of the `activity_stats` projection, which counts every event
//! of the log, on the hot path: the inbox's `ActivityReceived` appends.
//!
//! On a log of received activities from 500 hosts (seeded through the event
//! store), measured in the same run:
//! - catch-up from position 0: events/s of `activity_stats` against the
//!   baseline, the `received` projection, which writes a row per received
//!   activity from the same events;
//! - live: the delay from an append to its being applied, p50 and p99, for
//!   each of the two, running side by side while activities are appended
//!   at a steady rate (a GraphQL mutation waits for the slowest projection).
//!
//! Run with `cargo bench -p chorus-tests --bench analytics`;
//! `CHORUS_BENCH_SCALE` (default 1.0) scales the seeded log.

/// The allocator of the `chorus` binary, which this benchmark runs in process.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_domain::remote::{ActivityReceived, received_event_id, received_stream};
use chorus_domain::{DomainEvent, Metadata, NewEvent, Position};
use chorus_postgres::{PgEventStore, PrivateCluster};
use chorus_projections::activity_stats::ActivityStats;
use chorus_projections::received::Received;
use chorus_projections::{Projection, run};
use chorus_tests::bench::scale;
use hdrhistogram::Histogram;

const HOSTS: usize = 500;
const TYPES: [&str; 5] = ["Create", "Like", "Announce", "Follow", "Delete"];

/// Received activity number `n`, as the inbox appends it.
fn received(n: usize) -> anyhow::Result<(chorus_domain::StreamId, NewEvent)> {
    let host = format!("host{}.example", n % HOSTS);
    // Every host sends every type.
    let kind = TYPES[(n / HOSTS) % TYPES.len()];
    let activity_id = format!("https://{host}/activities/{n}");
    let actor = format!("https://{host}/users/u{}", n % 97);
    let raw = serde_json::json!({
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": activity_id,
        "type": kind,
        "actor": actor,
        "object": format!("https://{host}/objects/{n}"),
    })
    .to_string();
    let event = DomainEvent::ActivityReceived(ActivityReceived {
        activity_id: activity_id.clone(),
        activity_type: kind.to_owned(),
        actor,
        object: Some(format!("https://{host}/objects/{n}")),
        inbox: "https://bench.chorus.test/inbox".to_owned(),
        raw,
    });
    let mut new = event.to_new_event()?.with_metadata(Metadata {
        remote_host: Some(host),
        received_at: Some(chrono::Utc::now()),
        ..Metadata::default()
    });
    new.id = received_event_id(&activity_id);
    Ok((received_stream(&activity_id), new))
}

/// Appends received activities `from..to`, 16 writers, 100 a statement.
async fn seed(store: &PgEventStore, from: usize, to: usize) -> anyhow::Result<()> {
    let batches: Vec<Vec<(chorus_domain::StreamId, NewEvent)>> = (from..to)
        .map(received)
        .collect::<anyhow::Result<Vec<_>>>()?
        .chunks(100)
        .map(<[_]>::to_vec)
        .collect();
    let queue = Arc::new(std::sync::Mutex::new(batches));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            let queue = queue.clone();
            tokio::spawn(async move {
                loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                    let Some(batch) = next else {
                        return anyhow::Ok(());
                    };
                    store.append_new_streams(&batch).await?;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

async fn last(pool: &sqlx::PgPool) -> anyhow::Result<Position> {
    let (major, minor): (i64, i64) = sqlx::query_as(
        "SELECT transaction_id, seq FROM events ORDER BY transaction_id DESC, seq DESC LIMIT 1",
    )
    .fetch_one(pool)
    .await?;
    Ok(Position::new(major.unsigned_abs(), minor.unsigned_abs()))
}

/// Events/s of `projection` catching up from 0 with the log.
async fn catch_up(
    store: &PgEventStore,
    projection: Arc<dyn Projection>,
    events: usize,
    end: Position,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let (mut progress, task) = run(store.clone(), projection).await?;
    anyhow::ensure!(progress.reached(end).await, "the projection stopped");
    let seconds = started.elapsed().as_secs_f64();
    task.abort();
    Ok(events as f64 / seconds)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    chorus_tests::bench::on_durable_cluster("an", bench).await
}

async fn bench(cluster: &PrivateCluster) -> anyhow::Result<()> {
    let pool = chorus_tests::bench::bench_database(cluster, 40).await?;
    let store = PgEventStore::new(pool.clone());
    let n = scale(200_000);
    println!("activity_stats bench: {n} received activities from {HOSTS} hosts");
    let started = Instant::now();
    seed(&store, 0, n).await?;
    println!("seeded in {:.1} s", started.elapsed().as_secs_f64());
    let end = last(&pool).await?;

    let baseline = catch_up(&store, Arc::new(Received), n, end).await?;
    let stats = catch_up(&store, Arc::new(ActivityStats), n, end).await?;
    println!(
        "catch-up: received (baseline) {baseline:.0} events/s; activity_stats {stats:.0} events/s = {:.2}x the baseline",
        stats / baseline
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM activity_stats")
        .fetch_one(&pool)
        .await?;
    println!("activity_stats holds {rows} rows for {n} events");

    // Live, side by side: 200 appends/s of 10 activities each, for 10 s.
    let (received_progress, received_task) = run(store.clone(), Arc::new(Received)).await?;
    let (stats_progress, stats_task) = run(store.clone(), Arc::new(ActivityStats)).await?;
    let mut delays = [Histogram::<u64>::new(3)?, Histogram::<u64>::new(3)?];
    let rounds = scale(2_000);
    let mut next = n;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut waits = tokio::task::JoinSet::new();
    for _ in 0..rounds {
        tick.tick().await;
        let batch: Vec<_> = (next..next + 10)
            .map(received)
            .collect::<anyhow::Result<Vec<_>>>()?;
        next += 10;
        let appended = Instant::now();
        store.append_new_streams(&batch).await?;
        // The only writer now: the log's last event is the batch's.
        let position = last(&pool).await?;
        for (i, progress) in [received_progress.clone(), stats_progress.clone()]
            .into_iter()
            .enumerate()
        {
            let mut progress = progress;
            waits.spawn(async move {
                progress.reached(position).await;
                (i, appended.elapsed())
            });
        }
    }
    while let Some(done) = waits.join_next().await {
        let (i, delay) = done?;
        delays[i].record(u64::try_from(delay.as_micros()).unwrap_or(u64::MAX))?;
    }
    received_task.abort();
    stats_task.abort();
    println!(
        "live, 2,000 activities/s: append to applied, received (baseline) p50 {:.1} ms p99 {:.1} ms; activity_stats p50 {:.1} ms p99 {:.1} ms",
        ms(&delays[0], 0.5),
        ms(&delays[0], 0.99),
        ms(&delays[1], 0.5),
        ms(&delays[1], 0.99),
    );
    Ok(())
}
