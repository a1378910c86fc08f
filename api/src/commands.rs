//! What the subcommands of `chorus` do.

use anyhow::Context as _;
use chorus_postgres::{PgEventStore, PrivateCluster};
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::database::Database;
use crate::http::{AppState, router};

/// `chorus serve`: open (or provision) the database, migrate, serve until
/// Ctrl-C or SIGTERM, then stop the private cluster if there is one.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let listener = TcpListener::bind(settings.bind)
        .await
        .with_context(|| format!("cannot listen on {}", settings.bind))?;
    let database = Database::open(&settings).await?;
    let result = async {
        chorus_postgres::migrate::run(&database.pool)
            .await
            .context("applying migrations")?;
        let store = PgEventStore::new(database.pool.clone());
        let app = router(AppState::new(
            database.pool.clone(),
            store,
            &settings.base_url,
        ));
        tracing::info!(bind = %settings.bind, base_url = %settings.base_url, "serving");
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("the HTTP server failed")
    }
    .await;
    tracing::info!("shutting down");
    database.close().await;
    result
}

/// `chorus migrate`: apply pending migrations and exit.
pub async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let database = Database::open(&settings).await?;
    let result = chorus_postgres::migrate::run(&database.pool)
        .await
        .context("applying migrations");
    if result.is_ok() {
        println!("migrations applied");
    }
    database.close().await;
    result
}

/// `chorus cluster stop`: stop a private cluster left running.
pub async fn cluster_stop(settings: Settings) -> anyhow::Result<()> {
    let stopped = PrivateCluster::stop_in(&settings.data_dir).await?;
    println!(
        "{}",
        if stopped {
            format!(
                "stopped the private cluster in {}",
                settings.data_dir.display()
            )
        } else {
            format!(
                "no private cluster is running in {}",
                settings.data_dir.display()
            )
        }
    );
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
