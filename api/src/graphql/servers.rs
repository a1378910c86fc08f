//! Servers in GraphQL: creating them, their channels, moderators and
//! members, and the messages posted in their channels.

use async_graphql::{ComplexObject, Context, Enum, ID, InputObject, SimpleObject};
use chorus_domain::servers::Membership;
use chrono::{DateTime, Utc};

use super::types::Post;
use super::{GraphqlError, MAX_PAGE, Result, Services, acting, error, internal, viewer_uri};
use crate::app::{MemberAction, PostInput, ServerInput};

/// Who may join a server.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum ServerMembership {
    /// Anyone who joins is a member at once.
    Open,
    /// Joining waits for a moderator's approval.
    Approval,
}

impl From<ServerMembership> for Membership {
    fn from(m: ServerMembership) -> Self {
        match m {
            ServerMembership::Open => Self::Open,
            ServerMembership::Approval => Self::Approval,
        }
    }
}

/// A member's standing in a server.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum ServerRole {
    Owner,
    Moderator,
    Member,
    /// Asked to join; waits for a moderator.
    Pending,
}

/// What a moderator does to a member.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum ModerationAction {
    /// Lets a pending member in.
    Approve,
    /// Removes a member (or turns down a request); they may ask again.
    Remove,
    /// Removes a member and refuses them from then on.
    Ban,
    /// Lifts a ban.
    Unban,
}

impl From<ModerationAction> for MemberAction {
    fn from(a: ModerationAction) -> Self {
        match a {
            ModerationAction::Approve => Self::Approve,
            ModerationAction::Remove => Self::Remove,
            ModerationAction::Ban => Self::Ban,
            ModerationAction::Unban => Self::Unban,
        }
    }
}

/// A channel of a server.
#[derive(SimpleObject, Clone, Debug)]
pub struct ServerChannel {
    /// Its short name (`general`).
    pub name: String,
    pub topic: Option<String>,
    /// Its ActivityPub id: the collection of its messages.
    pub uri: String,
}

/// A channel to create with a server.
#[derive(InputObject, Debug)]
pub struct ChannelInput {
    pub name: String,
    pub topic: Option<String>,
}

/// A new server.
#[derive(InputObject, Debug)]
pub struct CreateServerInput {
    /// Its name: the `rust` of `!rust@example.com`, unique among servers
    /// and accounts.
    pub name: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    #[graphql(default_with = "ServerMembership::Open")]
    pub membership: ServerMembership,
    /// Whether anyone, member or not, may reply to its messages (open
    /// servers only).
    #[graphql(default)]
    pub open_replies: bool,
    /// Its first channels; `general` when none.
    #[graphql(default)]
    pub channels: Vec<ChannelInput>,
}

/// A message to post in a channel.
#[derive(InputObject, Debug)]
pub struct MessageInput {
    pub text: String,
    pub summary: Option<String>,
    #[graphql(default)]
    pub sensitive: bool,
    /// The message replied to.
    pub in_reply_to: Option<ID>,
}

/// A server: a community of channels, an ActivityPub `Group`.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct Server {
    /// Its ActivityPub id.
    pub id: ID,
    pub name: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub membership: ServerMembership,
    /// Anyone may reply to its messages.
    pub open_replies: bool,
    /// The owner's ActivityPub id.
    pub owner: String,
    pub created_at: DateTime<Utc>,
    pub channels: Vec<ServerChannel>,
    pub member_count: i64,
}

/// A member of a server.
#[derive(SimpleObject, Clone, Debug)]
pub struct ServerMember {
    /// The member's ActivityPub id.
    pub actor: String,
    pub role: ServerRole,
}

/// A message in a channel.
#[derive(SimpleObject, Clone, Debug)]
pub struct ChannelMessage {
    pub channel: String,
    pub author: String,
    pub announced_at: DateTime<Utc>,
    /// The post, if the viewer may see it.
    pub post: Option<Post>,
}

type ServerRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    bool,
    String,
    DateTime<Utc>,
    i64,
);

