//! Projection `timelines`: home timelines (written on fan-out, one entry per
//! local recipient) and the local and public timelines.
//!
//! To decide who receives what, the projection keeps its own copies of which
//! actors are local (`timeline_local_actors`), who follows whom
//! (`timeline_followers`, local followers only) and who blocks whom
//! (`timeline_blocks`), instead of reading the `actors`, `follows` and
//! `blocks` projections: each read model must be rebuildable on its own.

use async_trait::async_trait;
use chorus_domain::posts::Visibility;
use chorus_domain::{DomainEvent, RecordedEvent};
use sqlx::PgConnection;

use crate::common::{decode, position};
use crate::runner::runs;
use crate::{Projection, ProjectionError};

/// Keeps `home_timeline`, `public_timeline`, `timeline_followers`,
/// `timeline_blocks` and `timeline_local_actors`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timelines;

const EVENTS: &[&str] = &[
    "ActorRegistered",
    "PostCreated",
    "PostDeleted",
    "RemotePostCreated",
    "RemotePostDeleted",
    "Reblogged",
    "Unreblogged",
    "FollowAccepted",
    "FollowRejected",
    "Unfollowed",
    "FollowSevered",
    "Blocked",
    "Unblocked",
    "ActorDeleted",
    "ChannelMessageAnnounced",
    "ChannelMessageRemoved",
];

