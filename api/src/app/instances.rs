//! Instance blocks, decided against each domain's stream.

use chorus_domain::Position;
use chorus_domain::instances::{self, InstanceState, instance_stream, normalize_domain};

use super::{App, AppError, LocalActor};

/// A blocked domain, as the `blocked_instances` read model holds it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct BlockedInstance {
    pub domain: String,
    pub reason: Option<String>,
    pub blocked_at: chrono::DateTime<chrono::Utc>,
}

impl App {
    /// Blocks `domain`. `by` is the admin acting (`None` from the command line).
    pub async fn block_instance(
        &self,
        by: Option<&LocalActor>,
        domain: &str,
        reason: Option<String>,
    ) -> Result<(String, Option<Position>), AppError> {
        admin_only(by)?;
        let domain = normalize_domain(domain)?;
        let own = self.host().to_ascii_lowercase();
        let position = self
            .execute::<InstanceState, _>(
                &instance_stream(&domain),
                by.map(|a| a.uri.as_str()),
                |state| Ok(instances::block(state, &domain, &own, reason.clone())?),
            )
            .await?;
        Ok((domain, position))
    }

    /// Lifts the block of `domain`.
    pub async fn unblock_instance(
        &self,
        by: Option<&LocalActor>,
        domain: &str,
    ) -> Result<(String, Option<Position>), AppError> {
        admin_only(by)?;
        let domain = normalize_domain(domain)?;
        let position = self
            .execute::<InstanceState, _>(
                &instance_stream(&domain),
                by.map(|a| a.uri.as_str()),
                |state| Ok(instances::unblock(state, &domain)?),
            )
            .await?;
        Ok((domain, position))
    }

    /// The blocked domains, by name.
    pub async fn blocked_instances(&self) -> Result<Vec<BlockedInstance>, AppError> {
        Ok(sqlx::query_as(
            "SELECT domain, reason, blocked_at FROM blocked_instances ORDER BY domain",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}

/// Admin actions from the API need an admin; the command line is trusted
/// (whoever runs it holds the database).
fn admin_only(by: Option<&LocalActor>) -> Result<(), AppError> {
    match by {
        Some(actor) if !actor.admin => Err(AppError::Forbidden),
        _ => Ok(()),
    }
}
