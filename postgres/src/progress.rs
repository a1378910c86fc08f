//! Subscribers' progress across processes.
//!
//! A subscriber's stored checkpoint can trail what it has done by up to a
//! second (runs of events it ignores are saved lazily), which is too slow
//! for a GraphQL mutation waiting in one process for a projection running
//! in another. So each process keeps a [`Board`]: the progress of its own
//! subscribers, which it writes to the unlogged table `subscriber_progress`
//! as they move (one statement at most every few milliseconds, no WAL),
//! and that of every other process's subscribers, which it reads from
//! there (with the stored checkpoints where a subscriber has no row) every
//! few milliseconds while someone in the process waits, and once a second
//! otherwise.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chorus_domain::Position;
use sqlx::PgPool;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::checkpoints::{self, Progress};

/// How often others' progress is read while nobody here waits for it.
const POLL: Duration = Duration::from_secs(1);

/// How often others' progress is read while someone here waits for it.
const POLL_WAITING: Duration = Duration::from_millis(3);

/// How often this process writes its own subscribers' progress, at most.
const ANNOUNCE_INTERVAL: Duration = Duration::from_millis(3);

/// One process's view of the progress of the subscribers it was asked
/// about, wherever they run. Cheap to clone; the tasks stop when the last
/// clone is dropped.
#[derive(Clone, Debug)]
pub struct Board {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    positions: HashMap<String, watch::Sender<Position>>,
    /// Set when a local subscriber moved and its move is not announced yet.
    moved: Arc<Notify>,
    /// The local subscribers, by name, whose progress this process announces.
    local: std::sync::Mutex<HashMap<String, Progress>>,
    dirty: AtomicBool,
    /// Callers of [`Board::reached`] waiting now; while there are any,
    /// others' progress is read every [`POLL_WAITING`].
    waiting: std::sync::atomic::AtomicUsize,
    waited: Arc<Notify>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.lock() {
            for task in tasks.iter() {
                task.abort();
            }
        }
    }
}

impl Board {
    /// A board for the subscribers called `names`, starting from where
    /// they were last said to be, following them in the background.
    pub async fn start(pool: PgPool, names: &[&str]) -> Result<Self, sqlx::Error> {
        let stored: HashMap<String, Position> = said(&pool).await?.into_iter().collect();
        let positions = names
            .iter()
            .map(|name| {
                let at = stored.get(*name).copied().unwrap_or(Position::START);
                ((*name).to_owned(), watch::channel(at).0)
            })
            .collect();
        let board = Self {
            inner: Arc::new(Inner {
                positions,
                moved: Arc::new(Notify::new()),
                local: std::sync::Mutex::default(),
                dirty: AtomicBool::new(false),
                waiting: std::sync::atomic::AtomicUsize::new(0),
                waited: Arc::new(Notify::new()),
                tasks: std::sync::Mutex::default(),
            }),
        };
        let weak = Arc::downgrade(&board.inner);
        let following = tokio::spawn(follow(
            pool.clone(),
            weak.clone(),
            board.inner.waited.clone(),
        ));
        let announcing = tokio::spawn(announce(pool, weak, board.inner.moved.clone()));
        if let Ok(mut tasks) = board.inner.tasks.lock() {
            tasks.extend([following, announcing]);
        }
        Ok(board)
    }

    /// Follows a subscriber running in this process: its moves show here at
    /// once and are written for the other processes, until the returned
    /// guard is dropped (its lease was given up) or the subscriber stops.
    pub fn attach(&self, name: &str, progress: Progress) -> Attached {
        let weak = Arc::downgrade(&self.inner);
        let Some(sender) = self.inner.positions.get(name).cloned() else {
            return Attached {
                board: weak,
                name: name.to_owned(),
                task: None,
            };
        };
        if let Ok(mut local) = self.inner.local.lock() {
            local.insert(name.to_owned(), progress.clone());
        }
        let mut receiver = progress.0;
        let following = weak.clone();
        let task = tokio::spawn(async move {
            loop {
                let at = *receiver.borrow_and_update();
                sender.send_replace(at);
                let Some(inner) = following.upgrade() else {
                    return;
                };
                inner.dirty.store(true, Ordering::Release);
                inner.moved.notify_one();
                drop(inner);
                if receiver.changed().await.is_err() {
                    return;
                }
            }
        });
        Attached {
            board: weak,
            name: name.to_owned(),
            task: Some(task),
        }
    }

    /// The progress of one subscriber, as this process knows it.
    pub fn progress(&self, name: &str) -> Option<Progress> {
        self.inner
            .positions
            .get(name)
            .map(|sender| Progress(sender.subscribe()))
    }

    /// Waits until every one of `names` has done everything up to
    /// `position`; false after `timeout`.
    pub async fn reached(&self, names: &[&str], position: Position, timeout: Duration) -> bool {
        let _waiting = Waiting::new(&self.inner);
        let waits = names.iter().filter_map(|name| {
            let mut receiver = self.inner.positions.get(*name)?.subscribe();
            Some(async move { receiver.wait_for(|p| *p >= position).await.is_ok() })
        });
        tokio::time::timeout(timeout, futures::future::join_all(waits))
            .await
            .is_ok_and(|reached| reached.into_iter().all(|r| r))
    }

