//! Stream benchmark, on a log of 1,000,000 events (`chorus_tests::busy_log`):
//!
//! - the export of the whole log to NDJSON with the code of
//!   `chorus events export`, beside the same rows copied out by Postgres
//!   (`COPY (SELECT …) TO STDOUT`, read through sqlx into a file): what the
//!   database alone costs;
//! - a page of 100 of each filter of the stream, from the start and from
//!   the end of the log, with the plan Postgres ran (the whole plan with
//!   `CHORUS_BENCH_EXPLAIN=1`);
//! - how soon a live GraphQL subscription over WebSocket receives a new
//!   event after its append starts (1,000 appends, one at a time), beside
//!   how long the append itself takes.
//!
//! Run with `cargo bench -p chorus-tests --bench stream`;
//! `CHORUS_BENCH_SCALE` (default 1.0) scales the log and the appends.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Write as _;
use std::time::{Duration, Instant};

use chorus_api::events::export::{Range, export};
use chorus_api::http::{AppState, router};
use chorus_domain::{EventStore, ExpectedVersion, NewEvent, Position, StreamId};
use chorus_postgres::{Narrowed, PgEventStore, PrivateCluster};
use chorus_tests::bench::scale;
use chorus_tests::busy_log::{log, seed};
use chorus_tests::ws::{connect, receive, subscribe};
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;
use sqlx::PgPool;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    chorus_tests::bench::on_durable_cluster("stream", run).await
}

