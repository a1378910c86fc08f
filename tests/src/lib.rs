//! Test support for Chorus: a fresh Postgres database per test on a
//! throwaway cluster, and the contract suite every event store must pass.

pub mod app;
pub mod bench;
pub mod busy_log;
pub mod cli;
pub mod contract;
pub mod history;
pub mod outbound;
pub mod pg;
pub mod poll;
pub mod remote;
pub mod replica;
pub mod sink;
pub mod upstream;
pub mod ws;
