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
use chorus_postgres::progress::Attached;
use chorus_postgres::{Board, PgEventStore};
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

/// The projections' progress as this process sees it, and those of them
/// that run here. Dropping it stops those.
///
/// Built with [`Projections::start`] every projection runs in this process;
/// built with [`Projections::watch`] none does (they run under leases, here
/// or in other processes, see [`Projections::run_one`]) and their progress
/// is heard from wherever they run.
#[derive(Debug)]
pub struct Projections {
    board: Board,
    running: Vec<Running>,
}

/// The names of every projection, as their checkpoints are called.
pub fn names() -> Vec<&'static str> {
    all().iter().map(|p| p.name()).collect()
}

/// One projection running in this process; dropping it stops it.
#[derive(Debug)]
pub struct Running {
    _attached: Attached,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Projections {
    /// Starts every projection from its checkpoint, each in a task of its own.
    pub async fn start(store: PgEventStore) -> anyhow::Result<Self> {
        let mut started = Self::watch(store.pool().clone()).await?;
        for name in names() {
            let running = started.run_one(store.clone(), name).await?;
            started.running.push(running);
        }
        Ok(started)
    }

    /// Runs none here: follows the projections wherever they run.
    pub async fn watch(pool: sqlx::PgPool) -> Result<Self, sqlx::Error> {
        Ok(Self {
            board: Board::start(pool, &names()).await?,
            running: Vec::new(),
        })
    }

    /// Starts the projection called `name` in this process (its lease was
    /// won), its progress shown on this board and written for others.
    pub async fn run_one(&self, store: PgEventStore, name: &str) -> anyhow::Result<Running> {
        let projection = all()
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| anyhow::anyhow!("no projection is called {name}"))?;
        let name = projection.name();
        let (progress, task) = run(store, projection).await?;
        let progress = chorus_postgres::checkpoints::Progress::following(progress.0);
        Ok(Running {
            _attached: self.board.attach(name, progress),
            task,
        })
    }

    /// Waits until every projection has applied everything up to `position`
    /// (an append's last position), so that a reader sees that write.
    /// Returns false if `timeout` passes first.
    pub async fn wait_for(&self, position: Position, timeout: Duration) -> bool {
        self.board.reached(&names(), position, timeout).await
    }

    /// How far each projection has got, by name.
    pub fn positions(&self) -> Vec<(&'static str, Position)> {
        let known = self.board.positions();
        names()
            .into_iter()
            .map(|name| {
                let at = known
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(Position::START, |(_, at)| *at);
                (name, at)
            })
            .collect()
    }
}
