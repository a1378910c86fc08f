//! Opening the database: the configured one, or a private cluster, and
//! the read replica if one is configured.

pub mod reads;

use std::time::Duration;

use anyhow::Context as _;
use chorus_postgres::{ClusterOptions, ClusterProfile, PrivateCluster};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use crate::config::Settings;
pub use reads::ReadPool;

/// The database a process works with, and the private cluster behind it, if any.
#[derive(Debug)]
pub struct Database {
    pub pool: PgPool,
    /// Where GraphQL queries read: [`Database::pool`], or the read replica
    /// (`DATABASE_READ_URL`) while it is fresh enough.
    pub reads: ReadPool,
    cluster: Option<PrivateCluster>,
}

/// The database Chorus creates in its private cluster.
const PRIVATE_DATABASE: &str = "chorus";

impl Database {
    /// Connects to `DATABASE_URL`, or provisions and starts the private
    /// cluster in the data directory when it is not set.
    pub async fn open(settings: &Settings) -> anyhow::Result<Self> {
        let (options, cluster) = match &settings.database_url {
            Some(url) => {
                let options: PgConnectOptions = url
                    .expose()
                    .parse()
                    .context("DATABASE_URL is not a valid Postgres URL")?;
                (options, None)
            }
            None => {
                tracing::info!(data_dir = %settings.data_dir.display(), "DATABASE_URL is not set: using the private Postgres cluster");
                let cluster = PrivateCluster::start(&ClusterOptions {
                    data_dir: settings.data_dir.clone(),
                    profile: ClusterProfile::Durable,
                })
                .await
                .context(
                    "DATABASE_URL is not set and the private Postgres cluster could not be started",
                )?;
                create_database(&cluster).await?;
                let options: PgConnectOptions = cluster
                    .url(PRIVATE_DATABASE)
                    .parse()
                    .context("the private cluster's URL is not valid")?;
                tracing::info!(port = cluster.port(), "private Postgres cluster is running");
                (options, Some(cluster))
            }
        };
        let primary = target(&options);
        let pool = PgPoolOptions::new()
            .max_connections(32)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .with_context(|| format!("cannot connect to the database at {primary}"))?;
        let reads = match &settings.read_replica.url {
            Some(url) => {
                let options: PgConnectOptions = url
                    .expose()
                    .parse()
                    .context("DATABASE_READ_URL is not a valid Postgres URL")?;
                let max_lag = Duration::from_millis(settings.read_replica.max_lag_ms);
                tracing::info!(
                    replica = %target(&options),
                    max_lag_ms = settings.read_replica.max_lag_ms,
                    "GraphQL queries may read from the read replica"
                );
                // Connected on first use: a replica that is down at start
                // only sends reads to the primary until it is up.
                let replica = PgPoolOptions::new()
                    .max_connections(32)
                    .acquire_timeout(Duration::from_secs(2))
                    .connect_lazy_with(options);
                ReadPool::with_replica(pool.clone(), replica, max_lag)
            }
            None => ReadPool::primary(pool.clone()),
        };
        Ok(Self {
            pool,
            reads,
            cluster,
        })
    }

    /// Closes the pool and stops the private cluster, if Chorus runs one.
    pub async fn close(self) {
        self.reads.close().await;
        self.pool.close().await;
        if let Some(cluster) = self.cluster {
            match cluster.stop().await {
                Ok(()) => tracing::info!("private Postgres cluster stopped"),
                Err(error) => {
                    tracing::error!(%error, "could not stop the private Postgres cluster")
                }
            }
        }
    }
}

/// Where `options` point, without credentials: `host:port/database`.
fn target(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("")
    )
}

async fn create_database(cluster: &PrivateCluster) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(&cluster.url("postgres"))
        .await
        .context("cannot connect to the private cluster")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(PRIVATE_DATABASE)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        sqlx::query(&format!("CREATE DATABASE {PRIVATE_DATABASE}"))
            .execute(&mut conn)
            .await
            .context("cannot create the chorus database in the private cluster")?;
    }
    conn.close().await?;
    Ok(())
}
