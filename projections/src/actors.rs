//! Projection `actors`: the actors Chorus knows.

use async_trait::async_trait;
use chorus_domain::actors::ActorUris;
use chorus_domain::remote::RemoteActorUpdated;
use chorus_domain::servers::{Membership, ServerCreated};
use chorus_domain::{DomainEvent, RecordedEvent};
use sqlx::PgConnection;

use crate::common::{decode, domain_of, position};
use crate::{Projection, ProjectionError};

/// Keeps the `actors` table: a row per local actor from its registration.
#[derive(Clone, Copy, Debug, Default)]
pub struct Actors;

const EVENTS: &[&str] = &[
    "ActorRegistered",
    "ServerCreated",
    "RemoteActorUpdated",
    "RemoteActorDeleted",
    "ActorDeleted",
];

#[async_trait]
impl Projection for Actors {
    fn name(&self) -> &'static str {
        "actors"
    }

    fn handles(&self, event_type: &str) -> bool {
        EVENTS.contains(&event_type)
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(EVENTS)
    }

    fn tables(&self) -> &'static [&'static str] {
        &["actors"]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        let e = match decode(event)? {
            Some(DomainEvent::ActorRegistered(e)) => e,
            Some(DomainEvent::RemoteActorUpdated(e)) => {
                return remote_updated(conn, event, &e).await;
            }
            Some(DomainEvent::ServerCreated(e)) => {
                return server_created(conn, event, &e).await;
            }
            // A deleted local account keeps its row (its actor answers 410,
            // its handle stays taken) without its profile.
            Some(DomainEvent::ActorDeleted(e)) => {
                sqlx::query(
                    "UPDATE actors SET deleted_at = $2, summary = NULL, display_name = NULL,
                                       icon = NULL, public_key_pem = NULL
                     WHERE uri = $1 AND local AND deleted_at IS NULL",
                )
                .bind(&e.uri)
                .bind(e.deleted_at)
                .execute(&mut *conn)
                .await?;
                return Ok(());
            }
            Some(DomainEvent::RemoteActorDeleted(e)) => {
                sqlx::query(
                    "UPDATE actors SET deleted_at = $2, summary = NULL, display_name = NULL,
                                       icon = NULL, public_key_pem = NULL
                     WHERE uri = $1 AND NOT local AND deleted_at IS NULL",
                )
                .bind(&e.uri)
                .bind(e.deleted_at)
                .execute(&mut *conn)
                .await?;
                return Ok(());
            }
            _ => return Ok(()),
        };
        local_registered(
            conn,
            event,
            &LocalActor {
                actor_id: e.actor_id,
                handle: e.handle.as_str(),
                kind: "Person",
                display_name: e.display_name.as_deref(),
                summary: None,
                locked: e.locked,
                admin: e.admin,
                uris: &e.uris,
                public_key_pem: &e.public_key_pem,
                registered_at: e.registered_at,
            },
        )
        .await
    }
}

/// A remote actor's profile, newest wins: the row keeps the position of the
/// event that last shaped it, and an older one (applied again in a rebuild,
/// or arriving late) changes nothing. A deleted actor stays deleted.
async fn remote_updated(
    conn: &mut PgConnection,
    event: &RecordedEvent,
    e: &RemoteActorUpdated,
) -> Result<(), ProjectionError> {
    let (major, minor) = position(event);
    sqlx::query(
        "INSERT INTO actors (uri, handle, domain, local, kind, display_name, summary, locked,
                             inbox, outbox, followers_uri, following_uri, shared_inbox, key_id,
                             public_key_pem, url, icon, registered_at, updated_at,
                             position_major, position_minor)
         VALUES ($1, $2, $3, false, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                 $17, $17, $18, $19)
         ON CONFLICT (uri) DO UPDATE
         SET handle = excluded.handle, domain = excluded.domain, kind = excluded.kind,
             display_name = excluded.display_name, summary = excluded.summary,
             locked = excluded.locked, inbox = excluded.inbox, outbox = excluded.outbox,
             followers_uri = excluded.followers_uri, following_uri = excluded.following_uri,
             shared_inbox = excluded.shared_inbox, key_id = excluded.key_id,
             public_key_pem = excluded.public_key_pem, url = excluded.url, icon = excluded.icon,
             updated_at = excluded.updated_at,
             position_major = excluded.position_major, position_minor = excluded.position_minor
         WHERE NOT actors.local
           AND actors.deleted_at IS NULL
           AND (actors.position_major, actors.position_minor)
               < (excluded.position_major, excluded.position_minor)",
    )
    .bind(&e.uri)
    .bind(&e.handle)
    .bind(&e.domain)
    .bind(&e.kind)
    .bind(&e.display_name)
    .bind(&e.summary)
    .bind(e.locked)
    .bind(&e.inbox)
    .bind(&e.outbox)
    .bind(&e.followers)
    .bind(&e.following)
    .bind(&e.shared_inbox)
    .bind(&e.key_id)
    .bind(&e.public_key_pem)
    .bind(&e.url)
    .bind(&e.icon)
    .bind(e.updated_at)
    .bind(major)
    .bind(minor)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A server is a local actor of kind `Group`; its followers are its members.
async fn server_created(
    conn: &mut PgConnection,
    event: &RecordedEvent,
    e: &ServerCreated,
) -> Result<(), ProjectionError> {
    local_registered(
        conn,
        event,
        &LocalActor {
            actor_id: e.server_id,
            handle: e.name.as_str(),
            kind: "Group",
            display_name: e.display_name.as_deref(),
            summary: e.description.as_deref(),
            locked: e.membership == Membership::Approval,
            admin: false,
            uris: &e.uris,
            public_key_pem: &e.public_key_pem,
            registered_at: e.created_at,
        },
    )
    .await
}

/// A local actor as its row is first written.
struct LocalActor<'a> {
    actor_id: uuid::Uuid,
    handle: &'a str,
    kind: &'static str,
    display_name: Option<&'a str>,
    summary: Option<&'a str>,
    locked: bool,
    admin: bool,
    uris: &'a ActorUris,
    public_key_pem: &'a str,
    registered_at: chrono::DateTime<chrono::Utc>,
}

/// A local actor is registered once (its stream is keyed by its handle),
/// so a row that already exists is this very registration applied before.
async fn local_registered(
    conn: &mut PgConnection,
    event: &RecordedEvent,
    a: &LocalActor<'_>,
) -> Result<(), ProjectionError> {
    let (major, minor) = position(event);
    sqlx::query(
        "INSERT INTO actors (uri, actor_id, handle, domain, local, kind, display_name, summary,
                             locked, admin, inbox, outbox, followers_uri, following_uri,
                             shared_inbox, key_id, public_key_pem, registered_at, position_major,
                             position_minor)
         VALUES ($1, $2, $3, $4, true, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                 $18, $19)
         ON CONFLICT (uri) DO NOTHING",
    )
    .bind(&a.uris.id)
    .bind(a.actor_id)
    .bind(a.handle)
    .bind(domain_of(&a.uris.id))
    .bind(a.kind)
    .bind(a.display_name)
    .bind(a.summary)
    .bind(a.locked)
    .bind(a.admin)
    .bind(&a.uris.inbox)
    .bind(&a.uris.outbox)
    .bind(&a.uris.followers)
    .bind(&a.uris.following)
    .bind(&a.uris.shared_inbox)
    .bind(&a.uris.key_id)
    .bind(a.public_key_pem)
    .bind(a.registered_at)
    .bind(major)
    .bind(minor)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
