//! The local actions of the federation table, each producing its outbound
//! activity inside the event it appends.

use chorus_domain::interactions::{self, InteractionState, favorite_stream, reblog_stream};
use chorus_domain::posts::{
    self, Author, CreatePost, EditPost, Mention, PostState, ReplyTarget, Standing, Visibility,
    post_stream,
};
use chorus_domain::relationships::{self, Followee, RelationshipState, relationship_stream};
use chorus_domain::{DomainEvent, Position, StreamId};
use uuid::Uuid;

use super::{App, AppError, LocalActor};

/// A new post or reply.
#[derive(Clone, Debug)]
pub struct PostInput {
    pub text: String,
    pub summary: Option<String>,
    pub sensitive: bool,
    pub visibility: Visibility,
    /// The post replied to: its id or ActivityPub id.
    pub in_reply_to: Option<String>,
}

/// What a favorite or reblog decision sees of its post.
struct Interaction<'a> {
    target: interactions::Target<'a>,
    uri: &'a str,
    author: &'a str,
}

/// Where a command landed: the post it concerns and the log position to wait
/// for before reading the result back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub post_id: Option<Uuid>,
    pub uri: String,
    pub position: Option<Position>,
}

impl App {
    /// The id of a local post from its id or ActivityPub id.
    pub fn post_id(&self, reference: &str) -> Result<Uuid, AppError> {
        let prefix = format!("{}/posts/", self.base_url);
        let id = reference.strip_prefix(&prefix).unwrap_or(reference);
        Uuid::parse_str(id).map_err(|_| AppError::NotFound {
            what: "post",
            id: reference.to_owned(),
        })
    }

    pub(crate) async fn post_state(&self, reference: &str) -> Result<(Uuid, PostState), AppError> {
        let id = self.post_id(reference)?;
        let (state, _) = self.load::<PostState>(&post_stream(id)).await?;
        if state.created.is_none() {
            return Err(AppError::NotFound {
                what: "post",
                id: reference.to_owned(),
            });
        }
        Ok((id, state))
    }

    /// How `actor` stands towards `other`: follows them? blocked either way?
    pub async fn standing(&self, actor: &str, other: &str) -> Result<Standing, AppError> {
        if actor == other {
            return Ok(Standing::default());
        }
        let (state, _) = self
            .load::<RelationshipState>(&relationship_stream(actor, other))
            .await?;
        Ok(Standing {
            follows_author: state.follows(actor, other),
            blocked: state.blocked_either_way(actor, other),
        })
    }

    /// The mentions in `text` that name local actors.
    async fn mentions(&self, text: &str) -> Result<Vec<Mention>, AppError> {
        let mut out = Vec::new();
        for acct in posts::mentioned_accts(text) {
            if let Ok(actor) = self.resolve_actor(&acct).await {
                out.push(Mention {
                    acct,
                    uri: actor.uri,
                });
            }
        }
        Ok(out)
    }

    pub async fn create_post(
        &self,
        actor: &LocalActor,
        input: PostInput,
    ) -> Result<Target, AppError> {
        let post_id = Uuid::now_v7();
        let parent = match &input.in_reply_to {
            Some(reference) => {
                let (_, parent) = self.post_state(reference).await?;
                let author = parent
                    .created
                    .as_ref()
                    .map(|p| p.author.clone())
                    .unwrap_or_default();
                let standing = self.standing(&actor.uri, &author).await?;
                Some((parent, standing))
            }
            None => None,
        };
        let mentions = self.mentions(&input.text).await?;
        let author = Author {
            uri: actor.uri.clone(),
            followers: actor.followers.clone(),
        };
        let base = self.base_url.clone();
        let position = self
            .execute::<PostState, _>(&post_stream(post_id), Some(&actor.uri), |_| {
                let command = CreatePost {
                    post_id,
                    text: input.text.clone(),
                    summary: input.summary.clone(),
                    sensitive: input.sensitive,
                    visibility: input.visibility,
                    mentions: mentions.clone(),
                };
                let reply_to = parent.as_ref().map(|(parent, standing)| ReplyTarget {
                    parent,
                    standing: *standing,
                });
                Ok(posts::create(
                    &author,
                    command,
                    reply_to,
                    &base,
                    chrono::Utc::now(),
                )?)
            })
            .await?;
        Ok(Target {
            post_id: Some(post_id),
            uri: posts::post_uri(&self.base_url, post_id),
            position,
        })
    }

