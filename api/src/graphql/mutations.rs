//! Mutations: each runs a command, waits until the read models show its
//! events, and answers from them.

use async_graphql::{Context, ID, InputObject, Object};

use chorus_workers::delivery::admin as delivery;

use super::deliveries::{DeliveryHost, DeliveryState, admin_error, admin_only};
use super::servers;
use super::types::{InstanceBlock, Post, Relationship, Visibility};
use super::{GraphqlError, Result, Services, acting, error};
use crate::app::{App, AppError, LocalActor, PostInput, Target};

/// A new post or reply.
#[derive(InputObject, Debug)]
pub struct CreatePostInput {
    /// Plain text; mentions, hashtags and links are recognised.
    pub text: String,
    /// Content warning.
    pub summary: Option<String>,
    #[graphql(default)]
    pub sensitive: bool,
    #[graphql(default_with = "Visibility::Public")]
    pub visibility: Visibility,
    /// The post replied to: a local post's id, or the ActivityPub id of a
    /// local or remote post. The reply mentions its author.
    pub in_reply_to: Option<ID>,
}

/// New text for a post.
#[derive(InputObject, Debug)]
pub struct EditPostInput {
    pub text: String,
    pub summary: Option<String>,
    #[graphql(default)]
    pub sensitive: bool,
}

#[derive(Debug)]
pub struct MutationRoot;

async fn post_after(ctx: &Context<'_>, target: Target) -> Result<Post> {
    let s = ctx.data::<Services>()?;
    s.caught_up(target.position).await;
    let viewer = super::viewer_uri(ctx);
    Post::visible(&s.pool, viewer.as_deref(), &target.uri)
        .await?
        .ok_or_else(|| error("NOT_FOUND", "the post is not visible"))
}

async fn relationship_after(ctx: &Context<'_>, me: &str, target: Target) -> Result<Relationship> {
    let s = ctx.data::<Services>()?;
    s.caught_up(target.position).await;
    Relationship::between(&s.pool, me, &target.uri).await
}

