//! Projection `actors`: the actors Chorus knows.

use async_trait::async_trait;
use chorus_domain::{DomainEvent, RecordedEvent};
use sqlx::PgConnection;

use crate::common::{decode, domain_of, position};
use crate::{Projection, ProjectionError};

/// Keeps the `actors` table: a row per local actor from its registration.
#[derive(Clone, Copy, Debug, Default)]
pub struct Actors;

const EVENTS: &[&str] = &["ActorRegistered"];

#[async_trait]
impl Projection for Actors {
    fn name(&self) -> &'static str {
        "actors"
    }

    fn handles(&self, event_type: &str) -> bool {
        EVENTS.contains(&event_type)
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        let Some(DomainEvent::ActorRegistered(e)) = decode(event)? else {
            return Ok(());
        };
        let (major, minor) = position(event);
        // An actor is registered once (its stream is keyed by handle), so a
        // row that already exists is this very registration applied before.
        sqlx::query(
            "INSERT INTO actors (uri, actor_id, handle, domain, local, display_name, locked, admin,
                                 inbox, outbox, followers_uri, following_uri, shared_inbox, key_id,
                                 public_key_pem, registered_at, position_major, position_minor)
             VALUES ($1, $2, $3, $4, true, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
             ON CONFLICT (uri) DO NOTHING",
        )
        .bind(&e.uris.id)
        .bind(e.actor_id)
        .bind(e.handle.as_str())
        .bind(domain_of(&e.uris.id))
        .bind(&e.display_name)
        .bind(e.locked)
        .bind(e.admin)
        .bind(&e.uris.inbox)
        .bind(&e.uris.outbox)
        .bind(&e.uris.followers)
        .bind(&e.uris.following)
        .bind(&e.uris.shared_inbox)
        .bind(&e.uris.key_id)
        .bind(&e.public_key_pem)
        .bind(e.registered_at)
        .bind(major)
        .bind(minor)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
