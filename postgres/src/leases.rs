//! Leases: which process runs a subscriber that must run in one process at
//! a time (each projection, the interpreter, the delivery planner, the
//! erasure), however many processes are started against one database.
//!
//! A lease is a session-level Postgres advisory lock, held on one
//! connection a process keeps for its leases. When the process dies, its
//! session ends and Postgres releases its locks at once; the other
//! processes try for free leases every [`LeaseOptions::retry`], so a lease
//! is taken over within that. A process that loses its session (the
//! database restarted, the network dropped) stops every subscriber it held
//! a lease for before trying again, and the subscribers' checkpoints are
//! compare-and-set (`checkpoints::advance`), so even a holder that had not
//! noticed yet cannot commit over its successor's work.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The first key of every Chorus advisory lock (`'CHOR'`), so that its
/// leases never collide with another application's locks on the same
/// database; the second is the lease's name hashed by Postgres.
const LOCK_CLASS: i32 = 0x4348_4f52;

/// What a started subscriber is kept as while its lease is held; dropping
/// it must stop the subscriber.
pub type Running = Box<dyn Send + Sync>;

type StartFuture = Pin<Box<dyn Future<Output = anyhow::Result<Running>> + Send>>;
type Start = Arc<dyn Fn() -> StartFuture + Send + Sync>;

/// How leases are kept.
#[derive(Clone, Copy, Debug)]
pub struct LeaseOptions {
    /// How often free leases are tried for, and the session checked.
    pub retry: Duration,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        Self {
            retry: Duration::from_secs(1),
        }
    }
}

/// The leases a process wants, and the subscribers it runs under those it
/// holds. Dropping it stops them and gives the leases back.
pub struct Leases {
    task: JoinHandle<()>,
    held: watch::Receiver<Vec<String>>,
}

impl fmt::Debug for Leases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leases")
            .field("held", &*self.held.borrow())
            .finish_non_exhaustive()
    }
}

impl Drop for Leases {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The leases to ask for, each with how to start what it guards.
#[derive(Default)]
pub struct LeaseSet {
    wanted: BTreeMap<String, Start>,
}

impl fmt::Debug for LeaseSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.wanted.keys()).finish()
    }
}

impl LeaseSet {
    /// Asks for the lease `name`; whenever it is won, `start` is called and
    /// what it returns is kept until the lease is lost (or dropped with the
    /// [`Leases`]). A start that fails gives the lease back, to be tried
    /// again later, here or elsewhere.
    pub fn add<F, Fut, T>(&mut self, name: impl Into<String>, start: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
        T: Send + Sync + 'static,
    {
        let start = Arc::new(start);
        self.wanted.insert(
            name.into(),
            Arc::new(move || {
                let start = start.clone();
                Box::pin(async move { start().await.map(|t| Box::new(t) as Running) })
            }),
        );
    }

    /// Whether no lease is asked for.
    pub fn is_empty(&self) -> bool {
        self.wanted.is_empty()
    }

    /// Starts keeping the leases, on a connection of their own made with
    /// `pool`'s options and named `holder` (as `application_name`, so
    /// `pg_stat_activity` and [`holders`] tell who holds what).
    pub fn keep(self, pool: &PgPool, holder: &str, options: LeaseOptions) -> Leases {
        let connect = pool
            .connect_options()
            .as_ref()
            .clone()
            .application_name(holder);
        let (sender, held) = watch::channel(Vec::new());
        let task = tokio::spawn(keep(self.wanted, connect, options, sender));
        Leases { task, held }
    }
}

impl Leases {
    /// The leases held now.
    pub fn held(&self) -> Vec<String> {
        self.held.borrow().clone()
    }

    /// Waits until the leases held satisfy `test`; false after `timeout`.
    pub async fn wait_until(&self, timeout: Duration, test: impl Fn(&[String]) -> bool) -> bool {
        let mut held = self.held.clone();
        tokio::time::timeout(timeout, held.wait_for(|h| test(h)))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

async fn keep(
    wanted: BTreeMap<String, Start>,
    connect: PgConnectOptions,
    options: LeaseOptions,
    held_now: watch::Sender<Vec<String>>,
) {
    let mut tick = tokio::time::interval(options.retry);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut session = match connect.connect().await {
            Ok(session) => session,
            Err(error) => {
                tracing::warn!(%error, "cannot connect to take leases; retrying");
                tick.tick().await;
                continue;
            }
        };
        // What runs under each lease held on this session.
        let mut running: BTreeMap<String, Running> = BTreeMap::new();
        let lost = loop {
            tick.tick().await;
            if let Err(error) = try_for_free(&wanted, &mut session, &mut running).await {
                break error;
            }
            held_now.send_if_modified(|held| {
                let now: Vec<String> = running.keys().cloned().collect();
                let changed = *held != now;
                *held = now;
                changed
            });
            // The check that the session (and so every lease) is still there.
            if let Err(error) = session.ping().await {
                break error;
            }
        };
        if !running.is_empty() {
            let names: Vec<&String> = running.keys().collect();
            tracing::error!(%lost, leases = ?names, "lost the session holding leases; stopping what ran under them");
        } else {
            tracing::warn!(%lost, "lost the session for leases; reconnecting");
        }
        drop(running);
        held_now.send_replace(Vec::new());
        // Closing makes sure the server side ends too (if it still lives).
        let _ = session.close().await;
    }
}

/// Tries for each lease not held yet; starts what it guards when won.
async fn try_for_free(
    wanted: &BTreeMap<String, Start>,
    session: &mut PgConnection,
    running: &mut BTreeMap<String, Running>,
) -> Result<(), sqlx::Error> {
    for (name, start) in wanted {
        if running.contains_key(name) {
            continue;
        }
        let won: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
            .bind(LOCK_CLASS)
            .bind(name)
            .fetch_one(&mut *session)
            .await?;
        if !won {
            continue;
        }
        match start().await {
            Ok(started) => {
                tracing::info!(lease = %name, "took the lease; running");
                running.insert(name.clone(), started);
            }
            Err(error) => {
                tracing::error!(lease = %name, error = format!("{error:#}"), "took the lease but could not start; giving it back");
                sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
                    .bind(LOCK_CLASS)
                    .bind(name)
                    .execute(&mut *session)
                    .await?;
            }
        }
    }
    Ok(())
}

/// Who holds which of `names` now: the holding session's
/// `application_name` and its server process id, by lease name.
pub async fn holders(
    pool: &PgPool,
    names: &[String],
) -> Result<Vec<(String, Option<(String, i32)>)>, sqlx::Error> {
    let rows: Vec<(String, Option<String>, Option<i32>)> = sqlx::query_as(
        "SELECT n.name, a.application_name, a.pid
         FROM unnest($1::text[]) AS n(name)
         LEFT JOIN pg_locks l
           ON l.locktype = 'advisory' AND l.granted
          AND l.classid::bigint = ($2::int::bigint & 4294967295)
          AND l.objid::bigint = (hashtext(n.name)::bigint & 4294967295)
          AND l.objsubid = 2
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
         LEFT JOIN pg_stat_activity a ON a.pid = l.pid
         ORDER BY n.name",
    )
    .bind(names)
    .bind(LOCK_CLASS)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, app, pid)| (name, app.zip(pid)))
        .collect())
}
