//! Projection `favorites`: who favorites which post.

use async_trait::async_trait;
use chorus_domain::{DomainEvent, RecordedEvent};
use sqlx::PgConnection;

use crate::common::{Interaction, InteractionTable, decode};
use crate::{Projection, ProjectionError};

/// Keeps the `favorites` table.
#[derive(Clone, Copy, Debug, Default)]
pub struct Favorites;

const EVENTS: &[&str] = &[
    "Favorited",
    "Unfavorited",
    "PostDeleted",
    "RemotePostDeleted",
    "RemoteActorDeleted",
    "ActorDeleted",
];

const TABLE: InteractionTable = InteractionTable {
    table: "favorites",
    activity_id: "like_id",
};

#[async_trait]
impl Projection for Favorites {
    fn name(&self) -> &'static str {
        "favorites"
    }

    fn handles(&self, event_type: &str) -> bool {
        EVENTS.contains(&event_type)
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        match decode(event)? {
            Some(DomainEvent::Favorited(e)) => {
                let row = Interaction {
                    actor: &e.actor,
                    post: &e.post,
                    post_author: &e.post_author,
                    activity_id: &e.like_id,
                    at: event.recorded_at,
                };
                TABLE.insert(conn, event, row).await?;
            }
            Some(DomainEvent::Unfavorited(e)) => TABLE.remove(conn, &e.actor, &e.post).await?,
            Some(DomainEvent::PostDeleted(e)) => TABLE.remove_post(conn, &e.uri).await?,
            Some(DomainEvent::RemotePostDeleted(e)) => TABLE.remove_post(conn, &e.uri).await?,
            Some(DomainEvent::RemoteActorDeleted(e)) => TABLE.remove_actor(conn, &e.uri).await?,
            Some(DomainEvent::ActorDeleted(e)) => TABLE.remove_actor(conn, &e.uri).await?,
            _ => {}
        }
        Ok(())
    }
}
