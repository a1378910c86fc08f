//! Projection `reblogs`: who reblogs which post.

use async_trait::async_trait;
use chorus_domain::{DomainEvent, RecordedEvent};
use sqlx::PgConnection;

use crate::common::{decode, position};
use crate::{Projection, ProjectionError};

/// Keeps the `reblogs` table.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reblogs;

const EVENTS: &[&str] = &["Reblogged", "Unreblogged", "PostDeleted"];

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
                let (major, minor) = position(event);
                // The pair's row is removed when the reblog is taken back,
                // so an existing one is this reblog applied before. The
                // Announce's own `published` dates it, as remote servers see.
                sqlx::query(
                    "INSERT INTO reblogs (actor, post, post_author, announce_id, created_at,
                                          position_major, position_minor)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (actor, post) DO NOTHING",
                )
                .bind(&e.actor)
                .bind(&e.post)
                .bind(&e.post_author)
                .bind(&e.announce_id)
                .bind(e.published)
                .bind(major)
                .bind(minor)
                .execute(&mut *conn)
                .await?;
            }
            Some(DomainEvent::Unreblogged(e)) => {
                sqlx::query("DELETE FROM reblogs WHERE actor = $1 AND post = $2")
                    .bind(&e.actor)
                    .bind(&e.post)
                    .execute(&mut *conn)
                    .await?;
            }
            Some(DomainEvent::PostDeleted(e)) => {
                // A deleted post has no reblogs left to count or list.
                sqlx::query("DELETE FROM reblogs WHERE post = $1")
                    .bind(&e.uri)
                    .execute(&mut *conn)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }
}
