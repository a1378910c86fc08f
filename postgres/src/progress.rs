//! Subscribers' progress across processes.
//!
//! A subscriber's stored checkpoint can trail what it has done by up to a
//! second (runs of events it ignores are saved lazily), which is too slow
//! for a GraphQL mutation waiting in one process for a projection running
//! in another. So each process keeps a [`Board`]: the progress of its own
//! subscribers, which it announces on a notification channel as it moves,
//! and that of every other process's subscribers, which it hears there.
//! Each process says where its subscribers are again once a second, and
//! the stored checkpoints are read once a second too, so a lost
//! notification (or one sent before another process listened) costs at
//! most that.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chorus_domain::Position;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::checkpoints::{self, Progress};

/// The notification channel progress travels on.
pub const CHANNEL: &str = "chorus_progress";

/// How often stored checkpoints are read, whatever is heard.
const POLL: Duration = Duration::from_secs(1);

/// How often this process announces its own subscribers' progress, at most.
const ANNOUNCE_INTERVAL: Duration = Duration::from_millis(5);

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

/// What a notification carries: positions by subscriber name.
#[derive(Debug, Serialize, Deserialize)]
struct Announcement(HashMap<String, Position>);

impl Board {
    /// A board for the subscribers called `names`, starting from their
    /// stored checkpoints, listening and polling in the background.
    pub async fn start(pool: PgPool, names: &[&str]) -> Result<Self, sqlx::Error> {
        let stored: HashMap<String, Position> =
            checkpoints::list(&pool).await?.into_iter().collect();
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
                tasks: std::sync::Mutex::default(),
            }),
        };
        let weak = Arc::downgrade(&board.inner);
        let (listening_now, heard) = tokio::sync::oneshot::channel();
        let listening = tokio::spawn(listen(pool.clone(), weak.clone(), listening_now));
        let announcing = tokio::spawn(announce(pool, weak, board.inner.moved.clone()));
        if let Ok(mut tasks) = board.inner.tasks.lock() {
            tasks.extend([listening, announcing]);
        }
        // Announcements made before LISTEN took effect would be missed (then
        // made up for by the next one, within a second): wait for it, a
        // little.
        let _ = tokio::time::timeout(Duration::from_secs(5), heard).await;
        Ok(board)
    }

    /// Follows a subscriber running in this process: its moves show here at
    /// once and are announced to the other processes. Ends when the
    /// subscriber stops.
    pub fn attach(&self, name: &str, progress: Progress) {
        let Some(sender) = self.inner.positions.get(name).cloned() else {
            return;
        };
        if let Ok(mut local) = self.inner.local.lock() {
            local.insert(name.to_owned(), progress.clone());
        }
        let weak = Arc::downgrade(&self.inner);
        let mut receiver = progress.0;
        let task = tokio::spawn(async move {
            loop {
                let at = *receiver.borrow_and_update();
                sender.send_replace(at);
                let Some(inner) = weak.upgrade() else { return };
                inner.dirty.store(true, Ordering::Release);
                inner.moved.notify_one();
                drop(inner);
                if receiver.changed().await.is_err() {
                    return;
                }
            }
        });
        if let Ok(mut tasks) = self.inner.tasks.lock() {
            tasks.retain(|t| !t.is_finished());
            tasks.push(task);
        }
    }

    /// Stops announcing a local subscriber (its lease was given up).
    pub fn detach(&self, name: &str) {
        if let Ok(mut local) = self.inner.local.lock() {
            local.remove(name);
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

    fn heard(&self, announcement: Announcement) {
        let local = self.local_names();
        for (name, at) in announcement.0 {
            // A subscriber of this process is known first-hand.
            if local.contains(&name) {
                continue;
            }
            if let Some(sender) = self.inner.positions.get(&name) {
                // Announcements say where a subscriber is now, backwards
                // too (after an admin's replay).
                sender.send_if_modified(|p| std::mem::replace(p, at) != at);
            }
        }
    }

    fn polled(&self, stored: Vec<(String, Position)>) {
        let local = self.local_names();
        for (name, at) in stored {
            if local.contains(&name) {
                continue;
            }
            if let Some(sender) = self.inner.positions.get(&name) {
                // Stored checkpoints trail announcements: they only raise.
                sender.send_if_modified(|p| {
                    let raise = at > *p;
                    if raise {
                        *p = at;
                    }
                    raise
                });
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

    fn announcement(&self) -> Option<String> {
        let local = self.inner.local.lock().ok()?;
        if local.is_empty() {
            return None;
        }
        let positions = local
            .iter()
            .map(|(name, progress)| (name.clone(), progress.position()))
            .collect();
        serde_json::to_string(&Announcement(positions)).ok()
    }
}

/// Hears other processes' announcements, and reads the stored checkpoints
/// once a second, reconnecting when the connection drops.
async fn listen(
    pool: PgPool,
    board: std::sync::Weak<Inner>,
    listening: tokio::sync::oneshot::Sender<()>,
) {
    let mut listening = Some(listening);
    let upgrade = || board.upgrade().map(|inner| Board { inner });
    while !pool.is_closed() {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "could not connect to hear subscribers' progress");
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        if let Err(error) = listener.listen(CHANNEL).await {
            tracing::warn!(%error, "could not LISTEN for subscribers' progress");
            tokio::time::sleep(POLL).await;
            continue;
        }
        if let Some(listening) = listening.take() {
            let _ = listening.send(());
        }
        let mut poll = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                heard = listener.try_recv() => match heard {
                    Ok(Some(notification)) => {
                        let Some(board) = upgrade() else { return };
                        match serde_json::from_str::<Announcement>(notification.payload()) {
                            Ok(announcement) => board.heard(announcement),
                            Err(error) => tracing::debug!(%error, "unreadable progress announcement"),
                        }
                    }
                    // Reconnected: what was missed is polled below.
                    Ok(None) => poll.reset_immediately(),
                    Err(_) if pool.is_closed() => return,
                    Err(error) => {
                        tracing::warn!(%error, "lost the connection hearing subscribers' progress");
                        break;
                    }
                },
                _ = poll.tick() => {
                    let Some(board) = upgrade() else { return };
                    match checkpoints::list(&pool).await {
                        Ok(stored) => board.polled(stored),
                        Err(error) => tracing::debug!(%error, "could not read checkpoints"),
                    }
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Announces this process's subscribers' progress as it moves, and once a
/// second anyway: bursts coalesce into one notification at most every
/// [`ANNOUNCE_INTERVAL`],
/// sent outside any subscriber's transaction (a notifying commit takes a
/// cluster-wide lock) and without waiting for the disk.
async fn announce(pool: PgPool, board: std::sync::Weak<Inner>, moved: Arc<Notify>) {
    loop {
        let Some(inner) = board.upgrade() else { return };
        if !inner.dirty.swap(false, Ordering::AcqRel) {
            drop(inner);
            // Said again once a second even without a move, for a process
            // that started listening (or reconnected) since.
            let _ = tokio::time::timeout(POLL, moved.notified()).await;
            if let Some(inner) = board.upgrade() {
                inner.dirty.store(true, Ordering::Release);
            }
            continue;
        }
        let payload = Board { inner }.announcement();
        let Some(payload) = payload else { continue };
        if let Err(error) =
            sqlx::query("SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(payload)
                .execute(&pool)
                .await
        {
            if pool.is_closed() {
                return;
            }
            tracing::debug!(%error, "could not announce progress; others will poll");
        }
        tokio::time::sleep(ANNOUNCE_INTERVAL).await;
    }
}
