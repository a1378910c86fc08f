//! A fresh database per test.
//!
//! The databases live on one throwaway cluster for the whole test run,
//! provisioned with the same machinery as `chorus serve`
//! ([`PrivateCluster`]). Test processes running in parallel share it: the
//! first one starts it, the others find it running. `scripts/test` points it
//! at a new directory for each run and stops it at the end. Set
//! `CHORUS_TEST_DATABASE_URL` (a superuser URL) to use an existing server
//! instead.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;

use chorus_postgres::{ClusterOptions, ClusterProfile, PrivateCluster};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;

static ADMIN_URL: OnceCell<String> = OnceCell::const_new();

/// The directory of the shared test cluster.
pub fn test_cluster_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CHORUS_TEST_PG_DIR") {
        return PathBuf::from(dir);
    }
    // One cluster per checkout, in a directory the `postgres` user can reach
    // even when the checkout is under a private home directory.
    let mut hasher = DefaultHasher::new();
    env!("CARGO_MANIFEST_DIR").hash(&mut hasher);
    std::env::temp_dir().join(format!("chorus-test-pg-{:016x}", hasher.finish()))
}

/// A superuser URL of the server that holds the test databases.
pub async fn admin_url() -> String {
    ADMIN_URL
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("CHORUS_TEST_DATABASE_URL") {
                return url;
            }
            let options = ClusterOptions {
                data_dir: test_cluster_dir(),
                profile: ClusterProfile::Ephemeral,
            };
            match PrivateCluster::start(&options).await {
                Ok(cluster) => cluster.url("postgres"),
                Err(error) => panic!("cannot provision the test Postgres cluster: {error}"),
            }
        })
        .await
        .clone()
}

/// A database of its own for one test.
#[derive(Debug)]
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

/// A new, empty database (no migrations applied).
pub async fn empty_db() -> TestDb {
    empty_db_on(&admin_url().await).await
}

/// A new, empty database on the server `admin` (a superuser URL) reaches.
pub async fn empty_db_on(admin: &str) -> TestDb {
    let name = format!("chorus_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(admin)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test cluster: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
    let _ = conn.close().await;
    let options: PgConnectOptions = admin
        .parse::<PgConnectOptions>()
        .unwrap_or_else(|e| panic!("bad test cluster URL: {e}"))
        .database(&name);
    let url = options.to_url_lossy().to_string();
    let pool = PgPoolOptions::new()
        .max_connections(20)
        .connect_with(options)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to test database {name}: {e}"));
    TestDb { name, url, pool }
}

/// A new database with every migration applied.
pub async fn test_db() -> TestDb {
    migrated(empty_db().await).await
}

/// A new database with every migration applied, on the server `admin`
/// (a superuser URL) reaches.
pub async fn test_db_on(admin: &str) -> TestDb {
    migrated(empty_db_on(admin).await).await
}

async fn migrated(db: TestDb) -> TestDb {
    chorus_postgres::migrate::run(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("migrations failed on {}: {e}", db.name));
    db
}
