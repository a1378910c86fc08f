//! Projection `favorites`: who favorites which post.

use async_trait::async_trait;
use chorus_domain::{DomainEvent, RecordedEvent};
use sqlx::PgConnection;

use crate::common::{decode, position};
use crate::{Projection, ProjectionError};

/// Keeps the `favorites` table.
#[derive(Clone, Copy, Debug, Default)]
pub struct Favorites;

const EVENTS: &[&str] = &["Favorited", "Unfavorited", "PostDeleted"];

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
                let (major, minor) = position(event);
                // The pair's row is removed when the favorite is taken
                // back, so an existing one is this favorite applied before.
                sqlx::query(
                    "INSERT INTO favorites (actor, post, post_author, like_id, created_at,
                                            position_major, position_minor)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (actor, post) DO NOTHING",
                )
                .bind(&e.actor)
                .bind(&e.post)
                .bind(&e.post_author)
                .bind(&e.like_id)
                .bind(event.recorded_at)
                .bind(major)
                .bind(minor)
                .execute(&mut *conn)
                .await?;
            }
            Some(DomainEvent::Unfavorited(e)) => {
                sqlx::query("DELETE FROM favorites WHERE actor = $1 AND post = $2")
                    .bind(&e.actor)
                    .bind(&e.post)
                    .execute(&mut *conn)
                    .await?;
            }
            Some(DomainEvent::PostDeleted(e)) => {
                // A deleted post has no favorites left to count or list.
                sqlx::query("DELETE FROM favorites WHERE post = $1")
                    .bind(&e.uri)
                    .execute(&mut *conn)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }
}