const SERVER_COLUMNS: &str = "s.uri, s.name, s.display_name, s.description, s.membership,
    s.open_replies, s.owner,
    s.created_at, (SELECT count(*) FROM follows f WHERE f.followee = s.uri AND f.state = 'accepted')";

impl Server {
    /// The server named `name` (or with that ActivityPub id).
    pub(crate) async fn find(ctx: &Context<'_>, reference: &str) -> Result<Option<Self>> {
        let pool = ctx.data::<Services>()?.reads(ctx);
        let row: Option<ServerRow> = sqlx::query_as(&format!(
            "SELECT {SERVER_COLUMNS} FROM servers s WHERE s.name = lower($1) OR s.uri = $1"
        ))
        .bind(reference.trim())
        .fetch_optional(pool)
        .await
        .map_err(internal)?;
        match row {
            Some(row) => Ok(Some(Self::from_row(pool, row).await?)),
            None => Ok(None),
        }
    }

    /// Servers, newest first.
    pub(crate) async fn list(ctx: &Context<'_>, first: i32) -> Result<Vec<Self>> {
        let pool = ctx.data::<Services>()?.reads(ctx);
        let rows: Vec<ServerRow> = sqlx::query_as(&format!(
            "SELECT {SERVER_COLUMNS} FROM servers s
             ORDER BY s.position_major DESC, s.position_minor DESC LIMIT $1"
        ))
        .bind(i64::from(first.clamp(1, MAX_PAGE)))
        .fetch_all(pool)
        .await
        .map_err(internal)?;
        let mut servers = Vec::with_capacity(rows.len());
        for row in rows {
            servers.push(Self::from_row(pool, row).await?);
        }
        Ok(servers)
    }

    async fn from_row(pool: &sqlx::PgPool, row: ServerRow) -> Result<Self> {
        let (
            uri,
            name,
            display_name,
            description,
            membership,
            open_replies,
            owner,
            created_at,
            members,
        ) = row;
        let channels: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT slug, topic FROM server_channels WHERE server = $1
             ORDER BY position_major, position_minor, slug",
        )
        .bind(&uri)
        .fetch_all(pool)
        .await
        .map_err(internal)?;
        Ok(Self {
            channels: channels
                .into_iter()
                .map(|(slug, topic)| ServerChannel {
                    uri: format!("{uri}/channels/{slug}"),
                    name: slug,
                    topic,
                })
                .collect(),
            id: ID(uri),
            name,
            display_name,
            description,
            membership: if membership == "approval" {
                ServerMembership::Approval
            } else {
                ServerMembership::Open
            },
            open_replies,
            owner,
            created_at,
            member_count: members,
        })
    }
}

