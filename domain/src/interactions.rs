//! Favorites and reblogs of posts.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::StreamId;
use crate::activitypub::{self, PUBLIC};
use crate::actors::actor_key;
use crate::events::DomainEvent;
use crate::posts::{PostCreated, PostFacts, Standing, Visibility, can_see};

/// The stream of `actor`'s favorite of `post`.
pub fn favorite_stream(actor: &str, post: &str) -> StreamId {
    StreamId::composed(format!("favorite-{}-{}", actor_key(actor), actor_key(post)))
}

/// The stream of `actor`'s reblog of `post`.
pub fn reblog_stream(actor: &str, post: &str) -> StreamId {
    StreamId::composed(format!("reblog-{}-{}", actor_key(actor), actor_key(post)))
}

/// `actor` favorited a post (Like).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Favorited {
    pub actor: String,
    pub post: String,
    pub post_author: String,
    pub like_id: String,
    pub activity: Value,
}

/// `actor` took back a favorite (Undo{Like}).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unfavorited {
    pub actor: String,
    pub post: String,
    pub post_author: String,
    pub like_id: String,
    pub activity: Value,
}

/// `actor` reblogged a post (Announce).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reblogged {
    pub actor: String,
    pub post: String,
    pub post_author: String,
    pub announce_id: String,
    pub published: chrono::DateTime<chrono::Utc>,
    pub activity: Value,
}

/// `actor` took back a reblog (Undo{Announce}).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unreblogged {
    pub actor: String,
    pub post: String,
    pub post_author: String,
    pub announce_id: String,
    pub activity: Value,
}

/// Whether an actor currently favorites (or reblogs) one post.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InteractionState {
    /// The id and activity of the Like (or Announce) in force.
    pub current: Option<(String, Value)>,
}

impl InteractionState {
    pub fn apply(&mut self, event: &DomainEvent) {
        match event {
            DomainEvent::Favorited(e) => {
                self.current = Some((e.like_id.clone(), e.activity.clone()))
            }
            DomainEvent::Reblogged(e) => {
                self.current = Some((e.announce_id.clone(), e.activity.clone()))
            }
            DomainEvent::Unfavorited(_) | DomainEvent::Unreblogged(_) => self.current = None,
            _ => {}
        }
    }
}

/// Why a favorite or reblog was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InteractionError {
    #[error("no such post")]
    NotFound,
    #[error("you cannot interact with this actor: one of you blocks the other")]
    Blocked,
    #[error("you already favorited this post")]
    AlreadyFavorited,
    #[error("you have not favorited this post")]
    NotFavorited,
    #[error("you already reblogged this post")]
    AlreadyReblogged,
    #[error("you have not reblogged this post")]
    NotReblogged,
    #[error("only public and unlisted posts can be reblogged")]
    NotReblogable,
}

impl InteractionError {
    /// A stable code for clients.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "NOT_FOUND",
            Self::Blocked => "BLOCKED",
            Self::AlreadyFavorited => "ALREADY_FAVORITED",
            Self::NotFavorited => "NOT_FAVORITED",
            Self::AlreadyReblogged => "ALREADY_REBLOGGED",
            Self::NotReblogged => "NOT_REBLOGGED",
            Self::NotReblogable => "NOT_REBLOGABLE",
        }
    }
}

/// The post being acted on, as the decisions need it: `post` is `None` when
/// it does not exist or was deleted. A local post is a [`PostCreated`]; a
/// remote one a [`RemotePostCreated`](crate::remote::RemotePostCreated);
/// either, `dyn PostFacts`.
#[derive(Debug)]
pub struct Target<'a, P: PostFacts + ?Sized = PostCreated> {
    pub post: Option<&'a P>,
    /// The actors the post mentions now (after edits).
    pub mentions: &'a [String],
    /// How the acting actor stands towards the post's author.
    pub standing: Standing,
}

// By hand: derived, they would ask `P` to be `Clone` (a `dyn` is not),
// though only references to it are copied.
impl<P: PostFacts + ?Sized> Clone for Target<'_, P> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P: PostFacts + ?Sized> Copy for Target<'_, P> {}

