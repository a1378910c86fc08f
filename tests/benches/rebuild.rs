//! Rebuild benchmark: the follow, favorite, reblog and block read models
//! rebuilt from a log of 1,000,000 of their events, against the raw
//! sequential read rate of the same log measured in the same run.
//!
//! The log is what a busy server's would be for these read models
//! (`chorus_tests::busy_log`).
//!
//! Run with `cargo bench -p chorus-tests --bench rebuild`;
//! `CHORUS_BENCH_SCALE` (default 1.0) scales the log.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::Instant;

use chorus_domain::Position;
use chorus_postgres::{Narrowed, PgEventStore, PrivateCluster};
use chorus_projections::Projection;
use chorus_projections::rebuild::Rebuild;
use chorus_tests::bench::scale;
use chorus_tests::busy_log::{log, seed};
use rand::SeedableRng;
use rand::rngs::StdRng;
use sqlx::PgPool;
use tokio::sync::watch;

/// Reads the whole log in pages, as a rebuild does, doing nothing with it.
async fn read_log(pool: &PgPool) -> anyhow::Result<usize> {
    let mut after = Position::START;
    let mut n = 0;
    loop {
        let page = PgEventStore::read_after(pool, after, &Narrowed::default(), 5_000).await?;
        let Some(last) = page.last() else {
            return Ok(n);
        };
        after = last.position;
        n += page.len();
    }
}

async fn count(pool: &PgPool, table: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await?)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // `RUST_LOG=info` shows the rebuild's phases.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    chorus_tests::bench::on_durable_cluster("rebuild", run).await
}

async fn run(cluster: &PrivateCluster) -> anyhow::Result<()> {
    let pool = chorus_tests::bench::bench_database(cluster, 16).await?;
    let total = scale(1_000_000);
    let mut rng = StdRng::seed_from_u64(7);
    let started = Instant::now();
    let seeded = seed(&pool, log(total, &mut rng)).await?;
    sqlx::query("VACUUM ANALYZE events").execute(&pool).await?;
    println!(
        "Rebuild benchmark: {seeded} events seeded in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    if std::env::var_os("CHORUS_BENCH_DIAG").is_some() {
        for sql in [
            "SELECT count(*)::text FROM events",
            "SELECT sum(length(payload::text))::text FROM events",
            "SELECT sum(length(metadata::text))::text FROM events",
        ] {
            let t = Instant::now();
            let v: String = sqlx::query_scalar(sql).fetch_one(&pool).await?;
            println!("  diag {sql}: {v} in {:.2} s", t.elapsed().as_secs_f64());
        }
    }
    // Baseline: the log read sequentially, page by page.
    let started = Instant::now();
    let read = read_log(&pool).await?;
    let read_secs = started.elapsed().as_secs_f64();
    let read_rate = read as f64 / read_secs;
    println!(
        "  raw sequential read:       {read} events in {read_secs:.2} s = {read_rate:>9.0} events/s"
    );

    let projections: Vec<Arc<dyn Projection>> = vec![
        Arc::new(chorus_projections::follows::Follows),
        Arc::new(chorus_projections::favorites::Favorites),
        Arc::new(chorus_projections::reblogs::Reblogs),
        Arc::new(chorus_projections::blocks::Blocks),
    ];
    let rebuild = Rebuild::begin(&pool, projections, "bench").await?;
    let (progress, _watch) = watch::channel((0, 0));
    let started = Instant::now();
    rebuild.run(progress).await?;
    let secs = started.elapsed().as_secs_f64();
    let rate = seeded as f64 / secs;
    println!(
        "  rebuild of follows, favorites, reblogs, blocks: {secs:.2} s = {rate:>9.0} events/s ({:.0}% of the raw read rate; target >= 50,000 events/s, under 20 s)",
        100.0 * rate / read_rate
    );
    for table in ["follows", "favorites", "reblogs", "blocks"] {
        println!("    {table}: {} rows", count(&pool, table).await?);
    }
    let met = rate >= 50_000.0 || total < 1_000_000;
    println!("  {}", if met { "target met" } else { "TARGET NOT MET" });
    Ok(())
}