    pub async fn edit_post(
        &self,
        actor: &LocalActor,
        reference: &str,
        text: String,
        summary: Option<String>,
        sensitive: bool,
    ) -> Result<Target, AppError> {
        let id = self.post_id(reference)?;
        let mentions = self.mentions(&text).await?;
        let base = self.base_url.clone();
        let position = self
            .execute::<PostState, _>(&post_stream(id), Some(&actor.uri), |state| {
                let command = EditPost {
                    text: text.clone(),
                    summary: summary.clone(),
                    sensitive,
                    mentions: mentions.clone(),
                };
                Ok(posts::edit(
                    state,
                    &actor.uri,
                    command,
                    &base,
                    chrono::Utc::now(),
                )?)
            })
            .await?;
        Ok(Target {
            post_id: Some(id),
            uri: posts::post_uri(&self.base_url, id),
            position,
        })
    }

    pub async fn delete_post(
        &self,
        actor: &LocalActor,
        reference: &str,
    ) -> Result<Target, AppError> {
        let id = self.post_id(reference)?;
        let position = self
            .execute::<PostState, _>(&post_stream(id), Some(&actor.uri), |state| {
                Ok(posts::delete(state, &actor.uri, chrono::Utc::now())?)
            })
            .await?;
        Ok(Target {
            post_id: Some(id),
            uri: posts::post_uri(&self.base_url, id),
            position,
        })
    }

