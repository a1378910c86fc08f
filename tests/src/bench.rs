//! Shared by the bench binaries.

use chorus_postgres::{ClusterOptions, ClusterProfile, PrivateCluster};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// `n` scaled by `CHORUS_BENCH_SCALE` (default 1.0; at least 1), so that a
/// bench can be smoke-run small.
pub fn scale(n: usize) -> usize {
    let factor: f64 = std::env::var("CHORUS_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * factor) as usize).max(1)
}

/// A new database `bench` on `cluster`, migrated, with a pool of
/// `connections`.
pub async fn bench_database(cluster: &PrivateCluster, connections: u32) -> anyhow::Result<PgPool> {
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&cluster.url("postgres"))
        .await?;
    sqlx::query("CREATE DATABASE bench").execute(&admin).await?;
    admin.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .connect(&cluster.url("bench"))
        .await?;
    chorus_postgres::migrate::run(&pool).await?;
    Ok(pool)
}

/// Runs `bench` on a durable private cluster of its own (fsync on, as in
/// production), then stops and removes the cluster.
pub async fn on_durable_cluster<F>(name: &str, bench: F) -> anyhow::Result<()>
where
    F: AsyncFnOnce(&PrivateCluster) -> anyhow::Result<()>,
{
    let dir = std::env::temp_dir().join(format!("chorus-bench-{name}-{}", std::process::id()));
    let cluster = PrivateCluster::start(&ClusterOptions {
        data_dir: dir.clone(),
        profile: ClusterProfile::Durable,
    })
    .await?;
    let result = bench(&cluster).await;
    let _ = cluster.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}
