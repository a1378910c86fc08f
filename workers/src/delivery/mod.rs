//! Delivery of outbound activities: the planner turns each local actor's
//! activity in the log into jobs of a durable queue, the senders carry them
//! to remote inboxes, and [`admin`] lets operators look at and act on the
//! queue.

pub mod admin;
pub mod outcomes;
pub mod plan;
pub mod policy;
pub mod send;

pub use outcomes::{HostClass, Outcome, Outcomes};
pub use plan::{Planner, REPROCESS, ReadModels};
pub use send::{SenderOptions, Senders};
