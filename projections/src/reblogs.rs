//! Projection `reblogs`: who reblogs which post.

use async_trait::async_trait;
use chorus_domain::{DomainEvent, RecordedEvent};
use sqlx::PgConnection;

use crate::common::{Interaction, InteractionTable, decode};
use crate::pairs::{Facts, PairEvents, PairMemory, PairRow, PairTable};
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
        &["reblogs"]
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

/// Runs of reblogs and their undoing, written together.
static PAIRS: PairEvents = PairEvents {
    table: PairTable {
        table: "reblogs",
        keys: ["actor", "post"],
        columns: &["post_author", "announce_id"],
    },
    begins: "Reblogged",
    row: |event, f| {
        // The Announce's own `published` dates it, as remote servers see.
        let at = f.published.ok_or_else(|| {
            ProjectionError::payload(event, serde::de::Error::custom("missing field `published`"))
        })?;
        Ok(PairRow::new(
            event,
            (
                Facts::field(event, f.actor, "actor")?,
                Facts::field(event, f.post, "post")?,
            ),
            vec![
                Facts::field(event, f.post_author, "post_author")?,
                Facts::field(event, f.announce_id, "announce_id")?,
            ],
            at,
        ))
    },
    ends: "Unreblogged",
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
