//! What a `chorus serve` process runs: its role, and the leases that make
//! each subscriber of the log run in exactly one process at a time, however
//! many processes share the database.
//!
//! | role        | runs                                                              |
//! |-------------|-------------------------------------------------------------------|
//! | `api`       | HTTP (GraphQL, inboxes, ActivityPub documents, `/metrics`)        |
//! | `projector` | the projections, each under its lease                              |
//! | `worker`    | the senders; the interpreter, the planner and the erasure, each under its lease |
//! | `all`       | all of the above (the default, for one machine)                   |
//!
//! Any number of processes of each role can run. A process that wins a
//! lease starts what it guards; when the process dies, its database session
//! ends, the lease is free and another process of a role that wants it takes
//! it over within [`LeaseOptions::retry`]. Senders need no lease: they claim
//! jobs under row locks and run in every `worker` (and in `all` unless
//! `delivery_in_process` is off). With an external log of record, every
//! role also asks for the mirror's lease ([`MIRROR_LEASE`]).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chorus_postgres::{Board, LeaseOptions, LeaseSet, Leases, PgEventStore};
use chorus_projections::Projections;
use chorus_workers::delivery::Planner;
use chorus_workers::erasure::{Erasure, ErasureOptions, Planned};
use tokio::sync::Notify;

use crate::app::App;
use crate::federation::Federation;
use crate::federation::delivery::Projected;
use crate::federation::interpret::{self, Interpreter};

/// What a process runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// HTTP only.
    Api,
    /// The projections.
    Projector,
    /// Deliveries, the interpreter and the erasure.
    Worker,
    /// Everything.
    #[default]
    All,
}

impl Role {
    /// Whether this process serves HTTP.
    pub fn serves_http(self) -> bool {
        matches!(self, Self::Api | Self::All)
    }

    /// Whether this process runs projections (under their leases).
    pub fn projects(self) -> bool {
        matches!(self, Self::Projector | Self::All)
    }

    /// Whether this process runs the interpreter, the planner, the erasure
    /// (under their leases) and senders.
    pub fn works(self) -> bool {
        matches!(self, Self::Worker | Self::All)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Api => "api",
            Self::Projector => "projector",
            Self::Worker => "worker",
            Self::All => "all",
        })
    }
}

/// A role that is not one of `api`, `projector`, `worker`, `all`.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a role: expected api, projector, worker or all")]
pub struct UnknownRole(String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "api" => Ok(Self::Api),
            "projector" => Ok(Self::Projector),
            "worker" => Ok(Self::Worker),
            "all" => Ok(Self::All),
            _ => Err(UnknownRole(s.to_owned())),
        }
    }
}

/// The lease of a projection.
pub fn projection_lease(name: &str) -> String {
    format!("projection:{name}")
}

/// The lease a subscriber runs under (checkpoints and leases share names,
/// but for projections' `projection:` prefix).
pub fn lease_of(subscriber: &str) -> String {
    if chorus_projections::names().contains(&subscriber) {
        projection_lease(subscriber)
    } else {
        subscriber.to_owned()
    }
}

/// Every lease there is: one per projection, then the interpreter, the
/// delivery planner and the erasure.
pub fn all_leases() -> Vec<String> {
    let mut leases: Vec<String> = chorus_projections::names()
        .into_iter()
        .map(projection_lease)
        .collect();
    leases.extend(
        [
            interpret::SUBSCRIBER,
            chorus_workers::delivery::plan::SUBSCRIBER,
            chorus_workers::erasure::SUBSCRIBER,
        ]
        .map(str::to_owned),
    );
    leases
}

/// The lease of the mirror of an external log of record (only with
/// `CHORUS_EVENT_STORE` set to one; every role asks for it then, since
/// every process's appends wait for it).
pub const MIRROR_LEASE: &str = chorus_postgres::mirror::LEASE;