    /// Every subscriber on the board and its last known position.
    pub fn positions(&self) -> Vec<(String, Position)> {
        let mut all: Vec<(String, Position)> = self
            .inner
            .positions
            .iter()
            .map(|(name, sender)| (name.clone(), *sender.borrow()))
            .collect();
        all.sort();
        all
    }

    /// Takes where others' subscribers were said to be (backwards too:
    /// after an admin's replay).
    fn read(&self, said: Vec<(String, Position)>) {
        let local = self.local_names();
        for (name, at) in said {
            // A subscriber of this process is known first-hand.
            if local.contains(&name) {
                continue;
            }
            if let Some(sender) = self.inner.positions.get(&name) {
                sender.send_if_modified(|p| std::mem::replace(p, at) != at);
            }
        }
    }

    fn local_names(&self) -> Vec<String> {
        self.inner
            .local
            .lock()
            .map(|local| local.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn own(&self) -> Vec<(String, Position)> {
        self.inner
            .local
            .lock()
            .map(|local| {
                local
                    .iter()
                    .map(|(name, progress)| (name.clone(), progress.position()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A local subscriber followed by a [`Board`]; dropping it stops
/// following and writing its progress.
#[derive(Debug)]
#[must_use = "the subscriber is followed only while this is kept"]
pub struct Attached {
    board: std::sync::Weak<Inner>,
    name: String,
    task: Option<JoinHandle<()>>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        if let Some(inner) = self.board.upgrade()
            && let Ok(mut local) = inner.local.lock()
        {
            local.remove(&self.name);
        }
    }
}

/// Counts a caller of [`Board::reached`] for as long as it waits.
struct Waiting<'a>(&'a Inner);

impl<'a> Waiting<'a> {
    fn new(inner: &'a Inner) -> Self {
        if inner.waiting.fetch_add(1, Ordering::AcqRel) == 0 {
            inner.waited.notify_one();
        }
        Self(inner)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where every subscriber was last said to be: its row of
/// `subscriber_progress`, else its stored checkpoint.
async fn said(pool: &PgPool) -> Result<Vec<(String, Position)>, sqlx::Error> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT subscriber,
                coalesce(p.position_major, c.position_major),
                coalesce(p.position_minor, c.position_minor)
         FROM subscriber_checkpoints c FULL JOIN subscriber_progress p USING (subscriber)",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, major, minor)| (name, checkpoints::from_db(major, minor)))
        .collect())
}

/// Reads where others' subscribers are: often while someone waits, once a
/// second otherwise.
async fn follow(pool: PgPool, board: std::sync::Weak<Inner>, waited: Arc<Notify>) {
    while !pool.is_closed() {
        let Some(inner) = board.upgrade() else { return };
        let waiting = inner.waiting.load(Ordering::Acquire) > 0;
        match said(&pool).await {
            Ok(said) => Board { inner }.read(said),
            Err(error) if pool.is_closed() => {
                tracing::debug!(%error, "stopped following subscribers' progress");
                return;
            }
            Err(error) => tracing::debug!(%error, "could not read subscribers' progress"),
        }
        if waiting {
            tokio::time::sleep(POLL_WAITING).await;
        } else {
            let _ = tokio::time::timeout(POLL, waited.notified()).await;
        }
    }
}

/// Writes this process's subscribers' progress as it moves: bursts
/// coalesce into one statement at most every [`ANNOUNCE_INTERVAL`], on an
/// unlogged table (no WAL, no flush).
async fn announce(pool: PgPool, board: std::sync::Weak<Inner>, moved: Arc<Notify>) {
    loop {
        let Some(inner) = board.upgrade() else { return };
        if !inner.dirty.swap(false, Ordering::AcqRel) {
            drop(inner);
            moved.notified().await;
            continue;
        }
        let own = Board { inner }.own();
        if own.is_empty() {
            continue;
        }
        let names: Vec<&str> = own.iter().map(|(n, _)| n.as_str()).collect();
        let (majors, minors): (Vec<i64>, Vec<i64>) =
            own.iter().map(|(_, at)| checkpoints::to_db(*at)).unzip();
        if let Err(error) = sqlx::query(
            "INSERT INTO subscriber_progress (subscriber, position_major, position_minor)
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])
             ON CONFLICT (subscriber) DO UPDATE
             SET position_major = excluded.position_major,
                 position_minor = excluded.position_minor,
                 updated_at = now()
             WHERE (subscriber_progress.position_major, subscriber_progress.position_minor)
                   IS DISTINCT FROM (excluded.position_major, excluded.position_minor)",
        )
        .bind(&names)
        .bind(&majors)
        .bind(&minors)
        .execute(&pool)
        .await
        {
            if pool.is_closed() {
                return;
            }
            tracing::debug!(%error, "could not write progress; others will read checkpoints");
        }
        tokio::time::sleep(ANNOUNCE_INTERVAL).await;
    }
}
