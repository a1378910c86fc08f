//! Projection `reblogs`: who reblogs which post.

use async_trait::async_trait;
use chorus_domain::{DomainEvent, RecordedEvent};
use sqlx::PgConnection;

use crate::common::{Interaction, InteractionTable, decode};
use crate::{Projection, ProjectionError};

/// Keeps the `reblogs` table.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reblogs;

const EVENTS: &[&str] = &[
    "Reblogged",
    "Unreblogged",
    "PostDeleted",
    "RemotePostDeleted",
    "RemoteActorDeleted",
    "ActorDeleted",
];

const TABLE: InteractionTable = InteractionTable {
    table: "reblogs",
    activity_id: "announce_id",
};

#[async_trait]
impl Projection for Reblogs {
    fn name(&self) -> &'static str {
        "reblogs"
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
            Some(DomainEvent::Reblogged(e)) => {
                // The Announce's own `published` dates it, as remote servers see.
                let row = Interaction {
                    actor: &e.actor,
                    post: &e.post,
                    post_author: &e.post_author,
                    activity_id: &e.announce_id,
                    at: e.published,
                };
                TABLE.insert(conn, event, row).await?;
            }
            Some(DomainEvent::Unreblogged(e)) => TABLE.remove(conn, &e.actor, &e.post).await?,
            Some(DomainEvent::PostDeleted(e)) => TABLE.remove_post(conn, &e.uri).await?,
            Some(DomainEvent::RemotePostDeleted(e)) => TABLE.remove_post(conn, &e.uri).await?,
            Some(DomainEvent::RemoteActorDeleted(e)) => TABLE.remove_actor(conn, &e.uri).await?,
            Some(DomainEvent::ActorDeleted(e)) => TABLE.remove_actor(conn, &e.uri).await?,
            _ => {}
        }
        Ok(())
    }
}