#[ComplexObject]
impl Server {
    /// Its members, moderators and owner first; with `pending`, those who
    /// asked to join (moderators only).
    async fn members(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] first: i32,
        #[graphql(default)] pending: bool,
    ) -> Result<Vec<ServerMember>> {
        let pool = ctx.data::<Services>()?.reads(ctx);
        if pending && !self.moderated_by(ctx, viewer_uri(ctx).as_deref()).await? {
            return Err(error(
                "FORBIDDEN",
                "only the server's moderators see who asked to join",
            ));
        }
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT f.follower,
                    CASE WHEN f.state = 'requested' THEN 'pending'
                         WHEN f.follower = s.owner THEN 'owner'
                         WHEN m.member IS NOT NULL THEN 'moderator'
                         ELSE 'member' END
             FROM servers s
             JOIN follows f ON f.followee = s.uri
             LEFT JOIN server_moderators m ON m.server = s.uri AND m.member = f.follower
             WHERE s.uri = $1 AND f.state = CASE WHEN $2 THEN 'requested' ELSE 'accepted' END
             ORDER BY (f.follower = s.owner) DESC, (m.member IS NOT NULL) DESC,
                      f.position_major, f.position_minor
             LIMIT $3",
        )
        .bind(self.id.as_str())
        .bind(pending)
        .bind(i64::from(first.clamp(1, MAX_PAGE)))
        .fetch_all(pool)
        .await
        .map_err(internal)?;
        Ok(rows
            .into_iter()
            .map(|(actor, role)| ServerMember {
                actor,
                role: match role.as_str() {
                    "owner" => ServerRole::Owner,
                    "moderator" => ServerRole::Moderator,
                    "pending" => ServerRole::Pending,
                    _ => ServerRole::Member,
                },
            })
            .collect())
    }

    /// The moderators (the owner first).
    async fn moderators(&self, ctx: &Context<'_>) -> Result<Vec<String>> {
        let pool = ctx.data::<Services>()?.reads(ctx);
        let mut moderators = vec![self.owner.clone()];
        moderators.extend(
            sqlx::query_scalar::<_, String>(
                "SELECT member FROM server_moderators WHERE server = $1 ORDER BY appointed_at",
            )
            .bind(self.id.as_str())
            .fetch_all(pool)
            .await
            .map_err(internal)?,
        );
        Ok(moderators)
    }

    /// The signed-in actor's role, if any.
    async fn my_role(&self, ctx: &Context<'_>) -> Result<Option<ServerRole>> {
        let Some(me) = viewer_uri(ctx) else {
            return Ok(None);
        };
        if me == self.owner {
            return Ok(Some(ServerRole::Owner));
        }
        let pool = ctx.data::<Services>()?.reads(ctx);
        let row: Option<(bool, String)> = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM server_moderators WHERE server = $1 AND member = $2),
                    state
             FROM follows WHERE followee = $1 AND follower = $2 AND state <> 'rejected'",
        )
        .bind(self.id.as_str())
        .bind(&me)
        .fetch_optional(pool)
        .await
        .map_err(internal)?;
        Ok(
            row.map(|(moderator, state)| match (moderator, state.as_str()) {
                (_, "requested") => ServerRole::Pending,
                (true, _) => ServerRole::Moderator,
                _ => ServerRole::Member,
            }),
        )
    }

    /// Messages, newest first: of one channel, or of all; `before` is the
    /// ActivityPub id of the oldest message already seen.
    async fn messages(
        &self,
        ctx: &Context<'_>,
        channel: Option<String>,
        #[graphql(default = 20)] first: i32,
        before: Option<String>,
    ) -> Result<Vec<ChannelMessage>> {
        let pool = ctx.data::<Services>()?.reads(ctx);
        let rows: Vec<(String, String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT m.post, m.channel, m.author, m.announced_at
             FROM channel_messages m
             WHERE m.server = $1 AND ($2::text IS NULL OR m.channel = lower($2))
               AND m.removed_at IS NULL
               AND ($3::text IS NULL OR (m.position_major, m.position_minor) <
                    (SELECT position_major, position_minor FROM channel_messages
                     WHERE server = $1 AND post = $3))
             ORDER BY m.position_major DESC, m.position_minor DESC
             LIMIT $4",
        )
        .bind(self.id.as_str())
        .bind(channel.as_deref().map(|c| c.trim_start_matches('#')))
        .bind(before)
        .bind(i64::from(first.clamp(1, MAX_PAGE)))
        .fetch_all(pool)
        .await
        .map_err(internal)?;
        let viewer = viewer_uri(ctx);
        let mut messages = Vec::with_capacity(rows.len());
        for (post, channel, author, announced_at) in rows {
            messages.push(ChannelMessage {
                post: Post::visible(pool, viewer.as_deref(), &post).await?,
                channel,
                author,
                announced_at,
            });
        }
        Ok(messages)
    }
}

impl Server {
    async fn moderated_by(&self, ctx: &Context<'_>, actor: Option<&str>) -> Result<bool> {
        let Some(actor) = actor else {
            return Ok(false);
        };
        if actor == self.owner {
            return Ok(true);
        }
        let pool = ctx.data::<Services>()?.reads(ctx);
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM server_moderators WHERE server = $1 AND member = $2)",
        )
        .bind(self.id.as_str())
        .bind(actor)
        .fetch_one(pool)
        .await
        .map_err(internal)
    }
}

