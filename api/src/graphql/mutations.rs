//! Mutations: each runs a command, waits until the read models show its
//! events, and answers from them.

use async_graphql::{Context, ID, InputObject, Object};

use super::types::{Post, Relationship, Visibility};
use super::{GraphqlError, Result, Services, acting, error};
use crate::app::{PostInput, Target};

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
    /// The post replied to (id or ActivityPub id).
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

#[Object]
impl MutationRoot {
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

    /// Favorites a post (Like).
    async fn favorite(&self, ctx: &Context<'_>, post: ID) -> Result<Post> {
        let me = acting(ctx).await?;
        let target = ctx
            .data::<Services>()?
            .app
            .favorite(&me, &post)
            .await
            .map_err(GraphqlError::from)?;
        post_after(ctx, target).await
    }

    /// Takes back a favorite (Undo{Like}).
    async fn unfavorite(&self, ctx: &Context<'_>, post: ID) -> Result<Post> {
        let me = acting(ctx).await?;
        let target = ctx
            .data::<Services>()?
            .app
            .unfavorite(&me, &post)
            .await
            .map_err(GraphqlError::from)?;
        post_after(ctx, target).await
    }

    /// Reblogs a post (Announce).
    async fn reblog(&self, ctx: &Context<'_>, post: ID) -> Result<Post> {
        let me = acting(ctx).await?;
        let target = ctx
            .data::<Services>()?
            .app
            .reblog(&me, &post)
            .await
            .map_err(GraphqlError::from)?;
        post_after(ctx, target).await
    }

    /// Takes back a reblog (Undo{Announce}).
    async fn unreblog(&self, ctx: &Context<'_>, post: ID) -> Result<Post> {
        let me = acting(ctx).await?;
        let target = ctx
            .data::<Services>()?
            .app
            .unreblog(&me, &post)
            .await
            .map_err(GraphqlError::from)?;
        post_after(ctx, target).await
    }

    /// Follows an actor (Follow); unlocked local actors accept at once.
    async fn follow(&self, ctx: &Context<'_>, actor: String) -> Result<Relationship> {
        let me = acting(ctx).await?;
        let target = ctx
            .data::<Services>()?
            .app
            .follow(&me, &actor)
            .await
            .map_err(GraphqlError::from)?;
        relationship_after(ctx, &me.uri, target).await
    }

    /// Stops following, or withdraws a request (Undo{Follow}).
    async fn unfollow(&self, ctx: &Context<'_>, actor: String) -> Result<Relationship> {
        let me = acting(ctx).await?;
        let target = ctx
            .data::<Services>()?
            .app
            .unfollow(&me, &actor)
            .await
            .map_err(GraphqlError::from)?;
        relationship_after(ctx, &me.uri, target).await
    }

    /// Approves a pending follow request (Accept{Follow}).
    async fn approve_follow_request(
        &self,
        ctx: &Context<'_>,
        actor: String,
    ) -> Result<Relationship> {
        let me = acting(ctx).await?;
        let target = ctx
            .data::<Services>()?
            .app
            .approve_follow(&me, &actor)
            .await
            .map_err(GraphqlError::from)?;
        relationship_after(ctx, &me.uri, target).await
    }

    /// Rejects a follow request or removes a follower (Reject{Follow}).
    async fn reject_follow_request(
        &self,
        ctx: &Context<'_>,
        actor: String,
    ) -> Result<Relationship> {
        let me = acting(ctx).await?;
        let target = ctx
            .data::<Services>()?
            .app
            .reject_follow(&me, &actor)
            .await
            .map_err(GraphqlError::from)?;
        relationship_after(ctx, &me.uri, target).await
    }

    /// Blocks an actor (Block); follows between you end.
    async fn block(&self, ctx: &Context<'_>, actor: String) -> Result<Relationship> {
        let me = acting(ctx).await?;
        let target = ctx
            .data::<Services>()?
            .app
            .block(&me, &actor)
            .await
            .map_err(GraphqlError::from)?;
        relationship_after(ctx, &me.uri, target).await
    }

    /// Lifts a block (Undo{Block}).
    async fn unblock(&self, ctx: &Context<'_>, actor: String) -> Result<Relationship> {
        let me = acting(ctx).await?;
        let target = ctx
            .data::<Services>()?
            .app
            .unblock(&me, &actor)
            .await
            .map_err(GraphqlError::from)?;
        relationship_after(ctx, &me.uri, target).await
    }
}
