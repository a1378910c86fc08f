//! `chorus`: an event-sourced ActivityPub federation server.

use std::path::PathBuf;
use std::process::ExitCode;

use chorus_api::commands;
use chorus_api::config::{LogFormat, Settings};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "chorus",
    version,
    about = "An event-sourced ActivityPub federation server"
)]
struct Cli {
    /// A TOML configuration file; environment variables override it.
    #[arg(long, env = "CHORUS_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTP; without DATABASE_URL, provision and run a private Postgres cluster.
    Serve,
    /// Apply pending database migrations.
    Migrate,
    /// Manage the private Postgres cluster.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterAction {
    /// Stop the private cluster in the data directory, if it is running.
    Stop,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("chorus: {error}");
            return ExitCode::from(2);
        }
    };
    init_tracing(settings.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("chorus: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve => commands::serve(settings).await,
            Command::Migrate => commands::migrate(settings).await,
            Command::Cluster {
                action: ClusterAction::Stop,
            } => commands::cluster_stop(settings).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("chorus: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
