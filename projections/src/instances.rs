//! Projection `instances`: the domains admins blocked.

use async_trait::async_trait;
use chorus_domain::{DomainEvent, RecordedEvent};
use sqlx::PgConnection;

use crate::common::{decode, position};
use crate::{Projection, ProjectionError};

/// Keeps the `blocked_instances` table.
#[derive(Clone, Copy, Debug, Default)]
pub struct Instances;

const EVENTS: &[&str] = &["InstanceBlocked", "InstanceUnblocked"];

#[async_trait]
impl Projection for Instances {
    fn name(&self) -> &'static str {
        "instances"
    }

    fn handles(&self, event_type: &str) -> bool {
        EVENTS.contains(&event_type)
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(EVENTS)
    }

    fn tables(&self) -> &'static [&'static str] {
        &["blocked_instances"]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        let (major, minor) = position(event);
        match decode(event)? {
            // Guarded by position, so a block applied again after its
            // unblock (in a rebuild from an old checkpoint) cannot return.
            Some(DomainEvent::InstanceBlocked(e)) => {
                sqlx::query(
                    "INSERT INTO blocked_instances (domain, reason, blocked_at, position_major, position_minor)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (domain) DO NOTHING",
                )
                .bind(&e.domain)
                .bind(&e.reason)
                .bind(event.recorded_at)
                .bind(major)
                .bind(minor)
                .execute(&mut *conn)
                .await?;
            }
            Some(DomainEvent::InstanceUnblocked(e)) => {
                sqlx::query(
                    "DELETE FROM blocked_instances
                     WHERE domain = $1 AND (position_major, position_minor) < ($2, $3)",
                )
                .bind(&e.domain)
                .bind(major)
                .bind(minor)
                .execute(&mut *conn)
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}
