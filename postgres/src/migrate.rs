//! Schema migrations, embedded from the workspace's `migrations/` folder.

use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};

/// Every migration Chorus knows, in order.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Applies pending migrations. Safe to run from several processes at once:
/// sqlx serialises them with an advisory lock.
pub async fn run(pool: &PgPool) -> Result<(), MigrateError> {
    MIGRATOR.run(pool).await
}

/// The versions of known migrations not yet applied to this database.
pub async fn pending(pool: &PgPool) -> Result<Vec<i64>, sqlx::Error> {
    let table_exists: bool =
        sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations') IS NOT NULL")
            .fetch_one(pool)
            .await?;
    let applied: Vec<i64> = if table_exists {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await?
    } else {
        Vec::new()
    };
    Ok(MIGRATOR
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect())
}
