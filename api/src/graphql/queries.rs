//! Queries over the read models.

use async_graphql::connection::Connection;
use async_graphql::{Context, Enum, ID, Object};
use sqlx::Row;

use super::types::{
    ACTOR_COLUMNS, Actor, InstanceBlock, Notification, NotificationKind, POST_COLUMNS, Post,
    TimelineItem, VISIBLE, connection, page_args,
};
use super::{Result, Services, acting, error, internal, signed_in, viewer_uri};

/// Which timeline.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum TimelineKind {
    /// The signed-in actor's own and followed actors' posts and reblogs.
    Home,
    /// Public posts of this server's actors.
    Local,
    /// Public posts known to this server.
    Public,
}

#[derive(Debug)]
pub struct QueryRoot;

#[Object]
impl QueryRoot {
    /// A server by name (`rust`) or ActivityPub id.
    async fn server(
        &self,
        ctx: &Context<'_>,
        name: String,
    ) -> Result<Option<super::servers::Server>> {
        super::servers::Server::find(ctx, &name).await
    }

    /// Servers on this instance, newest first.
    async fn servers(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
    ) -> Result<Vec<super::servers::Server>> {
        super::servers::Server::list(ctx, first).await
    }

    /// The signed-in actor.
    async fn me(&self, ctx: &Context<'_>) -> Result<Actor> {
        let actor = acting(ctx).await?;
        let s = ctx.data::<Services>()?;
        Actor::by_uri(s.reads(ctx), &actor.uri)
            .await
            .map_err(internal)?
            .ok_or_else(|| error("NOT_FOUND", "your account is not visible yet; try again"))
    }

    /// An actor by handle (`alice`, `alice@host`) or ActivityPub id: a
    /// local one, or a remote one this server knows.
    async fn actor(
        &self,
        ctx: &Context<'_>,
        handle: Option<String>,
        uri: Option<String>,
    ) -> Result<Option<Actor>> {
        let s = ctx.data::<Services>()?;
        let uri = match (handle, uri) {
            (_, Some(uri)) => uri,
            // Local, or remote and known (follow one to look it up).
            (Some(handle), None) => match s.app.known_actor(&handle).await {
                Ok(uri) => uri,
                Err(_) => return Ok(None),
            },
            (None, None) => return Err(error("INVALID_INPUT", "give `handle` or `uri`")),
        };
        Actor::by_uri(s.reads(ctx), &uri).await.map_err(internal)
    }

