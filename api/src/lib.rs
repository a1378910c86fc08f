//! Chorus' entry points: configuration, the HTTP server and the commands of
//! the `chorus` binary.

pub mod activitypub;
pub mod admin;
pub mod app;
pub mod commands;
pub mod config;
pub mod database;
pub mod events;
pub mod federation;
pub mod graphql;
pub mod history;
pub mod http;
pub mod keys;
pub mod roles;
pub mod tokens;

pub use config::Settings;
