//! Projection `notifications`: what happened to local actors.

use async_trait::async_trait;
use chorus_domain::{DomainEvent, RecordedEvent};
use sqlx::PgConnection;

use crate::common::{decode, micros, position};
use crate::runner::runs;
use crate::{Projection, ProjectionError};

/// Keeps `notifications`, and its own list of local actors
/// (`notification_local_actors`), since only they are notified and the
/// projection may not read the `actors` read model.
#[derive(Clone, Copy, Debug, Default)]
pub struct Notifications;

const EVENTS: &[&str] = &[
    "ActorRegistered",
    "FollowRequested",
    "FollowAccepted",
    "Favorited",
    "Reblogged",
    "PostCreated",
    "RemotePostCreated",
    "ActorDeleted",
];

#[async_trait]
impl Projection for Notifications {
    fn name(&self) -> &'static str {
        "notifications"
    }

    fn handles(&self, event_type: &str) -> bool {
        EVENTS.contains(&event_type)
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(EVENTS)
    }

    fn tables(&self) -> &'static [&'static str] {
        &["notifications", "notification_local_actors"]
    }

    async fn apply_all(
        &self,
        conn: &mut PgConnection,
        events: &[&RecordedEvent],
    ) -> Result<(), ProjectionError> {
        for (together, run) in runs(events, |e| e.event_type == "RemotePostCreated") {
            if !together {
                for event in run {
                    self.apply(conn, event).await?;
                }
                continue;
            }
            // Mentions in remote posts, in one statement, as `notify` would.
            let mut rows = Vec::with_capacity(run.len());
            for event in run {
                let Some(DomainEvent::RemotePostCreated(e)) = decode(event)? else {
                    continue;
                };
                if e.mentions.is_empty() {
                    continue;
                }
                let (major, minor) = position(event);
                rows.push(serde_json::json!({
                    "event_id": event.id.0,
                    "author": e.author,
                    "uri": e.uri,
                    "mentions": e.mentions,
                    "created_at": micros(event.recorded_at),
                    "position_major": major,
                    "position_minor": minor,
                }));
            }
            if rows.is_empty() {
                continue;
            }
            sqlx::query(
                "INSERT INTO notifications (event_id, recipient, kind, actor, post, created_at,
                                            position_major, position_minor)
                 SELECT n.event_id, a.uri, 'mentioned', n.author, n.uri, n.created_at,
                        n.position_major, n.position_minor
                 FROM jsonb_to_recordset($1) AS n (event_id uuid, author text, uri text,
                      mentions text[], created_at timestamptz, position_major bigint,
                      position_minor bigint)
                 JOIN notification_local_actors a ON a.uri = ANY(n.mentions) AND a.uri <> n.author
                 ON CONFLICT (event_id, recipient) DO NOTHING",
            )
            .bind(sqlx::types::Json(&rows))
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        let Some(domain_event) = decode(event)? else {
            return Ok(());
        };
        match domain_event {
            DomainEvent::ActorRegistered(e) => {
                sqlx::query(
                    "INSERT INTO notification_local_actors (uri) VALUES ($1)
                     ON CONFLICT DO NOTHING",
                )
                .bind(&e.uris.id)
                .execute(&mut *conn)
                .await?;
            }
            // A deleted account is notified of nothing any more, and what it
            // did is no one's notification.
            DomainEvent::ActorDeleted(e) => {
                for statement in [
                    "DELETE FROM notifications WHERE recipient = $1 OR actor = $1",
                    "DELETE FROM notification_local_actors WHERE uri = $1",
                ] {
                    sqlx::query(statement)
                        .bind(&e.uri)
                        .execute(&mut *conn)
                        .await?;
                }
            }
            DomainEvent::FollowRequested(e) => {
                notify(
                    conn,
                    event,
                    "follow_requested",
                    &e.follower,
                    None,
                    &[e.followee],
                )
                .await?;
            }
            DomainEvent::FollowAccepted(e) if e.automatic => {
                // Nobody had to decide, so there is no request to show any
                // more, only the new follower. A pair has at most one
                // request pending, so the request is found by who asked whom.
                sqlx::query(
                    "DELETE FROM notifications
                     WHERE recipient = $1 AND actor = $2 AND kind = 'follow_requested'",
                )
                .bind(&e.followee)
                .bind(&e.follower)
                .execute(&mut *conn)
                .await?;
                notify(conn, event, "followed", &e.follower, None, &[e.followee]).await?;
            }
            DomainEvent::Favorited(e) => {
                notify(
                    conn,
                    event,
                    "favorited",
                    &e.actor,
                    Some(&e.post),
                    &[e.post_author],
                )
                .await?;
            }
            DomainEvent::Reblogged(e) => {
                notify(
                    conn,
                    event,
                    "reblogged",
                    &e.actor,
                    Some(&e.post),
                    &[e.post_author],
                )
                .await?;
            }
            DomainEvent::PostCreated(e) => {
                notify(
                    conn,
                    event,
                    "mentioned",
                    &e.author,
                    Some(&e.uri),
                    &e.mentions,
                )
                .await?;
            }
            DomainEvent::RemotePostCreated(e) => {
                notify(
                    conn,
                    event,
                    "mentioned",
                    &e.author,
                    Some(&e.uri),
                    &e.mentions,
                )
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Notifies those of `recipients` who are local, except `actor` itself (no
/// one is told about their own doing). The key (event, recipient) makes a
/// second application change nothing.
async fn notify(
    conn: &mut PgConnection,
    event: &RecordedEvent,
    kind: &str,
    actor: &str,
    post: Option<&str>,
    recipients: &[String],
) -> Result<(), ProjectionError> {
    let (major, minor) = position(event);
    sqlx::query(
        "INSERT INTO notifications (event_id, recipient, kind, actor, post, created_at,
                                    position_major, position_minor)
         SELECT $1, uri, $2, $3, $4, $5, $6, $7
         FROM notification_local_actors
         WHERE uri = ANY($8) AND uri <> $3
         ON CONFLICT (event_id, recipient) DO NOTHING",
    )
    .bind(event.id.0)
    .bind(kind)
    .bind(actor)
    .bind(post)
    .bind(event.recorded_at)
    .bind(major)
    .bind(minor)
    .bind(recipients)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