/// Runs a command on a post as the signed-in actor; answers with the post.
async fn on_post<F, Fut>(ctx: &Context<'_>, command: F) -> Result<Post>
where
    F: FnOnce(App, LocalActor) -> Fut,
    Fut: Future<Output = std::result::Result<Target, AppError>>,
{
    let me = acting(ctx).await?;
    let app = ctx.data::<Services>()?.app.clone();
    let target = command(app, me).await.map_err(GraphqlError::from)?;
    post_after(ctx, target).await
}

/// Runs a relationship command as the signed-in actor; answers with the
/// relationship it leaves.
async fn on_actor<F, Fut>(ctx: &Context<'_>, command: F) -> Result<Relationship>
where
    F: FnOnce(App, LocalActor) -> Fut,
    Fut: Future<Output = std::result::Result<Target, AppError>>,
{
    let me = acting(ctx).await?;
    let app = ctx.data::<Services>()?.app.clone();
    let uri = me.uri.clone();
    let target = command(app, me).await.map_err(GraphqlError::from)?;
    relationship_after(ctx, &uri, target).await
}

#[Object]
impl MutationRoot {
    /// Creates a server (an ActivityPub Group) owned by the signed-in
    /// account.
    async fn create_server(
        &self,
        ctx: &Context<'_>,
        input: servers::CreateServerInput,
    ) -> Result<servers::Server> {
        servers::create(ctx, input).await
    }

    /// Adds a channel to a server (its owner or a moderator).
    async fn add_channel(
        &self,
        ctx: &Context<'_>,
        server: String,
        name: String,
        topic: Option<String>,
    ) -> Result<servers::Server> {
        servers::add_channel(ctx, &server, &name, topic).await
    }

    /// Makes a member a moderator, or a member again (the owner).
    async fn set_moderator(
        &self,
        ctx: &Context<'_>,
        server: String,
        member: String,
        moderator: bool,
    ) -> Result<servers::Server> {
        servers::set_moderator(ctx, &server, &member, moderator).await
    }

    /// Approves, removes, bans or unbans a member (a moderator).
    async fn moderate_member(
        &self,
        ctx: &Context<'_>,
        server: String,
        member: String,
        action: servers::ModerationAction,
    ) -> Result<servers::Server> {
        servers::moderate(ctx, &server, &member, action).await
    }

    /// Joins a server: a member at once if it is open, else once a
    /// moderator approves.
    async fn join_server(&self, ctx: &Context<'_>, server: String) -> Result<servers::Server> {
        servers::membership(ctx, &server, true).await
    }

    /// Leaves a server (or withdraws a request to join).
    async fn leave_server(&self, ctx: &Context<'_>, server: String) -> Result<servers::Server> {
        servers::membership(ctx, &server, false).await
    }

    /// Posts a message in a server's channel (its first channel when none
    /// is named); the server announces it to its members.
    async fn post_message(
        &self,
        ctx: &Context<'_>,
        server: String,
        channel: Option<String>,
        input: servers::MessageInput,
    ) -> Result<Post> {
        servers::post_message(ctx, &server, channel.as_deref(), input).await
    }

    /// Removes a message from a server (its author or a moderator); the
    /// server announces the deletion to its members.
    async fn remove_message(&self, ctx: &Context<'_>, server: String, post: ID) -> Result<ID> {
        servers::remove_message(ctx, &server, &post).await
    }

    /// Publishes a post (Create{Note}), or a reply with `inReplyTo`.
    async fn create_post(&self, ctx: &Context<'_>, input: CreatePostInput) -> Result<Post> {
        let me = acting(ctx).await?;
        let s = ctx.data::<Services>()?;
        let target = s
            .app
            .create_post(
                &me,
                PostInput {
                    text: input.text,
                    summary: input.summary,
                    sensitive: input.sensitive,
                    visibility: input.visibility.into(),
                    in_reply_to: input.in_reply_to.map(|id| id.to_string()),
                    audience: None,
                },
            )
            .await
            .map_err(GraphqlError::from)?;
        post_after(ctx, target).await
    }

    /// Changes a post's text (Update{Note}).
    async fn edit_post(&self, ctx: &Context<'_>, id: ID, input: EditPostInput) -> Result<Post> {
        let me = acting(ctx).await?;
        let s = ctx.data::<Services>()?;
        let target = s
            .app
            .edit_post(&me, &id, input.text, input.summary, input.sensitive)
            .await
            .map_err(GraphqlError::from)?;
        post_after(ctx, target).await
    }

    /// Deletes a post (Delete{Tombstone}); returns its id.
    async fn delete_post(&self, ctx: &Context<'_>, id: ID) -> Result<ID> {
        let me = acting(ctx).await?;
        let s = ctx.data::<Services>()?;
        let target = s
            .app
            .delete_post(&me, &id)
            .await
            .map_err(GraphqlError::from)?;
        s.caught_up(target.position).await;
        Ok(id)
    }

    /// Deletes the signed-in account, or (admins) the local account
    /// `handle`: every token of it stops working, its actor answers 410
    /// Gone, its posts, follows, favorites, reblogs and blocks are gone, a
    /// Delete of the actor goes to every server Chorus knows, and its
    /// content is erased from the log. Returns the deleted actor's id.
    async fn delete_account(&self, ctx: &Context<'_>, handle: Option<String>) -> Result<ID> {
        let me = acting(ctx).await?;
        let s = ctx.data::<Services>()?;
        let handle = handle.unwrap_or_else(|| me.handle.to_string());
        let (uri, position) = s
            .app
            .delete_account(Some(&me), &handle)
            .await
            .map_err(GraphqlError::from)?;
        s.caught_up(position).await;
        Ok(ID(uri))
    }

    /// Favorites a post, local or remote (Like). `post` is a local post's id
    /// or any post's ActivityPub id.
    async fn favorite(&self, ctx: &Context<'_>, post: ID) -> Result<Post> {
        on_post(ctx, |app, me| async move { app.favorite(&me, &post).await }).await
    }

    /// Takes back a favorite (Undo{Like}).
    async fn unfavorite(&self, ctx: &Context<'_>, post: ID) -> Result<Post> {
        on_post(
            ctx,
            |app, me| async move { app.unfavorite(&me, &post).await },
        )
        .await
    }

    /// Reblogs a post, local or remote (Announce).
    async fn reblog(&self, ctx: &Context<'_>, post: ID) -> Result<Post> {
        on_post(ctx, |app, me| async move { app.reblog(&me, &post).await }).await
    }

    /// Takes back a reblog (Undo{Announce}).
    async fn unreblog(&self, ctx: &Context<'_>, post: ID) -> Result<Post> {
        on_post(ctx, |app, me| async move { app.unreblog(&me, &post).await }).await
    }

    /// Follows an actor (Follow): a local handle, `user@host`, or an
    /// ActivityPub id. Unlocked local actors accept at once; a remote actor
    /// Chorus does not know yet is found with WebFinger, and the follow stays
    /// requested until it answers.
    async fn follow(&self, ctx: &Context<'_>, actor: String) -> Result<Relationship> {
        on_actor(ctx, |app, me| async move { app.follow(&me, &actor).await }).await
    }

    /// Stops following, or withdraws a request (Undo{Follow}).
    async fn unfollow(&self, ctx: &Context<'_>, actor: String) -> Result<Relationship> {
        on_actor(
            ctx,
            |app, me| async move { app.unfollow(&me, &actor).await },
        )
        .await
    }

    /// Approves a pending follow request (Accept{Follow}).
    async fn approve_follow_request(
        &self,
        ctx: &Context<'_>,
        actor: String,
    ) -> Result<Relationship> {
        on_actor(ctx, |app, me| async move {
            app.approve_follow(&me, &actor).await
        })
        .await
    }

    /// Rejects a follow request or removes a follower (Reject{Follow}).
    async fn reject_follow_request(
        &self,
        ctx: &Context<'_>,
        actor: String,
    ) -> Result<Relationship> {
        on_actor(ctx, |app, me| async move {
            app.reject_follow(&me, &actor).await
        })
        .await
    }

    /// Blocks an actor (Block); follows between you end.
    async fn block(&self, ctx: &Context<'_>, actor: String) -> Result<Relationship> {
        on_actor(ctx, |app, me| async move { app.block(&me, &actor).await }).await
    }

    /// Lifts a block (Undo{Block}).
    async fn unblock(&self, ctx: &Context<'_>, actor: String) -> Result<Relationship> {
        on_actor(ctx, |app, me| async move { app.unblock(&me, &actor).await }).await
    }

    /// Admins: refuses a domain's inbox requests and hides its content.
    async fn block_instance(
        &self,
        ctx: &Context<'_>,
        domain: String,
        reason: Option<String>,
    ) -> Result<InstanceBlock> {
        let me = acting(ctx).await?;
        let s = ctx.data::<Services>()?;
        let (domain, position) = s
            .app
            .block_instance(Some(&me), &domain, reason)
            .await
            .map_err(GraphqlError::from)?;
        s.caught_up(position).await;
        InstanceBlock::of(s, domain).await
    }

    /// Admins: lifts a domain's block.
    async fn unblock_instance(&self, ctx: &Context<'_>, domain: String) -> Result<InstanceBlock> {
        let me = acting(ctx).await?;
        let s = ctx.data::<Services>()?;
        let (domain, position) = s
            .app
            .unblock_instance(Some(&me), &domain)
            .await
            .map_err(GraphqlError::from)?;
        s.caught_up(position).await;
        InstanceBlock::of(s, domain).await
    }

    /// Admins: sends an outbound activity again, to every inbox it was
    /// planned for, or to `inbox` alone. Each job starts afresh (retries
    /// for two days from now); one being sent right now is left to finish.
    /// Returns how many jobs were queued.
    async fn redeliver(
        &self,
        ctx: &Context<'_>,
        activity_id: String,
        inbox: Option<String>,
    ) -> Result<u64> {
        let what = crate::history::redeliver::Redelivery::Activity(activity_id);
        let inboxes = inbox.into_iter().collect();
        Ok(super::history::redeliver(ctx, what, inboxes)
            .await?
            .deliveries)
    }

    /// Admins: sends every outbound activity of `actor` recorded in
    /// `[from, to)` again, to every inbox each was planned for or to
    /// `inboxes` alone. NOT_FOUND when there is none.
    async fn redeliver_actor(
        &self,
        ctx: &Context<'_>,
        actor: String,
        from: Option<chrono::DateTime<chrono::Utc>>,
        to: Option<chrono::DateTime<chrono::Utc>>,
        #[graphql(default)] inboxes: Vec<String>,
    ) -> Result<super::history::Redelivery> {
        let what = crate::history::redeliver::Redelivery::Actor { actor, from, to };
        super::history::redeliver(ctx, what, inboxes).await
    }

    /// Admins: moves a subscriber's checkpoint back to a position or a
    /// time, so that it sees the events after it again (nothing is sent
    /// twice: every subscriber is idempotent). `dryRun` only says how many
    /// events it would see.
    async fn replay_subscriber(
        &self,
        ctx: &Context<'_>,
        name: String,
        to_position: Option<String>,
        to_time: Option<chrono::DateTime<chrono::Utc>>,
        #[graphql(default)] dry_run: bool,
    ) -> Result<super::history::SubscriberReplay> {
        super::history::replay(ctx, name, to_position, to_time, dry_run).await
    }

    /// Admins: tries a host's pending jobs now and closes its circuit.
    /// Returns how many jobs came due.
    async fn retry_delivery_host(&self, ctx: &Context<'_>, host: String) -> Result<u64> {
        let admin = admin_only(ctx).await?;
        let s = ctx.data::<Services>()?;
        let due = delivery::retry_host(&s.pool, &host)
            .await
            .map_err(admin_error)?;
        tracing::info!(%admin, %host, due, "delivery host retried");
        Ok(due)
    }

    /// Admins: rebuilds a read model from the log beside the live one, then
    /// swaps it in; answers at once (follow it with `rebuild(id)`).
    /// NOT_FOUND for an unknown name, ALREADY_RUNNING while one runs.
    async fn rebuild_projection(
        &self,
        ctx: &Context<'_>,
        name: String,
    ) -> Result<super::history::ProjectionRebuild> {
        super::history::start(ctx, std::slice::from_ref(&name))
            .await?
            .pop()
            .ok_or_else(|| error("INTERNAL", "internal error"))
    }

    /// Admins: rebuilds every read model, reading the log once.
    async fn rebuild_all_projections(
        &self,
        ctx: &Context<'_>,
    ) -> Result<Vec<super::history::ProjectionRebuild>> {
        super::history::start(ctx, &[]).await
    }

    /// Admins: interprets stored inbound activities again with the current
    /// code, in the background (follow it with `reprocessing(id)`). Sends
    /// nothing: what it would send is held until `releaseReprocessedEffects`.
    async fn reprocess_inbound(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] selection: super::history::InboundSelectionInput,
    ) -> Result<super::history::ReprocessingRun> {
        super::history::reprocess_inbound(ctx, selection).await
    }

    /// Admins: sends what a finished reprocessing run holds.
    async fn release_reprocessed_effects(
        &self,
        ctx: &Context<'_>,
        id: uuid::Uuid,
    ) -> Result<super::history::ReprocessingRun> {
        super::history::release(ctx, id).await
    }

    /// Admins: marks a host trusted (its deliveries go first) or not.
    async fn set_delivery_host_trusted(
        &self,
        ctx: &Context<'_>,
        host: String,
        trusted: bool,
    ) -> Result<DeliveryHost> {
        let admin = admin_only(ctx).await?;
        let s = ctx.data::<Services>()?;
        let status = delivery::set_trusted(&s.pool, &host, trusted)
            .await
            .map_err(admin_error)?;
        tracing::info!(%admin, %host, trusted, "delivery host trust set");
        Ok(status.into())
    }

    /// Admins: removes jobs in `state` (for `host` only, if given); purged
    /// pending jobs are never sent. Returns how many were removed.
    async fn purge_deliveries(
        &self,
        ctx: &Context<'_>,
        state: DeliveryState,
        host: Option<String>,
    ) -> Result<u64> {
        let admin = admin_only(ctx).await?;
        let s = ctx.data::<Services>()?;
        let purged = delivery::purge(&s.pool, state.into(), host.as_deref())
            .await
            .map_err(admin_error)?;
        tracing::info!(%admin, ?state, ?host, purged, "delivery jobs purged");
        Ok(purged)
    }
}