    /// Runs a favorite or reblog decision of `actor` on the post `reference`
    /// names, in that pair's stream (`stream`).
    async fn interact<F>(
        &self,
        actor: &LocalActor,
        reference: &str,
        stream: fn(&str, &str) -> StreamId,
        mut decide: F,
    ) -> Result<Target, AppError>
    where
        F: FnMut(&InteractionState, &Interaction<'_>) -> Result<Vec<DomainEvent>, AppError>,
    {
        let (id, post) = self.post_state(reference).await?;
        let live = post.live().cloned();
        let author = post
            .created
            .as_ref()
            .map(|p| p.author.clone())
            .unwrap_or_default();
        let standing = self.standing(&actor.uri, &author).await?;
        let uri = posts::post_uri(&self.base_url, id);
        let position = self
            .execute::<InteractionState, _>(&stream(&actor.uri, &uri), Some(&actor.uri), |state| {
                let seen = Interaction {
                    target: interactions::Target {
                        post: live.as_ref(),
                        mentions: post.mentions(),
                        standing,
                    },
                    uri: &uri,
                    author: &author,
                };
                decide(state, &seen)
            })
            .await?;
        Ok(Target {
            post_id: Some(id),
            uri,
            position,
        })
    }

    pub async fn favorite(&self, actor: &LocalActor, reference: &str) -> Result<Target, AppError> {
        let like_id = self.activity_id();
        self.interact(actor, reference, favorite_stream, |state, seen| {
            Ok(interactions::favorite(
                state,
                &actor.uri,
                &seen.target,
                &like_id,
            )?)
        })
        .await
    }

    pub async fn unfavorite(
        &self,
        actor: &LocalActor,
        reference: &str,
    ) -> Result<Target, AppError> {
        let undo_id = self.activity_id();
        self.interact(actor, reference, favorite_stream, |state, seen| {
            Ok(interactions::unfavorite(
                state,
                &actor.uri,
                seen.uri,
                seen.author,
                &undo_id,
            )?)
        })
        .await
    }

    pub async fn reblog(&self, actor: &LocalActor, reference: &str) -> Result<Target, AppError> {
        let announce_id = self.activity_id();
        self.interact(actor, reference, reblog_stream, |state, seen| {
            let now = chrono::Utc::now();
            Ok(interactions::reblog(
                state,
                &actor.uri,
                &actor.followers,
                &seen.target,
                &announce_id,
                now,
            )?)
        })
        .await
    }

    pub async fn unreblog(&self, actor: &LocalActor, reference: &str) -> Result<Target, AppError> {
        let undo_id = self.activity_id();
        self.interact(actor, reference, reblog_stream, |state, seen| {
            Ok(interactions::unreblog(
                state,
                &actor.uri,
                &actor.followers,
                seen.uri,
                seen.author,
                &undo_id,
            )?)
        })
        .await
    }

    /// Runs a relationship decision between `actor` and the local actor
    /// `other` refers to.
    async fn relate<F>(
        &self,
        actor: &LocalActor,
        other: &str,
        mut decide: F,
    ) -> Result<Target, AppError>
    where
        F: FnMut(&RelationshipState, &LocalActor) -> Result<Vec<DomainEvent>, AppError>,
    {
        let other = self.resolve_actor(other).await?;
        self.relate_with(actor, &other.uri, |state, _| decide(state, &other))
            .await
    }

    /// [`App::relate`] for actions that may concern a remote actor Chorus
    /// knows (a follower to approve, an actor to block): `other` is a local
    /// actor's reference, or a known actor's id or `user@host`.
    async fn relate_known<F>(
        &self,
        actor: &LocalActor,
        other: &str,
        decide: F,
    ) -> Result<Target, AppError>
    where
        F: FnMut(&RelationshipState, &str) -> Result<Vec<DomainEvent>, AppError>,
    {
        let other = self.known_actor(other).await?;
        self.relate_with(actor, &other, decide).await
    }

    async fn relate_with<F>(
        &self,
        actor: &LocalActor,
        other: &str,
        mut decide: F,
    ) -> Result<Target, AppError>
    where
        F: FnMut(&RelationshipState, &str) -> Result<Vec<DomainEvent>, AppError>,
    {
        let position = self
            .execute::<RelationshipState, _>(
                &relationship_stream(&actor.uri, other),
                Some(&actor.uri),
                |state| decide(state, other),
            )
            .await?;
        Ok(Target {
            post_id: None,
            uri: other.to_owned(),
            position,
        })
    }

    /// The id of a local actor, or of a remote one in the actors read model.
    pub async fn known_actor(&self, reference: &str) -> Result<String, AppError> {
        match self.resolve_actor(reference).await {
            Ok(local) => return Ok(local.uri),
            Err(AppError::NotFound { .. }) => {}
            Err(error) => return Err(error),
        }
        let acct = reference.trim().trim_start_matches('@');
        let uri: Option<String> =
            if reference.starts_with("http://") || reference.starts_with("https://") {
                sqlx::query_scalar("SELECT uri FROM actors WHERE uri = $1 AND deleted_at IS NULL")
                    .bind(reference)
                    .fetch_optional(&self.pool)
                    .await?
            } else if let Some((name, host)) = acct.split_once('@') {
                sqlx::query_scalar(
                    "SELECT uri FROM actors
                 WHERE lower(handle) = lower($1) AND domain = lower($2) AND deleted_at IS NULL
                 LIMIT 1",
                )
                .bind(name)
                .bind(host)
                .fetch_optional(&self.pool)
                .await?
            } else {
                None
            };
        uri.ok_or_else(|| AppError::NotFound {
            what: "actor",
            id: reference.to_owned(),
        })
    }

    pub async fn follow(&self, actor: &LocalActor, other: &str) -> Result<Target, AppError> {
        let (follow_id, accept_id) = (self.activity_id(), self.activity_id());
        self.relate(actor, other, |state, other| {
            let followee = Followee {
                uri: other.uri.clone(),
                locked: other.locked,
                local: true,
            };
            Ok(relationships::follow(
                state, &actor.uri, &followee, &follow_id, &accept_id,
            )?)
        })
        .await
    }

    pub async fn unfollow(&self, actor: &LocalActor, other: &str) -> Result<Target, AppError> {
        let undo_id = self.activity_id();
        self.relate(actor, other, |state, other| {
            Ok(relationships::unfollow(
                state, &actor.uri, &other.uri, &undo_id,
            )?)
        })
        .await
    }

    /// Approves `follower`'s pending request to follow `actor`.
    pub async fn approve_follow(
        &self,
        actor: &LocalActor,
        follower: &str,
    ) -> Result<Target, AppError> {
        let accept_id = self.activity_id();
        self.relate_known(actor, follower, |state, other| {
            Ok(relationships::approve(
                state, &actor.uri, other, &accept_id,
            )?)
        })
        .await
    }

    /// Rejects `follower`'s request (or removes them as a follower).
    pub async fn reject_follow(
        &self,
        actor: &LocalActor,
        follower: &str,
    ) -> Result<Target, AppError> {
        let reject_id = self.activity_id();
        self.relate_known(actor, follower, |state, other| {
            Ok(relationships::reject(state, &actor.uri, other, &reject_id)?)
        })
        .await
    }

    pub async fn block(&self, actor: &LocalActor, other: &str) -> Result<Target, AppError> {
        let block_id = self.activity_id();
        self.relate_known(actor, other, |state, other| {
            Ok(relationships::block(state, &actor.uri, other, &block_id)?)
        })
        .await
    }

    pub async fn unblock(&self, actor: &LocalActor, other: &str) -> Result<Target, AppError> {
        let undo_id = self.activity_id();
        self.relate_known(actor, other, |state, other| {
            Ok(relationships::unblock(state, &actor.uri, other, &undo_id)?)
        })
        .await
    }
}