/// The server after a command, once the read models show it.
async fn server_after(
    ctx: &Context<'_>,
    reference: &str,
    position: Option<chorus_domain::Position>,
) -> Result<Server> {
    ctx.data::<Services>()?.caught_up(position).await;
    Server::find(ctx, reference)
        .await?
        .ok_or_else(|| error("NOT_FOUND", format!("no such server: {reference}")))
}

pub(crate) async fn create(ctx: &Context<'_>, input: CreateServerInput) -> Result<Server> {
    let me = acting(ctx).await?;
    let s = ctx.data::<Services>()?;
    let created = s
        .app
        .create_server(
            &me,
            ServerInput {
                name: input.name,
                display_name: input.display_name,
                description: input.description,
                membership: input.membership.into(),
                open_replies: input.open_replies,
                channels: input
                    .channels
                    .into_iter()
                    .map(|c| (c.name, c.topic))
                    .collect(),
            },
        )
        .await
        .map_err(GraphqlError::from)?;
    server_after(ctx, &created.server.uri, created.position).await
}

pub(crate) async fn add_channel(
    ctx: &Context<'_>,
    server: &str,
    name: &str,
    topic: Option<String>,
) -> Result<Server> {
    let me = acting(ctx).await?;
    let s = ctx.data::<Services>()?;
    let position = s
        .app
        .add_channel(&me, server, name, topic)
        .await
        .map_err(GraphqlError::from)?;
    server_after(ctx, server, position).await
}

pub(crate) async fn set_moderator(
    ctx: &Context<'_>,
    server: &str,
    member: &str,
    moderator: bool,
) -> Result<Server> {
    let me = acting(ctx).await?;
    let s = ctx.data::<Services>()?;
    let position = s
        .app
        .set_moderator(&me, server, member, moderator)
        .await
        .map_err(GraphqlError::from)?;
    server_after(ctx, server, position).await
}

pub(crate) async fn moderate(
    ctx: &Context<'_>,
    server: &str,
    member: &str,
    action: ModerationAction,
) -> Result<Server> {
    let me = acting(ctx).await?;
    let s = ctx.data::<Services>()?;
    let target = s
        .app
        .moderate_member(&me, server, member, action.into())
        .await
        .map_err(GraphqlError::from)?;
    server_after(ctx, server, target.position).await
}

/// Joins (`join`: true) or leaves a server.
pub(crate) async fn membership(ctx: &Context<'_>, server: &str, join: bool) -> Result<Server> {
    let me = acting(ctx).await?;
    let s = ctx.data::<Services>()?;
    let (found, _) = s.app.server(server).await.map_err(GraphqlError::from)?;
    let target = if join {
        s.app.follow(&me, &found.uri).await
    } else {
        s.app.unfollow(&me, &found.uri).await
    }
    .map_err(GraphqlError::from)?;
    server_after(ctx, &found.uri, target.position).await
}

pub(crate) async fn post_message(
    ctx: &Context<'_>,
    server: &str,
    channel: Option<&str>,
    input: MessageInput,
) -> Result<Post> {
    let me = acting(ctx).await?;
    let s = ctx.data::<Services>()?;
    let target = s
        .app
        .post_message(
            &me,
            server,
            channel,
            PostInput {
                text: input.text,
                summary: input.summary,
                sensitive: input.sensitive,
                visibility: chorus_domain::posts::Visibility::Public,
                in_reply_to: input.in_reply_to.map(|id| id.to_string()),
                audience: None,
            },
        )
        .await
        .map_err(GraphqlError::from)?;
    s.caught_up(target.position).await;
    Post::visible(&s.pool, Some(&me.uri), &target.uri)
        .await?
        .ok_or_else(|| error("NOT_FOUND", "the message is not visible"))
}

pub(crate) async fn remove_message(ctx: &Context<'_>, server: &str, post: &str) -> Result<ID> {
    let me = acting(ctx).await?;
    let s = ctx.data::<Services>()?;
    let position = s
        .app
        .remove_message(&me, server, post)
        .await
        .map_err(GraphqlError::from)?;
    s.caught_up(position).await;
    Ok(ID(post.to_owned()))
}
