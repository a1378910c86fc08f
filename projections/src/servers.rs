//! Projection `servers`: servers, their channels and moderators, and the
//! messages they announced (see [`chorus_domain::servers`]).

use async_trait::async_trait;
use chorus_domain::servers::Membership;
use chorus_domain::{DomainEvent, RecordedEvent};
use sqlx::PgConnection;

use crate::common::{decode, position};
use crate::{Projection, ProjectionError};

/// Keeps `servers`, `server_channels`, `server_moderators` and
/// `channel_messages`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Servers;

const EVENTS: &[&str] = &[
    "ServerCreated",
    "ChannelCreated",
    "ModeratorAppointed",
    "ModeratorDismissed",
    "ChannelMessageAnnounced",
    "ChannelMessageRemoved",
];

#[async_trait]
impl Projection for Servers {
    fn name(&self) -> &'static str {
        "servers"
    }

    fn handles(&self, event_type: &str) -> bool {
        EVENTS.contains(&event_type)
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(EVENTS)
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "servers",
            "server_channels",
            "server_moderators",
            "channel_messages",
        ]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        let (major, minor) = position(event);
        // Every row is written once (its stream allows the event once), so
        // a row that exists is this very event applied before.
        match decode(event)? {
            Some(DomainEvent::ServerCreated(e)) => {
                sqlx::query(
                    "INSERT INTO servers (uri, server_id, name, display_name, description,
                                          membership, open_replies, owner, created_at,
                                          position_major, position_minor)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                     ON CONFLICT (uri) DO NOTHING",
                )
                .bind(&e.uris.id)
                .bind(e.server_id)
                .bind(e.name.as_str())
                .bind(&e.display_name)
                .bind(&e.description)
                .bind(match e.membership {
                    Membership::Open => "open",
                    Membership::Approval => "approval",
                })
                .bind(e.open_replies)
                .bind(&e.owner)
                .bind(e.created_at)
                .bind(major)
                .bind(minor)
                .execute(&mut *conn)
                .await?;
                for channel in &e.channels {
                    add_channel(
                        conn,
                        &e.uris.id,
                        channel.slug.as_str(),
                        channel.topic.as_deref(),
                        event,
                    )
                    .await?;
                }
            }
            Some(DomainEvent::ChannelCreated(e)) => {
                add_channel(
                    conn,
                    &e.server,
                    e.channel.slug.as_str(),
                    e.channel.topic.as_deref(),
                    event,
                )
                .await?;
            }
            Some(DomainEvent::ModeratorAppointed(e)) => {
                sqlx::query(
                    "INSERT INTO server_moderators (server, member, appointed_by, appointed_at)
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(&e.server)
                .bind(&e.member)
                .bind(&e.by)
                .bind(event.recorded_at)
                .execute(&mut *conn)
                .await?;
            }
            Some(DomainEvent::ModeratorDismissed(e)) => {
                sqlx::query("DELETE FROM server_moderators WHERE server = $1 AND member = $2")
                    .bind(&e.server)
                    .bind(&e.member)
                    .execute(&mut *conn)
                    .await?;
            }
            Some(DomainEvent::ChannelMessageAnnounced(e)) => {
                sqlx::query(
                    "INSERT INTO channel_messages (server, post, channel, author, in_reply_to,
                                                   announce_id, announced_at, position_major,
                                                   position_minor)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (server, post) DO NOTHING",
                )
                .bind(&e.server)
                .bind(&e.post)
                .bind(e.channel.as_str())
                .bind(&e.author)
                .bind(&e.in_reply_to)
                .bind(e.announce["id"].as_str().unwrap_or_default())
                .bind(e.announced_at)
                .bind(major)
                .bind(minor)
                .execute(&mut *conn)
                .await?;
            }
            Some(DomainEvent::ChannelMessageRemoved(e)) => {
                sqlx::query(
                    "UPDATE channel_messages SET removed_at = $3, removed_by = $4
                     WHERE server = $1 AND post = $2 AND removed_at IS NULL",
                )
                .bind(&e.server)
                .bind(&e.post)
                .bind(e.removed_at)
                .bind(&e.by)
                .execute(&mut *conn)
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

async fn add_channel(
    conn: &mut PgConnection,
    server: &str,
    slug: &str,
    topic: Option<&str>,
    event: &RecordedEvent,
) -> Result<(), ProjectionError> {
    let (major, minor) = position(event);
    sqlx::query(
        "INSERT INTO server_channels (server, slug, topic, created_at, position_major, position_minor)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(server)
    .bind(slug)
    .bind(topic)
    .bind(event.recorded_at)
    .bind(major)
    .bind(minor)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
