//! Read models built from the log.
//!
//! A [`Projection`] has a stable name, a filter of the event types it reads,
//! and an `apply` that writes rows. The [`run`] loop feeds it from a live
//! subscription and writes its rows and its checkpoint in one transaction, so
//! a crash can never separate them. Projections never read another
//! projection's tables and never send anything.
//!
//! [`Projections`] runs all of them and lets a writer wait until they have
//! caught up with its append (read-your-writes).

pub mod activity_stats;
pub mod actors;
pub mod blocks;
pub mod bulk;
mod common;
pub mod favorites;
pub mod follows;
pub mod instances;
pub mod notifications;
mod pairs;
pub mod posts;
pub mod reblogs;
pub mod rebuild;
pub mod received;
pub mod runner;
pub mod servers;
pub mod timelines;

use std::sync::Arc;
use std::time::Duration;

use chorus_domain::Position;
use chorus_postgres::PgEventStore;
use tokio::task::JoinHandle;

pub use runner::{Progress, Projection, ProjectionError, run};

/// Every read model, each with its own name and checkpoint.
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(actors::Actors),
        Arc::new(posts::Posts),
        Arc::new(follows::Follows),
        Arc::new(favorites::Favorites),
        Arc::new(reblogs::Reblogs),
        Arc::new(blocks::Blocks),
        Arc::new(timelines::Timelines),
        Arc::new(notifications::Notifications),
        Arc::new(instances::Instances),
        Arc::new(received::Received),
        Arc::new(servers::Servers),
        Arc::new(activity_stats::ActivityStats),
    ]
}

/// All projections, running. Dropping it stops them.
#[derive(Debug)]
pub struct Projections {
    progress: Vec<(&'static str, Progress)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Projections {
    /// Starts every projection from its checkpoint, each in a task of its own.
    pub async fn start(store: PgEventStore) -> Result<Self, sqlx::Error> {
        // Built up in place so that, if one fails to start, dropping the
        // value stops those already started.
        let mut started = Self {
            progress: Vec::new(),
            tasks: Vec::new(),
        };
        for projection in all() {
            let name = projection.name();
            let (progress, task) = run(store.clone(), projection).await?;
            started.progress.push((name, progress));
            started.tasks.push(task);
        }
        Ok(started)
    }

    /// Waits until every projection has applied everything up to `position`
    /// (an append's last position), so that a reader sees that write.
    /// Returns false if `timeout` passes first or a projection stopped.
    pub async fn wait_for(&self, position: Position, timeout: Duration) -> bool {
        let waits = self.progress.iter().map(|(_, progress)| {
            let mut progress = progress.clone();
            async move { progress.reached(position).await }
        });
        tokio::time::timeout(timeout, futures::future::join_all(waits))
            .await
            .is_ok_and(|reached| reached.into_iter().all(|r| r))
    }

    /// How far each projection has got, by name.
    pub fn positions(&self) -> Vec<(&'static str, Position)> {
        self.progress
            .iter()
            .map(|(name, progress)| (*name, progress.position()))
            .collect()
    }
}

impl Drop for Projections {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
