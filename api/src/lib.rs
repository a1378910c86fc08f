//! Chorus' entry points: configuration, the HTTP server and the commands of
//! the `chorus` binary.

pub mod activitypub;
pub mod commands;
pub mod config;
pub mod database;
pub mod http;

pub use config::Settings;