#[async_trait]
impl Projection for Timelines {
    fn name(&self) -> &'static str {
        "timelines"
    }

    fn handles(&self, event_type: &str) -> bool {
        EVENTS.contains(&event_type)
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(EVENTS)
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "home_timeline",
            "public_timeline",
            "timeline_followers",
            "timeline_blocks",
            "timeline_local_actors",
        ]
    }

    async fn apply_all(
        &self,
        conn: &mut PgConnection,
        events: &[&RecordedEvent],
    ) -> Result<(), ProjectionError> {
        for (together, run) in runs(events, |e| e.event_type == "RemotePostCreated") {
            if together {
                remote_posts_created(conn, run).await?;
            } else {
                for event in run {
                    self.apply(conn, event).await?;
                }
            }
        }
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        match decode(event)? {
            Some(DomainEvent::ActorRegistered(e)) => {
                sqlx::query(
                    "INSERT INTO timeline_local_actors (uri) VALUES ($1) ON CONFLICT DO NOTHING",
                )
                .bind(&e.uris.id)
                .execute(&mut *conn)
                .await?;
            }
            Some(DomainEvent::PostCreated(e)) => {
                let post = NewPost {
                    uri: &e.uri,
                    author: &e.author,
                    visibility: e.visibility,
                    mentions: &e.mentions,
                    local: true,
                };
                created(conn, event, &post).await?;
            }
            Some(DomainEvent::RemotePostCreated(e)) => {
                let post = NewPost {
                    uri: &e.uri,
                    author: &e.author,
                    visibility: e.visibility,
                    mentions: &e.mentions,
                    local: false,
                };
                created(conn, event, &post).await?;
            }
            Some(DomainEvent::PostDeleted(e)) => deleted(conn, &e.uri).await?,
            Some(DomainEvent::ActorDeleted(e)) => account_deleted(conn, &e.uri).await?,
            Some(DomainEvent::RemotePostDeleted(e)) => deleted(conn, &e.uri).await?,
            Some(DomainEvent::Reblogged(e)) => {
                reblogged(conn, event, &e.post, &e.actor, &e.post_author).await?;
            }
            Some(DomainEvent::Unreblogged(e)) => unreblogged(conn, &e.post, &e.actor).await?,
            // A server's message reaches its local members as shared by
            // the server, and leaves with its removal.
            Some(DomainEvent::ChannelMessageAnnounced(e)) => {
                reblogged(conn, event, &e.post, &e.server, &e.author).await?;
            }
            Some(DomainEvent::ChannelMessageRemoved(e)) => {
                unreblogged(conn, &e.post, &e.server).await?;
            }
            Some(DomainEvent::FollowAccepted(e)) => {
                // Only local actors have a home timeline to fan out to.
                sqlx::query(
                    "INSERT INTO timeline_followers (followee, follower)
                     SELECT $1, uri FROM timeline_local_actors WHERE uri = $2
                     ON CONFLICT DO NOTHING",
                )
                .bind(&e.followee)
                .bind(&e.follower)
                .execute(&mut *conn)
                .await?;
            }
            Some(DomainEvent::FollowRejected(e)) => {
                unfollowed(conn, &e.follower, &e.followee).await?;
            }
            Some(DomainEvent::Unfollowed(e)) => {
                unfollowed(conn, &e.follower, &e.followee).await?;
            }
            Some(DomainEvent::FollowSevered(e)) => {
                unfollowed(conn, &e.follower, &e.followee).await?;
            }
            Some(DomainEvent::Blocked(e)) => {
                sqlx::query(
                    "INSERT INTO timeline_blocks (blocker, blocked) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING",
                )
                .bind(&e.blocker)
                .bind(&e.blocked)
                .execute(&mut *conn)
                .await?;
                // A block works both ways: neither sees the other's posts,
                // nor the other's reblogs, from now on and in what they
                // already received.
                sqlx::query(
                    "DELETE FROM home_timeline
                     WHERE (owner = $1 AND (author = $2 OR reblogged_by = $2))
                        OR (owner = $2 AND (author = $1 OR reblogged_by = $1))",
                )
                .bind(&e.blocker)
                .bind(&e.blocked)
                .execute(&mut *conn)
                .await?;
            }
            Some(DomainEvent::Unblocked(e)) => {
                // What the block removed stays removed: timelines are built
                // at fan-out, and the removed entries were never wanted.
                sqlx::query("DELETE FROM timeline_blocks WHERE blocker = $1 AND blocked = $2")
                    .bind(&e.blocker)
                    .bind(&e.blocked)
                    .execute(&mut *conn)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Remote posts fanned out in one statement, by the rules of [`created`].
async fn remote_posts_created(
    conn: &mut PgConnection,
    events: &[&RecordedEvent],
) -> Result<(), ProjectionError> {
    let mut rows = Vec::with_capacity(events.len());
    for event in events {
        let Some(DomainEvent::RemotePostCreated(e)) = decode(event)? else {
            continue;
        };
        let (major, minor) = position(event);
        rows.push(serde_json::json!({
            "uri": e.uri,
            "author": e.author,
            "public": e.visibility == Visibility::Public,
            "direct": e.visibility == Visibility::Direct,
            "mentions": e.mentions,
            "position_major": major,
            "position_minor": minor,
        }));
    }
    sqlx::query(
        "WITH new AS (
             SELECT * FROM jsonb_to_recordset($1) AS r (uri text, author text, public boolean,
                 direct boolean, mentions text[], position_major bigint, position_minor bigint)
         ), public_posts AS (
             INSERT INTO public_timeline (post, author, local, position_major, position_minor)
             SELECT uri, author, false, position_major, position_minor FROM new WHERE public
             ON CONFLICT (post) DO NOTHING
         )
         INSERT INTO home_timeline (owner, post, reblogged_by, author, position_major, position_minor)
         SELECT owners.owner, n.uri, '', n.author, n.position_major, n.position_minor
         FROM new n
         CROSS JOIN LATERAL (
             SELECT uri AS owner FROM timeline_local_actors WHERE uri = n.author
             UNION
             SELECT follower FROM timeline_followers WHERE followee = n.author AND NOT n.direct
             UNION
             SELECT uri FROM timeline_local_actors WHERE uri = ANY(n.mentions)
         ) owners
         WHERE NOT EXISTS (
             SELECT 1 FROM timeline_blocks
             WHERE (blocker = owners.owner AND blocked = n.author)
                OR (blocker = n.author AND blocked = owners.owner)
         )
         ON CONFLICT (owner, post, reblogged_by) DO NOTHING",
    )
    .bind(sqlx::types::Json(&rows))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What fan-out needs of a new post, local or remote.
#[derive(Debug)]
struct NewPost<'a> {
    uri: &'a str,
    author: &'a str,
    visibility: Visibility,
    mentions: &'a [String],
    local: bool,
}

/// Every trace of a deleted post goes, including others' reblogs.
/// A deleted local account has no timeline any more, and its posts and
/// reblogs leave everyone's.
async fn account_deleted(conn: &mut PgConnection, actor: &str) -> Result<(), ProjectionError> {
    for statement in [
        "DELETE FROM home_timeline WHERE owner = $1 OR author = $1 OR reblogged_by = $1",
        "DELETE FROM public_timeline WHERE author = $1",
        "DELETE FROM timeline_followers WHERE followee = $1 OR follower = $1",
        "DELETE FROM timeline_blocks WHERE blocker = $1 OR blocked = $1",
        "DELETE FROM timeline_local_actors WHERE uri = $1",
    ] {
        sqlx::query(statement)
            .bind(actor)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

async fn deleted(conn: &mut PgConnection, uri: &str) -> Result<(), ProjectionError> {
    sqlx::query("DELETE FROM home_timeline WHERE post = $1")
        .bind(uri)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM public_timeline WHERE post = $1")
        .bind(uri)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn created(
    conn: &mut PgConnection,
    event: &RecordedEvent,
    e: &NewPost<'_>,
) -> Result<(), ProjectionError> {
    let (major, minor) = position(event);
    if e.visibility == Visibility::Public {
        sqlx::query(
            "INSERT INTO public_timeline (post, author, local, position_major, position_minor)
             VALUES ($1, $2, $5, $3, $4)
             ON CONFLICT (post) DO NOTHING",
        )
        .bind(e.uri)
        .bind(e.author)
        .bind(major)
        .bind(minor)
        .bind(e.local)
        .execute(&mut *conn)
        .await?;
    }
    // The post reaches its author, the author's followers unless it is
    // direct, and whoever it mentions (which is all a direct post reaches),
    // as long as they are local and neither blocks the other. Who may see
    // it was decided when it was addressed; this only follows the
    // addressing.
    sqlx::query(
        "INSERT INTO home_timeline (owner, post, reblogged_by, author, position_major, position_minor)
         SELECT owners.owner, $1, '', $2, $3, $4
         FROM (
             SELECT uri AS owner FROM timeline_local_actors WHERE uri = $2
             UNION
             SELECT follower FROM timeline_followers WHERE followee = $2 AND $5
             UNION
             SELECT uri FROM timeline_local_actors WHERE uri = ANY($6)
         ) owners
         WHERE NOT EXISTS (
             SELECT 1 FROM timeline_blocks
             WHERE (blocker = owners.owner AND blocked = $2)
                OR (blocker = $2 AND blocked = owners.owner)
         )
         ON CONFLICT (owner, post, reblogged_by) DO NOTHING",
    )
    .bind(e.uri)
    .bind(e.author)
    .bind(major)
    .bind(minor)
    .bind(e.visibility != Visibility::Direct)
    .bind(e.mentions)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn unreblogged(
    conn: &mut PgConnection,
    post: &str,
    actor: &str,
) -> Result<(), ProjectionError> {
    sqlx::query("DELETE FROM home_timeline WHERE post = $1 AND reblogged_by = $2")
        .bind(post)
        .bind(actor)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// `actor` shared `post` (by `author`): a reblog, or a server's message.
async fn reblogged(
    conn: &mut PgConnection,
    event: &RecordedEvent,
    post: &str,
    actor: &str,
    author: &str,
) -> Result<(), ProjectionError> {
    let (major, minor) = position(event);
    // A reblog reaches the reblogger and its local followers, except those
    // who block, or are blocked by, the reblogger or the post's author. It
    // is ordered by when it was reblogged, not when the post was written.
    sqlx::query(
        "INSERT INTO home_timeline (owner, post, reblogged_by, author, position_major, position_minor)
         SELECT owners.owner, $1, $2, $3, $4, $5
         FROM (
             SELECT uri AS owner FROM timeline_local_actors WHERE uri = $2
             UNION
             SELECT follower FROM timeline_followers WHERE followee = $2
         ) owners
         WHERE NOT EXISTS (
             SELECT 1 FROM timeline_blocks
             WHERE (blocker = owners.owner AND blocked IN ($2, $3))
                OR (blocked = owners.owner AND blocker IN ($2, $3))
         )
         ON CONFLICT (owner, post, reblogged_by) DO NOTHING",
    )
    .bind(post)
    .bind(actor)
    .bind(author)
    .bind(major)
    .bind(minor)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn unfollowed(
    conn: &mut PgConnection,
    follower: &str,
    followee: &str,
) -> Result<(), ProjectionError> {
    // Only future posts stop arriving; what the follower already received
    // stays in its timeline.
    sqlx::query("DELETE FROM timeline_followers WHERE followee = $1 AND follower = $2")
        .bind(followee)
        .bind(follower)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
