//! Side-effect subscribers of the log: delivery of outbound activities and
//! automatic replies. Unlike projections they act on the world, so each has
//! its own checkpoint and idempotency keys, and rebuilding a projection never
//! makes them act again.
