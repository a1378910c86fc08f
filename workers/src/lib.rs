//! Side-effect subscribers of the log: delivery of outbound activities, the
//! erasure of deleted content, and the HTTP client Chorus talks to other
//! servers with. Unlike projections
//! they act on the world, so each has its own checkpoint and idempotency
//! keys, and rebuilding a projection never makes them act again.

pub mod delivery;
pub mod erasure;
pub mod fetch;