async fn run(cluster: &PrivateCluster) -> anyhow::Result<()> {
    let pool = chorus_tests::bench::bench_database(cluster, 16).await?;
    let total = scale(1_000_000);
    let started = Instant::now();
    let seeded = seed(&pool, log(total, &mut StdRng::seed_from_u64(7))).await?;
    sqlx::query("VACUUM ANALYZE events").execute(&pool).await?;
    println!(
        "Stream benchmark: {seeded} events seeded in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    export_rate(&pool, seeded).await?;
    filtered_pages(&pool, seeded).await?;
    live_latency(&pool).await
}

/// The export against `COPY … TO STDOUT` of the same rows.
async fn export_rate(pool: &PgPool, seeded: usize) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("chorus-bench-stream-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    let started = Instant::now();
    let copied = copy_out(pool, &dir.join("copy.tsv")).await?;
    let copy_secs = started.elapsed().as_secs_f64();
    let copy_rate = seeded as f64 / copy_secs;
    println!(
        "  baseline COPY (SELECT …) TO STDOUT via sqlx: {seeded} rows, {:.0} MB in {copy_secs:.2} s = {copy_rate:>9.0} rows/s",
        copied as f64 / 1e6
    );

    let file = std::fs::File::create(dir.join("export.ndjson"))?;
    let started = Instant::now();
    let exported = export(
        pool,
        &Range::default(),
        file,
        &indicatif::ProgressBar::hidden(),
    )
    .await?;
    let secs = started.elapsed().as_secs_f64();
    let rate = exported as f64 / secs;
    let bytes = std::fs::metadata(dir.join("export.ndjson"))?.len();
    println!(
        "  chorus events export --format ndjson: {exported} events, {:.0} MB in {secs:.2} s = {rate:>9.0} events/s ({:.0}% of COPY; target >= 100,000 events/s)",
        bytes as f64 / 1e6,
        100.0 * rate / copy_rate
    );
    anyhow::ensure!(
        exported as usize == seeded,
        "exported {exported} of {seeded}"
    );
    let met = rate >= 100_000.0 || seeded < 1_000_000;
    println!(
        "  {}",
        if met {
            "export target met"
        } else {
            "EXPORT TARGET NOT MET"
        }
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A page of each filter, both ways, and how Postgres read it.
async fn filtered_pages(pool: &PgPool, seeded: usize) -> anyhow::Result<()> {
    let stream: String = sqlx::query_scalar(
        "SELECT stream_id FROM events WHERE stream_id LIKE 'relationship-%' LIMIT 1",
    )
    .fetch_one(pool)
    .await?;
    let middle: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT recorded_at FROM events ORDER BY transaction_id, seq OFFSET $1 LIMIT 1",
    )
    .bind(i64::try_from(seeded / 2)?)
    .fetch_one(pool)
    .await?;
    let types = |t: &[&str]| Some(t.iter().map(|t| (*t).to_owned()).collect());
    let filters = [
        (
            "one type (Blocked)",
            Narrowed {
                types: types(&["Blocked"]),
                ..Narrowed::default()
            },
        ),
        (
            "two types (Blocked, Unblocked)",
            Narrowed {
                types: types(&["Blocked", "Unblocked"]),
                ..Narrowed::default()
            },
        ),
        (
            "stream prefix relationship-block-",
            Narrowed {
                stream_prefixes: vec!["relationship-block-".into()],
                ..Narrowed::default()
            },
        ),
        (
            "one stream",
            Narrowed {
                streams: vec![stream],
                ..Narrowed::default()
            },
        ),
        (
            "actor",
            Narrowed {
                actor: Some("https://host23.example/users/user323".into()),
                ..Narrowed::default()
            },
        ),
        (
            "host",
            Narrowed {
                host: Some("host7.example".into()),
                ..Narrowed::default()
            },
        ),
        (
            "one second of time",
            Narrowed {
                from: Some(middle),
                to: Some(middle + chrono::Duration::seconds(1)),
                ..Narrowed::default()
            },
        ),
        (
            "type and host",
            Narrowed {
                types: types(&["Favorited"]),
                host: Some("host7.example".into()),
                ..Narrowed::default()
            },
        ),
    ];
    let full = std::env::var_os("CHORUS_BENCH_EXPLAIN").is_some();
    println!("  a page of 100 of each filter, from the start / from the end of the log:");
    for (name, filter) in filters {
        let mut line = format!("    {name}:");
        for newest_first in [false, true] {
            let bound = if newest_first {
                Position::END
            } else {
                Position::START
            };
            let started = Instant::now();
            let page = if newest_first {
                PgEventStore::read_before(pool, bound, &filter, 100).await?
            } else {
                PgEventStore::read_after(pool, bound, &filter, 100).await?
            };
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            let plan = PgEventStore::explain(pool, bound, &filter, newest_first, 100).await?;
            // The scans, without their timings: which index served it.
            let indexes: Vec<&str> = plan
                .iter()
                .filter(|l| l.contains(" Scan "))
                .map(|l| {
                    let l = l.trim_start().trim_start_matches("->").trim();
                    l.split(" (actual").next().unwrap_or(l)
                })
                .collect();
            line.push_str(&format!(
                " {:>3} in {ms:>7.2} ms ({})",
                page.len(),
                indexes.join(", ")
            ));
            if full {
                println!("{}", plan.join("\n"));
            }
        }
        println!("{line}");
    }
    Ok(())
}

/// The log's rows as Postgres copies them out, written to `path`; the
/// bytes written.
async fn copy_out(pool: &PgPool, path: &std::path::Path) -> anyhow::Result<u64> {
    let mut conn = pool.acquire().await?;
    let mut rows = conn
        .copy_out_raw(
            "COPY (SELECT transaction_id, seq, event_id, stream_id, stream_version, event_type,
                          schema_version, payload, metadata, recorded_at
                   FROM events ORDER BY transaction_id, seq) TO STDOUT",
        )
        .await?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut bytes = 0u64;
    while let Some(chunk) = rows.next().await {
        let chunk = chunk?;
        bytes += chunk.len() as u64;
        out.write_all(&chunk)?;
    }
    out.flush()?;
    Ok(bytes)
}

/// Appends one event at a time and times its arrival through a live
/// subscription over WebSocket.
async fn live_latency(pool: &PgPool) -> anyhow::Result<()> {
    let store = PgEventStore::new(pool.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base_url = format!("http://{}", listener.local_addr()?);
    let state = AppState::new(pool.clone(), store.clone(), &url::Url::parse(&base_url)?);
    let server = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await;
    });

    let token = chorus_api::tokens::create_analytics(pool, Some("bench"))
        .await?
        .secret;
    let head = PgEventStore::read_before(pool, Position::END, &Narrowed::default(), 1)
        .await?
        .first()
        .map_or(Position::START, |e| e.position);
    let mut socket = connect(&base_url, json!({ "token": token }))
        .await
        .ok_or_else(|| anyhow::anyhow!("the subscription was refused"))?;
    subscribe(
        &mut socket,
        "1",
        "subscription($after: String) { events(after: $after, filter: { types: [\"BenchPinged\"] }) { position data } }",
        json!({ "after": head.to_string() }),
    )
    .await;

    let appends = scale(1_000).max(10);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut append = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for n in 0..appends {
        let event = NewEvent::new("BenchPinged", 1, &json!({ "n": n }))?;
        let stream =
            StreamId::new(format!("bench-ping-{n}")).map_err(|e| anyhow::anyhow!("{e}"))?;
        let started = Instant::now();
        store
            .append(&stream, ExpectedVersion::NoStream, vec![event])
            .await?;
        append.record(micros(started.elapsed()))?;
        let message = receive(&mut socket)
            .await
            .ok_or_else(|| anyhow::anyhow!("the subscription closed"))?;
        latency.record(micros(started.elapsed()))?;
        anyhow::ensure!(
            message["payload"]["data"]["events"]["data"]["n"] == json!(n),
            "expected event {n}, got {message}"
        );
    }
    server.abort();
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "  live subscription over WebSocket, {appends} appends one at a time: append start to arrival p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target p99 <= 100 ms)",
        ms(&latency, 0.5),
        ms(&latency, 0.95),
        ms(&latency, 0.99),
        latency.max() as f64 / 1000.0
    );
    println!(
        "  baseline, the append alone (commit included): p50 {:.2} ms, p99 {:.2} ms",
        ms(&append, 0.5),
        ms(&append, 0.99)
    );
    let met = ms(&latency, 0.99) <= 100.0;
    println!(
        "  {}",
        if met {
            "latency target met"
        } else {
            "LATENCY TARGET NOT MET"
        }
    );
    Ok(())
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}
