//! Projection `follows`: who follows whom, and pending or refused requests.

use async_trait::async_trait;
use chorus_domain::{DomainEvent, RecordedEvent};
use sqlx::PgConnection;

use crate::common::{decode, position};
use crate::{Projection, ProjectionError};

/// Keeps the `follows` table.
#[derive(Clone, Copy, Debug, Default)]
pub struct Follows;

const EVENTS: &[&str] = &[
    "FollowRequested",
    "FollowAccepted",
    "FollowRejected",
    "Unfollowed",
    "FollowSevered",
    "RemoteActorDeleted",
    "ActorDeleted",
];

#[async_trait]
impl Projection for Follows {
    fn name(&self) -> &'static str {
        "follows"
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
            Some(DomainEvent::FollowRequested(e)) => {
                requested(conn, event, &e.follower, &e.followee, &e.follow_id).await
            }
            Some(DomainEvent::FollowAccepted(e)) => {
                answered(
                    conn,
                    event,
                    "accepted",
                    &e.follower,
                    &e.followee,
                    &e.follow_id,
                )
                .await
            }
            Some(DomainEvent::FollowRejected(e)) => {
                answered(
                    conn,
                    event,
                    "rejected",
                    &e.follower,
                    &e.followee,
                    &e.follow_id,
                )
                .await
            }
            Some(DomainEvent::Unfollowed(e)) => ended(conn, &e.follower, &e.followee).await,
            Some(DomainEvent::FollowSevered(e)) => ended(conn, &e.follower, &e.followee).await,
            // A deleted actor follows no one and is followed by no one.
            Some(DomainEvent::RemoteActorDeleted(e)) => actor_deleted(conn, &e.uri).await,
            Some(DomainEvent::ActorDeleted(e)) => actor_deleted(conn, &e.uri).await,
            _ => Ok(()),
        }
    }
}

async fn actor_deleted(conn: &mut PgConnection, actor: &str) -> Result<(), ProjectionError> {
    sqlx::query("DELETE FROM follows WHERE follower = $1 OR followee = $1")
        .bind(actor)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn requested(
    conn: &mut PgConnection,
    event: &RecordedEvent,
    follower: &str,
    followee: &str,
    follow_id: &str,
) -> Result<(), ProjectionError> {
    let (major, minor) = position(event);
    // A pair can meet again after a refused request (whose row stays, as
    // `rejected`); the newer request replaces it. The position guard makes
    // a request that was already applied, or an older one, change nothing.
    sqlx::query(
        "INSERT INTO follows (follower, followee, state, follow_id, created_at, updated_at,
                              position_major, position_minor)
         VALUES ($1, $2, 'requested', $3, $4, $4, $5, $6)
         ON CONFLICT (follower, followee) DO UPDATE
         SET state = 'requested', follow_id = excluded.follow_id,
             created_at = excluded.created_at, updated_at = excluded.updated_at,
             position_major = excluded.position_major, position_minor = excluded.position_minor
         WHERE (follows.position_major, follows.position_minor)
             < (excluded.position_major, excluded.position_minor)",
    )
    .bind(follower)
    .bind(followee)
    .bind(follow_id)
    .bind(event.recorded_at)
    .bind(major)
    .bind(minor)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn answered(
    conn: &mut PgConnection,
    event: &RecordedEvent,
    state: &str,
    follower: &str,
    followee: &str,
    follow_id: &str,
) -> Result<(), ProjectionError> {
    let (major, minor) = position(event);
    // The row keeps the time and position of its request, which order a
    // followers list by when people asked. An answer to a request this
    // projection never saw still records the answer, dated by itself.
    sqlx::query(
        "INSERT INTO follows (follower, followee, state, follow_id, created_at, updated_at,
                              position_major, position_minor)
         VALUES ($1, $2, $3, $4, $5, $5, $6, $7)
         ON CONFLICT (follower, followee) DO UPDATE
         SET state = excluded.state, follow_id = excluded.follow_id,
             updated_at = excluded.updated_at",
    )
    .bind(follower)
    .bind(followee)
    .bind(state)
    .bind(follow_id)
    .bind(event.recorded_at)
    .bind(major)
    .bind(minor)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn ended(
    conn: &mut PgConnection,
    follower: &str,
    followee: &str,
) -> Result<(), ProjectionError> {
    sqlx::query("DELETE FROM follows WHERE follower = $1 AND followee = $2")
        .bind(follower)
        .bind(followee)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