    /// A post by id or ActivityPub id, if the viewer may see it.
    async fn post(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Post>> {
        let s = ctx.data::<Services>()?;
        let uri = post_uri(s, &id);
        Post::visible(s.reads(ctx), viewer_uri(ctx).as_deref(), &uri).await
    }

    /// The whole conversation a post belongs to that the viewer may see,
    /// oldest first.
    async fn thread(&self, ctx: &Context<'_>, id: ID) -> Result<Vec<Post>> {
        let s = ctx.data::<Services>()?;
        let viewer = viewer_uri(ctx);
        let uri = post_uri(s, &id);
        if Post::visible(s.reads(ctx), viewer.as_deref(), &uri)
            .await?
            .is_none()
        {
            return Err(error("NOT_FOUND", "no such post"));
        }
        let rows = sqlx::query(&format!(
            "SELECT {POST_COLUMNS} FROM posts p JOIN actors a ON a.uri = p.author
             WHERE p.thread_root = (SELECT thread_root FROM posts WHERE uri = $2) AND {VISIBLE}
             ORDER BY p.published, p.uri LIMIT 500"
        ))
        .bind(viewer.as_deref())
        .bind(&uri)
        .fetch_all(s.reads(ctx))
        .await
        .map_err(internal)?;
        rows.iter()
            .map(|r| Post::from_row(r).map(|p| p.0).map_err(internal))
            .collect()
    }

    /// A timeline, newest first.
    async fn timeline(
        &self,
        ctx: &Context<'_>,
        kind: TimelineKind,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, TimelineItem>> {
        let s = ctx.data::<Services>()?;
        let after_given = after.is_some();
        let (first, (major, minor)) = page_args(first, after)?;
        let rows = match kind {
            TimelineKind::Home => {
                let me = signed_in(ctx)?;
                sqlx::query(&format!(
                    "SELECT {POST_COLUMNS}, {reblogger}, h.position_major, h.position_minor
                     FROM home_timeline h
                     JOIN posts p ON p.uri = h.post
                     JOIN actors a ON a.uri = p.author
                     LEFT JOIN actors ra ON ra.uri = NULLIF(h.reblogged_by, '')
                     WHERE h.owner = $1 AND (h.position_major, h.position_minor) < ($2, $3) AND {VISIBLE}
                     ORDER BY h.position_major DESC, h.position_minor DESC
                     LIMIT $4",
                    reblogger = ACTOR_COLUMNS.replace("a.", "ra.")
                ))
                .bind(me)
                .bind(major)
                .bind(minor)
                .bind(first + 1)
                .fetch_all(s.reads(ctx))
                .await
            }
            TimelineKind::Local | TimelineKind::Public => {
                sqlx::query(&format!(
                    "SELECT {POST_COLUMNS}, {reblogger}, t.position_major, t.position_minor
                     FROM public_timeline t
                     JOIN posts p ON p.uri = t.post
                     JOIN actors a ON a.uri = p.author
                     LEFT JOIN actors ra ON false
                     WHERE ($5 OR t.local) AND (t.position_major, t.position_minor) < ($2, $3) AND {VISIBLE}
                     ORDER BY t.position_major DESC, t.position_minor DESC
                     LIMIT $4",
                    reblogger = ACTOR_COLUMNS.replace("a.", "ra.")
                ))
                .bind(viewer_uri(ctx))
                .bind(major)
                .bind(minor)
                .bind(first + 1)
                .bind(kind == TimelineKind::Public)
                .fetch_all(s.reads(ctx))
                .await
            }
        }
        .map_err(internal)?;
        let items = rows
            .iter()
            .map(|row| {
                let (post, _) = Post::from_row(row)?;
                let reblogged_by = match row.try_get::<Option<String>, _>(22)? {
                    Some(_) => Some(Actor::from_row(row, 22)?),
                    None => None,
                };
                Ok((
                    TimelineItem { post, reblogged_by },
                    (row.try_get(28)?, row.try_get(29)?),
                ))
            })
            .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
            .map_err(internal)?;
        Ok(connection(items, first, after_given))
    }

    /// Who follows an actor (accepted follows), newest first.
    async fn followers(
        &self,
        ctx: &Context<'_>,
        actor: String,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Actor>> {
        let uri = actor_uri(ctx, &actor).await?;
        actors_page(
            ctx,
            "JOIN actors a ON a.uri = f.follower WHERE f.followee = $1 AND f.state = 'accepted'",
            "follows f",
            "f",
            &uri,
            first,
            after,
        )
        .await
    }

    /// Whom an actor follows (accepted follows), newest first.
    async fn following(
        &self,
        ctx: &Context<'_>,
        actor: String,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Actor>> {
        let uri = actor_uri(ctx, &actor).await?;
        actors_page(
            ctx,
            "JOIN actors a ON a.uri = f.followee WHERE f.follower = $1 AND f.state = 'accepted'",
            "follows f",
            "f",
            &uri,
            first,
            after,
        )
        .await
    }

    /// Actors waiting for the signed-in actor to approve their follow.
    async fn follow_requests(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Actor>> {
        let me = acting(ctx).await?;
        actors_page(
            ctx,
            "JOIN actors a ON a.uri = f.follower WHERE f.followee = $1 AND f.state = 'requested'",
            "follows f",
            "f",
            &me.uri,
            first,
            after,
        )
        .await
    }

    /// Admins: every read model, with its position, lag and latest rebuild.
    async fn projections(
        &self,
        ctx: &Context<'_>,
    ) -> Result<Vec<super::history::ProjectionStatus>> {
        super::history::projections(ctx).await
    }

    /// Admins: a rebuild by its id.
    async fn rebuild(
        &self,
        ctx: &Context<'_>,
        id: uuid::Uuid,
    ) -> Result<Option<super::history::ProjectionRebuild>> {
        super::history::rebuild(ctx, id).await
    }

    /// Admins: how many stored inbound activities a reprocessing with this
    /// selection would take, by type (a dry run).
    async fn reprocess_preview(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] selection: super::history::InboundSelectionInput,
    ) -> Result<super::history::ReprocessPreview> {
        super::history::preview(ctx, selection).await
    }

    /// Admins: a reprocessing run, with what it holds once finished.
    async fn reprocessing(
        &self,
        ctx: &Context<'_>,
        id: uuid::Uuid,
    ) -> Result<Option<super::history::ReprocessingRun>> {
        super::history::reprocessing(ctx, id).await
    }

    /// Admins and analytics tokens: a page of the event log, in log order
    /// (a cursor is an event's position). Forward with `first` (default
    /// 20) and `after`; backward with `last` and `before`: `last: N` alone
    /// is the newest N. At most 100 a page.
    async fn events(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        before: Option<String>,
        first: Option<i32>,
        last: Option<i32>,
        filter: Option<super::EventFilter>,
    ) -> Result<Connection<String, super::events::LogEvent>> {
        super::events::events(ctx, after, before, first, last, filter).await
    }

    /// Admins: every subscriber of the log (projections, the interpreter,
    /// the delivery planner, …) with its position and lag.
    async fn subscribers(
        &self,
        ctx: &Context<'_>,
    ) -> Result<Vec<super::history::SubscriberStatus>> {
        super::history::subscribers(ctx).await
    }

    /// Admins: the events that made a post, follow, favorite, reblog or
    /// block, each with the chain of events that caused it (back to the
    /// inbound activity, with its signer and remote host, or the local
    /// command, with its actor).
    async fn audit(
        &self,
        ctx: &Context<'_>,
        kind: super::history::AuditKind,
        subject: String,
        object: Option<String>,
    ) -> Result<Vec<super::history::AuditEntry>> {
        super::history::audit(ctx, kind, subject, object).await
    }

    /// Admins: the delivery queue.
    async fn deliveries(&self, ctx: &Context<'_>) -> Result<super::deliveries::Deliveries> {
        super::deliveries::deliveries(ctx).await
    }

    /// Admins: the blocked domains.
    async fn blocked_instances(&self, ctx: &Context<'_>) -> Result<Vec<InstanceBlock>> {
        let me = acting(ctx).await?;
        if !me.admin {
            return Err(error("FORBIDDEN", "only admins may do this"));
        }
        let s = ctx.data::<Services>()?;
        Ok(s.app
            .blocked_instances()
            .await
            .map_err(|e| super::GraphqlError::from(e).0)?
            .into_iter()
            .map(InstanceBlock::from)
            .collect())
    }

    /// Actors the signed-in actor blocks.
    async fn blocks(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Actor>> {
        let me = acting(ctx).await?;
        actors_page(
            ctx,
            "JOIN actors a ON a.uri = b.blocked WHERE b.blocker = $1",
            "blocks b",
            "b",
            &me.uri,
            first,
            after,
        )
        .await
    }

    /// Posts the signed-in actor favorited, most recent favorite first.
    async fn favorites(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Post>> {
        let me = signed_in(ctx)?;
        posts_page(ctx, "favorites x", &me, first, after).await
    }

    /// Posts the signed-in actor reblogged, most recent first.
    async fn reblogs(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Post>> {
        let me = signed_in(ctx)?;
        posts_page(ctx, "reblogs x", &me, first, after).await
    }

    /// What happened to the signed-in actor, newest first.
    async fn notifications(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Notification>> {
        let me = acting(ctx).await?;
        let s = ctx.data::<Services>()?;
        let after_given = after.is_some();
        let (first, (major, minor)) = page_args(first, after)?;
        let rows = sqlx::query(&format!(
            "SELECT n.kind, n.post, n.created_at, {ACTOR_COLUMNS}, n.position_major, n.position_minor
             FROM notifications n JOIN actors a ON a.uri = n.actor
             WHERE n.recipient = $1 AND (n.position_major, n.position_minor) < ($2, $3)
             ORDER BY n.position_major DESC, n.position_minor DESC, n.event_id
             LIMIT $4"
        ))
        .bind(&me.uri)
        .bind(major)
        .bind(minor)
        .bind(first + 1)
        .fetch_all(s.reads(ctx))
        .await
        .map_err(internal)?;
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            let kind: String = row.try_get(0).map_err(internal)?;
            let post: Option<String> = row.try_get(1).map_err(internal)?;
            let post = match post {
                Some(uri) => Post::visible(s.reads(ctx), Some(&me.uri), &uri).await?,
                None => None,
            };
            let kind = match kind.as_str() {
                "followed" => NotificationKind::Followed,
                "follow_requested" => NotificationKind::FollowRequested,
                "favorited" => NotificationKind::Favorited,
                "reblogged" => NotificationKind::Reblogged,
                _ => NotificationKind::Mentioned,
            };
            items.push((
                Notification {
                    kind,
                    post,
                    actor: Actor::from_row(row, 3).map_err(internal)?,
                    created_at: row.try_get(2).map_err(internal)?,
                },
                (
                    row.try_get(9).map_err(internal)?,
                    row.try_get(10).map_err(internal)?,
                ),
            ));
        }
        Ok(connection(items, first, after_given))
    }
}

fn post_uri(s: &Services, id: &ID) -> String {
    if id.starts_with("http://") || id.starts_with("https://") {
        id.to_string()
    } else {
        chorus_domain::posts::post_uri(
            &s.app.base_url,
            uuid::Uuid::parse_str(id).unwrap_or_default(),
        )
    }
}

async fn actor_uri(ctx: &Context<'_>, reference: &str) -> Result<String> {
    let s = ctx.data::<Services>()?;
    if reference.starts_with("http://") || reference.starts_with("https://") {
        return Ok(reference.to_owned());
    }
    s.app
        .resolve_actor(reference)
        .await
        .map(|a| a.uri)
        .map_err(|_| error("NOT_FOUND", format!("no such actor: {reference}")))
}

/// A page of actors from `table` (aliased `alias`, with positions) joined by `join`.
async fn actors_page(
    ctx: &Context<'_>,
    join: &str,
    table: &str,
    alias: &str,
    subject: &str,
    first: Option<i32>,
    after: Option<String>,
) -> Result<Connection<String, Actor>> {
    let s = ctx.data::<Services>()?;
    let after_given = after.is_some();
    let (first, (major, minor)) = page_args(first, after)?;
    let rows = sqlx::query(&format!(
        "SELECT {ACTOR_COLUMNS}, {alias}.position_major, {alias}.position_minor FROM {table} {join}
         AND ({alias}.position_major, {alias}.position_minor) < ($2, $3)
         ORDER BY {alias}.position_major DESC, {alias}.position_minor DESC LIMIT $4"
    ))
    .bind(subject)
    .bind(major)
    .bind(minor)
    .bind(first + 1)
    .fetch_all(s.reads(ctx))
    .await
    .map_err(internal)?;
    let items = rows
        .iter()
        .map(|r| Ok((Actor::from_row(r, 0)?, (r.try_get(6)?, r.try_get(7)?))))
        .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
        .map_err(internal)?;
    Ok(connection(items, first, after_given))
}

/// A page of visible posts the actor favorited or reblogged (`table x`).
async fn posts_page(
    ctx: &Context<'_>,
    table: &str,
    me: &str,
    first: Option<i32>,
    after: Option<String>,
) -> Result<Connection<String, Post>> {
    let s = ctx.data::<Services>()?;
    let after_given = after.is_some();
    let (first, (major, minor)) = page_args(first, after)?;
    let rows = sqlx::query(&format!(
        "SELECT {POST_COLUMNS}, x.position_major, x.position_minor FROM {table}
         JOIN posts p ON p.uri = x.post JOIN actors a ON a.uri = p.author
         WHERE x.actor = $1 AND (x.position_major, x.position_minor) < ($2, $3) AND {VISIBLE}
         ORDER BY x.position_major DESC, x.position_minor DESC LIMIT $4"
    ))
    .bind(me)
    .bind(major)
    .bind(minor)
    .bind(first + 1)
    .fetch_all(s.reads(ctx))
    .await
    .map_err(internal)?;
    let items = rows
        .iter()
        .map(|r| Ok((Post::from_row(r)?.0, (r.try_get(22)?, r.try_get(23)?))))
        .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
        .map_err(internal)?;
    Ok(connection(items, first, after_given))
}