fn visible<'a, P: PostFacts + ?Sized>(
    actor: &str,
    target: &Target<'a, P>,
) -> Result<&'a P, InteractionError> {
    let post = target.post.ok_or(InteractionError::NotFound)?;
    if post.author() != actor && target.standing.blocked {
        return Err(InteractionError::Blocked);
    }
    if !can_see(post, target.mentions, Some(actor), target.standing) {
        return Err(InteractionError::NotFound);
    }
    Ok(post)
}

/// Decides `actor`'s favorite of a post, local or remote.
pub fn favorite<P: PostFacts + ?Sized>(
    state: &InteractionState,
    actor: &str,
    target: &Target<'_, P>,
    like_id: &str,
) -> Result<Vec<DomainEvent>, InteractionError> {
    let post = visible(actor, target)?;
    if state.current.is_some() {
        return Err(InteractionError::AlreadyFavorited);
    }
    let activity = activitypub::activity(
        like_id,
        "Like",
        actor,
        Value::String(post.uri().to_owned()),
        &[post.author().to_owned()],
        &[],
    );
    Ok(vec![DomainEvent::Favorited(Favorited {
        actor: actor.to_owned(),
        post: post.uri().to_owned(),
        post_author: post.author().to_owned(),
        like_id: like_id.to_owned(),
        activity,
    })])
}

/// Decides `actor`'s taking back of a favorite. Works even if the post is gone.
pub fn unfavorite(
    state: &InteractionState,
    actor: &str,
    post: &str,
    post_author: &str,
    undo_id: &str,
) -> Result<Vec<DomainEvent>, InteractionError> {
    let Some((like_id, like)) = &state.current else {
        return Err(InteractionError::NotFavorited);
    };
    Ok(vec![DomainEvent::Unfavorited(Unfavorited {
        actor: actor.to_owned(),
        post: post.to_owned(),
        post_author: post_author.to_owned(),
        like_id: like_id.clone(),
        activity: activitypub::undo(undo_id, actor, like.clone(), &[post_author.to_owned()], &[]),
    })])
}

/// Decides `actor`'s reblog of a post, local or remote; `followers` is the
/// actor's followers collection.
pub fn reblog<P: PostFacts + ?Sized>(
    state: &InteractionState,
    actor: &str,
    followers: &str,
    target: &Target<'_, P>,
    announce_id: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<DomainEvent>, InteractionError> {
    let post = visible(actor, target)?;
    if !matches!(post.visibility(), Visibility::Public | Visibility::Unlisted) {
        return Err(InteractionError::NotReblogable);
    }
    if state.current.is_some() {
        return Err(InteractionError::AlreadyReblogged);
    }
    let to = [PUBLIC.to_owned()];
    let cc = [post.author().to_owned(), followers.to_owned()];
    let mut activity = activitypub::activity(
        announce_id,
        "Announce",
        actor,
        Value::String(post.uri().to_owned()),
        &to,
        &cc,
    );
    activity["published"] = Value::String(now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    Ok(vec![DomainEvent::Reblogged(Reblogged {
        actor: actor.to_owned(),
        post: post.uri().to_owned(),
        post_author: post.author().to_owned(),
        announce_id: announce_id.to_owned(),
        published: now,
        activity,
    })])
}

/// Decides `actor`'s taking back of a reblog. Works even if the post is gone.
pub fn unreblog(
    state: &InteractionState,
    actor: &str,
    followers: &str,
    post: &str,
    post_author: &str,
    undo_id: &str,
) -> Result<Vec<DomainEvent>, InteractionError> {
    let Some((announce_id, announce)) = &state.current else {
        return Err(InteractionError::NotReblogged);
    };
    let to = [PUBLIC.to_owned()];
    let cc = [post_author.to_owned(), followers.to_owned()];
    Ok(vec![DomainEvent::Unreblogged(Unreblogged {
        actor: actor.to_owned(),
        post: post.to_owned(),
        post_author: post_author.to_owned(),
        announce_id: announce_id.clone(),
        activity: activitypub::undo(undo_id, actor, announce.clone(), &to, &cc),
    })])
}
