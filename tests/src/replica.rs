//! A primary Postgres cluster with a streaming standby, for the read
//! replica tests.
//!
//! The shared test cluster is not used as the primary: a base backup of it
//! would copy every test database of the run. Each [`Replicated`] is a
//! small private cluster of its own (the tests' profile) and a standby made
//! from it with `pg_basebackup -R`, in a temporary directory; both are
//! stopped and the directory deleted when it is dropped.

use std::path::PathBuf;

use chorus_postgres::{ClusterOptions, ClusterProfile, PrivateCluster};
use sqlx::{Connection, PgConnection};

/// A primary and its standby.
#[derive(Debug)]
pub struct Replicated {
    primary: Option<PrivateCluster>,
    standby: Option<PrivateCluster>,
    dir: PathBuf,
}

impl Replicated {
    /// Provisions a primary and starts a standby of it.
    pub async fn start() -> Self {
        let dir =
            std::env::temp_dir().join(format!("chorus-replica-{}", uuid::Uuid::new_v4().simple()));
        let mut replicated = Self {
            primary: None,
            standby: None,
            dir,
        };
        let primary = PrivateCluster::start(&ClusterOptions {
            data_dir: replicated.dir.join("primary"),
            profile: ClusterProfile::Ephemeral,
        })
        .await
        .unwrap_or_else(|e| panic!("cannot start the primary cluster: {e}"));
        let standby = primary
            .start_standby(&replicated.dir.join("standby"))
            .await
            .unwrap_or_else(|e| panic!("cannot start the standby: {e}"));
        replicated.primary = Some(primary);
        replicated.standby = Some(standby);
        replicated
    }

    /// A superuser URL of the primary's `postgres` database.
    pub fn primary_admin_url(&self) -> String {
        self.primary().url("postgres")
    }

    /// A superuser URL of `database` on the standby.
    pub fn standby_url(&self, database: &str) -> String {
        self.standby().url(database)
    }

    /// Stops replaying WAL on the standby: it keeps answering, with what it
    /// had replayed.
    pub async fn pause_replay(&self) {
        self.on_standby("SELECT pg_wal_replay_pause()").await;
    }

    /// Replays WAL again.
    pub async fn resume_replay(&self) {
        self.on_standby("SELECT pg_wal_replay_resume()").await;
    }

    /// Stops the standby (fast shutdown: its sessions are ended).
    pub async fn stop_standby(&self) {
        self.standby()
            .stop()
            .await
            .unwrap_or_else(|e| panic!("cannot stop the standby: {e}"));
    }

    async fn on_standby(&self, sql: &str) {
        let mut conn = PgConnection::connect(&self.standby_url("postgres"))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the standby: {e}"));
        sqlx::query(sql)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql} on the standby: {e}"));
        let _ = conn.close().await;
    }

    fn primary(&self) -> &PrivateCluster {
        self.primary
            .as_ref()
            .unwrap_or_else(|| panic!("the primary is gone"))
    }

    fn standby(&self) -> &PrivateCluster {
        self.standby
            .as_ref()
            .unwrap_or_else(|| panic!("the standby is gone"))
    }
}

impl Drop for Replicated {
    fn drop(&mut self) {
        let clusters: Vec<PrivateCluster> = self
            .standby
            .take()
            .into_iter()
            .chain(self.primary.take())
            .collect();
        // Dropped inside a test's runtime, which cannot be blocked on: the
        // clusters are stopped from a thread with a runtime of its own.
        let stopped = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                for cluster in clusters {
                    // A cluster already stopped (the standby, by a test)
                    // has nothing to stop.
                    let _ = cluster.stop().await;
                }
            });
        })
        .join();
        if stopped.is_ok() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