/// Asks for the mirror's lease, when `store` has an upstream log of record.
pub fn mirror(leases: &mut LeaseSet, store: &PgEventStore) {
    if store.upstream().is_none() {
        return;
    }
    let store = store.clone();
    leases.add(MIRROR_LEASE, move || {
        let store = store.clone();
        async move { Ok(chorus_postgres::Mirror::start(&store).await?) }
    });
}

/// The subscribers other than projections that run under leases, whose
/// progress a worker process follows wherever they run.
pub async fn worker_board(pool: sqlx::PgPool) -> Result<Board, sqlx::Error> {
    Board::start(
        pool,
        &[
            interpret::SUBSCRIBER,
            chorus_workers::delivery::plan::SUBSCRIBER,
            chorus_workers::erasure::SUBSCRIBER,
        ],
    )
    .await
}

/// Stops a subscriber that runs as a detached task when its lease goes.
struct StopOnDrop<F: Fn() + Send + Sync>(F);

impl<F: Fn() + Send + Sync> Drop for StopOnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// What a process's leases start.
#[derive(Clone, Debug)]
pub struct Subscribers {
    pub store: PgEventStore,
    pub base_url: String,
    /// The projections' board (and those running here).
    pub projections: Arc<Projections>,
    /// The other subscribers' board.
    pub board: Board,
    /// Woken by the planner when it adds jobs (senders of this process).
    pub planned: Arc<Notify>,
}

impl Subscribers {
    /// The leases of the projections, for a projector.
    pub fn projector(&self, leases: &mut LeaseSet) {
        for name in chorus_projections::names() {
            let this = self.clone();
            leases.add(projection_lease(name), move || {
                let this = this.clone();
                async move { this.projections.run_one(this.store.clone(), name).await }
            });
        }
    }

    /// The leases of the interpreter, the planner and the erasure, for a
    /// worker.
    pub fn worker(&self, leases: &mut LeaseSet, federation: Arc<Federation>) {
        let this = self.clone();
        leases.add(interpret::SUBSCRIBER, move || {
            let this = this.clone();
            let federation = federation.clone();
            async move {
                let app = App::new(this.store.clone(), &this.base_url);
                let interpreter = Interpreter::start(app, federation).await?;
                let attached = this
                    .board
                    .attach(interpret::SUBSCRIBER, interpreter.progress());
                Ok((attached, StopOnDrop(move || interpreter.stop())))
            }
        });
        let this = self.clone();
        leases.add(chorus_workers::delivery::plan::SUBSCRIBER, move || {
            let this = this.clone();
            async move {
                let planner = Planner::start(
                    this.store.clone(),
                    &this.base_url,
                    Arc::new(Projected(this.projections.clone())),
                    this.planned.clone(),
                )
                .await?;
                let name = chorus_workers::delivery::plan::SUBSCRIBER;
                let attached = this.board.attach(name, planner.progress());
                Ok((attached, StopOnDrop(move || planner.stop())))
            }
        });
        let this = self.clone();
        leases.add(chorus_workers::erasure::SUBSCRIBER, move || {
            let this = this.clone();
            async move {
                let erasure = Erasure::start(
                    this.store.clone(),
                    Arc::new(Planned(this.board.clone())),
                    ErasureOptions::default(),
                )
                .await?;
                let name = chorus_workers::erasure::SUBSCRIBER;
                // Dropping the erasure stops it.
                Ok((this.board.attach(name, erasure.progress()), erasure))
            }
        });
    }
}

/// Starts keeping `leases` for a process of `role`, its sessions named so
/// that `pg_stat_activity` and the admin API tell which process holds what.
pub fn keep(leases: LeaseSet, pool: &sqlx::PgPool, role: Role, options: LeaseOptions) -> Leases {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "localhost".to_owned());
    let holder = format!("chorus {role} {host} pid {}", std::process::id());
    leases.keep(pool, &holder, options)
}
