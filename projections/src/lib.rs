//! Read models built from the log.
//!
//! A [`Projection`] has a stable name, a filter of the event types it reads,
//! and an `apply` that writes rows. The [`run`] loop feeds it from a live
//! subscription and writes its rows and its checkpoint in one transaction, so
//! a crash can never separate them. Projections never read another
//! projection's tables and never send anything.

pub mod runner;

pub use runner::{Progress, Projection, ProjectionError, run};
