//! Projection `favorites`: who favorites which post.

use async_trait::async_trait;
use chorus_domain::{DomainEvent, RecordedEvent};
use sqlx::PgConnection;

use crate::common::{Interaction, InteractionTable, decode};
use crate::pairs::{Facts, PairEvents, PairMemory, PairRow, PairTable};
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

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(EVENTS)
    }

    fn unread_fields(&self) -> &'static [&'static str] {
        &["activity"]
    }

    fn memory_fold(&self) -> Option<Box<dyn crate::bulk::MemoryFold>> {
        Some(Box::new(PairMemory::new(&PAIRS)))
    }

    fn tables(&self) -> &'static [&'static str] {
        &["favorites"]
    }

    async fn apply_all(
        &self,
        conn: &mut PgConnection,
        events: &[&RecordedEvent],
    ) -> Result<(), ProjectionError> {
        PAIRS.apply_all(self, conn, events).await
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

/// Runs of favorites and their undoing, written together.
static PAIRS: PairEvents = PairEvents {
    table: PairTable {
        table: "favorites",
        keys: ["actor", "post"],
        columns: &["post_author", "like_id"],
    },
    begins: "Favorited",
    row: |event, f| {
        Ok(PairRow::new(
            event,
            (
                Facts::field(event, f.actor, "actor")?,
                Facts::field(event, f.post, "post")?,
            ),
            vec![
                Facts::field(event, f.post_author, "post_author")?,
                Facts::field(event, f.like_id, "like_id")?,
            ],
            event.recorded_at,
        ))
    },
    ends: "Unfavorited",
    key: |event, f| {
        Ok((
            Facts::field(event, f.actor, "actor")?,
            Facts::field(event, f.post, "post")?,
        ))
    },
    wipes: &[
        ("PostDeleted", &["post"]),
        ("RemotePostDeleted", &["post"]),
        ("RemoteActorDeleted", &["actor", "post_author"]),
        ("ActorDeleted", &["actor", "post_author"]),
    ],
};
