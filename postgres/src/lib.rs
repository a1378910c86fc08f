//! Postgres adapters for Chorus: the default [`EventStore`](chorus_domain::EventStore)
//! implementation, subscriber checkpoints, migrations and the private cluster
//! that `chorus serve` and the tests provision when no database is configured.

pub mod checkpoints;
pub mod cluster;
pub mod group;
mod import;
pub mod leases;
pub mod migrate;
pub mod mirror;
pub mod narrowed;
pub mod progress;
pub mod store;
mod upstream;

pub use cluster::{ClusterError, ClusterOptions, ClusterProfile, PrivateCluster};
pub use group::{GroupAppender, GroupOptions};
pub use leases::{LeaseOptions, LeaseSet, Leases};
pub use mirror::Mirror;
pub use narrowed::Narrowed;
pub use progress::Board;
pub use store::{NewStream, PgEventStore, StoreOptions};
