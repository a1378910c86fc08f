//! The local actions of the federation table, each producing its outbound
//! activity inside the event it appends.
//!
//! Their targets may be remote: an actor known from the actors read model
//! (or found through the [`Directory`](crate::federation::directory) when
//! federation runs), a post taken in from another server (its own stream,
//! `remote-post-…`).

use chorus_domain::inbound::{RemoteActor, host_of};
use chorus_domain::interactions::{self, InteractionState, favorite_stream, reblog_stream};
use chorus_domain::posts::{
    self, Author, CreatePost, EditPost, Mention, PostFacts, PostState, ReplyParent, ReplyTarget,
    Standing, Visibility, post_stream,
};
use chorus_domain::relationships::{self, Followee, RelationshipState, relationship_stream};
use chorus_domain::remote::{RemoteParent, RemotePostState, remote_post_stream};
use chorus_domain::{DomainEvent, Position, StreamId};
use uuid::Uuid;

use super::{App, AppError, LocalActor};
use crate::federation::directory::{DirectoryError, is_http_url, parse_acct};

/// A new post or reply.
#[derive(Clone, Debug)]
pub struct PostInput {
    pub text: String,
    pub summary: Option<String>,
    pub sensitive: bool,
    pub visibility: Visibility,
    /// The post replied to: its id or ActivityPub id.
    pub in_reply_to: Option<String>,
    /// A message in a server's channel (see [`App::post_message`]).
    pub audience: Option<posts::Audience>,
}

/// What a favorite or reblog decision sees of its post.
struct Interaction<'a> {
    target: interactions::Target<'a, dyn PostFacts>,
    uri: &'a str,
    author: &'a str,
}

/// An actor a local action names: local, or remote and known (in the
/// actors read model, or just found through the directory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownActor {
    /// Its ActivityPub id.
    pub uri: String,
    /// How mentions name it: `bob` when local, `bob@host` when remote.
    pub acct: String,
    pub local: bool,
    /// Follows wait for approval (`manuallyApprovesFollowers`).
    pub locked: bool,
    /// Its profile page, if it publishes one.
    pub url: Option<String>,
}

impl From<&RemoteActor> for KnownActor {
    fn from(actor: &RemoteActor) -> Self {
        let domain = actor.domain().unwrap_or_default();
        Self {
            uri: actor.id.clone(),
            acct: format!(
                "{}@{domain}",
                actor.preferred_username.as_deref().unwrap_or_default()
            ),
            local: false,
            locked: actor.locked,
            url: actor.url.clone(),
        }
    }
}

/// A post an action names, as its own stream tells it.
#[derive(Debug)]
enum FoundPost {
    // Boxed: the states are large, and far apart in size.
    Local { id: Uuid, state: Box<PostState> },
    Remote(Box<RemotePostState>),
}

impl FoundPost {
    /// Its id and author. Both exist: a post is only found once created.
    fn uri_and_author(&self, base: &str) -> (String, String) {
        match self {
            Self::Local { id, state } => (
                posts::post_uri(base, *id),
                state
                    .created
                    .as_ref()
                    .map(|p| p.author.clone())
                    .unwrap_or_default(),
            ),
            Self::Remote(state) => state
                .created
                .as_ref()
                .map(|p| (p.uri.clone(), p.author.clone()))
                .unwrap_or_default(),
        }
    }

    fn post_id(&self) -> Option<Uuid> {
        match self {
            Self::Local { id, .. } => Some(*id),
            Self::Remote(_) => None,
        }
    }

    /// The post as the interaction decisions see it (`post` is `None` once
    /// it is deleted).
    fn target(&self, standing: Standing) -> interactions::Target<'_, dyn PostFacts> {
        let (post, mentions): (Option<&dyn PostFacts>, &[String]) = match self {
            Self::Local { state, .. } => {
                (state.live().map(|p| p as &dyn PostFacts), state.mentions())
            }
            Self::Remote(state) => (state.live().map(|p| p as &dyn PostFacts), &state.mentions),
        };
        interactions::Target {
            post,
            mentions,
            standing,
        }
    }
}

/// The post a reply answers.
#[derive(Debug)]
enum Parent {
    Local(Box<PostState>),
    Remote(Box<RemoteParent>),
}

impl Parent {
    fn as_reply_parent(&self) -> &dyn ReplyParent {
        match self {
            Self::Local(state) => state.as_ref(),
            Self::Remote(parent) => parent.as_ref(),
        }
    }
}

/// How many of a post's mentions are looked up at once.
const MENTION_LOOKUPS: usize = 8;

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
        let (mut state, _) = self.load::<PostState>(&post_stream(id)).await?;
        let Some(post) = &state.created else {
            return Err(AppError::NotFound {
                what: "post",
                id: reference.to_owned(),
            });
        };
        // A deleted account's posts went with it: its Delete{Person} stands
        // for a Delete of each.
        if !state.deleted && self.local_actor_by_uri(&post.author).await?.is_none() {
            state.deleted = true;
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

    /// The post `reference` names: a local post by its id or ActivityPub
    /// id, or a remote post Chorus holds by its ActivityPub id. Deleted
    /// posts are found (their decisions refuse them, or not); posts of
    /// blocked instances are not.
    async fn find_post(&self, reference: &str) -> Result<FoundPost, AppError> {
        let reference = reference.trim();
        let not_found = || AppError::NotFound {
            what: "post",
            id: reference.to_owned(),
        };
        if self.post_id(reference).is_ok() {
            let (id, state) = self.post_state(reference).await?;
            return Ok(FoundPost::Local {
                id,
                state: Box::new(state),
            });
        }
        if !is_http_url(reference) || self.is_local_uri(reference) {
            return Err(not_found());
        }
        let (state, _) = self
            .load::<RemotePostState>(&remote_post_stream(reference))
            .await?;
        let Some(post) = &state.created else {
            return Err(not_found());
        };
        // The read models hide what blocked instances wrote; so do actions.
        if self.instance_blocked(&post.author).await? {
            return Err(not_found());
        }
        Ok(FoundPost::Remote(Box::new(state)))
    }

    fn is_local_uri(&self, uri: &str) -> bool {
        uri.strip_prefix(&self.base_url)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// Whether the instance of `uri` (its host and non-default port, as
    /// the inbox matches it) is blocked.
    async fn instance_blocked(&self, uri: &str) -> Result<bool, AppError> {
        let Some(domain) = host_of(uri) else {
            return Ok(false);
        };
        Ok(
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM blocked_instances WHERE domain = $1)")
                .bind(domain)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The mentions in `text` that name actors: local ones, known remote
    /// ones, and (when federation runs) remote ones found on their servers.
    /// A mention that names no one stays plain text.
    async fn mentions(&self, text: &str) -> Result<Vec<Mention>, AppError> {
        use futures::StreamExt as _;
        let accts = posts::mentioned_accts(text);
        // A few lookups side by side (each may ask another server), in order.
        let found: Vec<_> = futures::stream::iter(accts.clone())
            .map(|acct| async move { self.find_actor(&acct).await })
            .buffered(MENTION_LOOKUPS)
            .collect()
            .await;
        let mut out = Vec::new();
        for (acct, found) in accts.into_iter().zip(found) {
            match found {
                Ok(actor) => out.push(Mention {
                    acct,
                    uri: actor.uri,
                    url: actor.url,
                }),
                Err(error) if error.is_internal() => return Err(error),
                Err(error) => {
                    tracing::info!(%acct, %error, "a mention names no actor; left as text")
                }
            }
        }
        Ok(out)
    }

    /// How a post's tags name `uri` when it was not written in the text (the
    /// author of the post replied to): `None` for an actor Chorus does not
    /// know, whose tag then has no name.
    async fn mention_of(&self, uri: &str) -> Result<Option<Mention>, AppError> {
        if let Some(local) = self.local_actor_by_uri(uri).await? {
            return Ok(Some(Mention {
                acct: local.handle.as_str().to_owned(),
                uri: local.uri,
                url: None,
            }));
        }
        let row: Option<(String, String, Option<String>)> =
            sqlx::query_as("SELECT handle, domain, url FROM actors WHERE uri = $1 AND NOT local")
                .bind(uri)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(handle, domain, url)| Mention {
            acct: format!("{handle}@{domain}"),
            uri: uri.to_owned(),
            url,
        }))
    }

    /// Adds how tags name `replied_to` to `mentions`, unless the text
    /// mentions them already or it is `author`.
    async fn mention_replied_to(
        &self,
        mentions: &mut Vec<Mention>,
        author: &str,
        replied_to: Option<&str>,
    ) -> Result<(), AppError> {
        let Some(replied_to) = replied_to.filter(|r| *r != author) else {
            return Ok(());
        };
        if mentions.iter().any(|m| m.uri == replied_to) {
            return Ok(());
        }
        if let Some(mention) = self.mention_of(replied_to).await? {
            mentions.push(mention);
        }
        Ok(())
    }

    /// The post a reply answers, found by `reference`.
    async fn parent(&self, reference: &str) -> Result<(Parent, String), AppError> {
        let found = self.find_post(reference).await?;
        let (uri, author) = found.uri_and_author(&self.base_url);
        let parent = match found {
            FoundPost::Local { state, .. } => Parent::Local(state),
            FoundPost::Remote(state) => {
                // The thread a remote post belongs to is known to the posts
                // read model, which follows the replies as they come; until
                // it has the post, the post's own parent (or the post)
                // stands for the thread, as the read model would have it.
                let root: Option<String> =
                    sqlx::query_scalar("SELECT thread_root FROM posts WHERE uri = $1")
                        .bind(&uri)
                        .fetch_optional(&self.pool)
                        .await?;
                let thread_root = root
                    .or_else(|| state.created.as_ref().and_then(|p| p.in_reply_to.clone()))
                    .unwrap_or_else(|| uri.clone());
                Parent::Remote(Box::new(RemoteParent {
                    state: *state,
                    thread_root,
                }))
            }
        };
        Ok((parent, author))
    }

    pub async fn create_post(
        &self,
        actor: &LocalActor,
        input: PostInput,
    ) -> Result<Target, AppError> {
        let post_id = Uuid::now_v7();
        let parent = match &input.in_reply_to {
            Some(reference) => {
                let (parent, author) = self.parent(reference).await?;
                let standing = self.standing(&actor.uri, &author).await?;
                Some((parent, standing, author))
            }
            None => None,
        };
        let mut mentions = self.mentions(&input.text).await?;
        let replied_to = parent.as_ref().map(|(_, _, author)| author.as_str());
        self.mention_replied_to(&mut mentions, &actor.uri, replied_to)
            .await?;
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
                    audience: input.audience.clone(),
                };
                let reply_to = parent.as_ref().map(|(parent, standing, _)| ReplyTarget {
                    parent: parent.as_reply_parent(),
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
        let mut mentions = self.mentions(&text).await?;
        let (post, _) = self.load::<PostState>(&post_stream(id)).await?;
        let replied_to = post.created.and_then(|p| p.in_reply_to_author);
        self.mention_replied_to(&mut mentions, &actor.uri, replied_to.as_deref())
            .await?;
        let base = self.base_url.clone();
        let mut update = None;
        let position = self
            .execute::<PostState, _>(&post_stream(id), Some(&actor.uri), |state| {
                let command = EditPost {
                    text: text.clone(),
                    summary: summary.clone(),
                    sensitive,
                    mentions: mentions.clone(),
                };
                let events = posts::edit(state, &actor.uri, command, &base, chrono::Utc::now())?;
                if let Some(DomainEvent::PostEdited(edited)) = events.first() {
                    update = Some(edited.activity.clone());
                }
                Ok(events)
            })
            .await?;
        let uri = posts::post_uri(&self.base_url, id);
        // A message in a server here: the server passes the edit on.
        let passed_on = match update.filter(|_| position.is_some()) {
            Some(update) => {
                self.announce_activity(&uri, &actor.uri, &update, &super::Stamp::default())
                    .await?
            }
            None => None,
        };
        Ok(Target {
            post_id: Some(id),
            uri,
            position: passed_on.or(position),
        })
    }

    pub async fn delete_post(
        &self,
        actor: &LocalActor,
        reference: &str,
    ) -> Result<Target, AppError> {
        let id = self.post_id(reference)?;
        let mut delete = None;
        let position = self
            .execute::<PostState, _>(&post_stream(id), Some(&actor.uri), |state| {
                let events = posts::delete(state, &actor.uri, chrono::Utc::now())?;
                if let Some(DomainEvent::PostDeleted(deleted)) = events.first() {
                    delete = Some(deleted.activity.clone());
                }
                Ok(events)
            })
            .await?;
        let uri = posts::post_uri(&self.base_url, id);
        // A message in a server leaves it too, announced by the server.
        let removed = match delete.filter(|_| position.is_some()) {
            Some(delete) => {
                self.message_deleted(&uri, &actor.uri, &delete, &super::Stamp::default())
                    .await?
            }
            None => None,
        };
        Ok(Target {
            post_id: Some(id),
            uri,
            position: removed.or(position),
        })
    }

    /// Runs a favorite or reblog decision of `actor` on the post (local or
    /// remote) `reference` names, in that pair's stream (`stream`).
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
        let post = self.find_post(reference).await?;
        let (uri, author) = post.uri_and_author(&self.base_url);
        let standing = self.standing(&actor.uri, &author).await?;
        let position = self
            .execute::<InteractionState, _>(&stream(&actor.uri, &uri), Some(&actor.uri), |state| {
                let seen = Interaction {
                    target: post.target(standing),
                    uri: &uri,
                    author: &author,
                };
                decide(state, &seen)
            })
            .await?;
        Ok(Target {
            post_id: post.post_id(),
            uri,
            position,
        })
    }

    pub async fn favorite(&self, actor: &LocalActor, reference: &str) -> Result<Target, AppError> {
        let like_id = self.activity_id();
        let mut like = None;
        let target = self
            .interact(actor, reference, favorite_stream, |state, seen| {
                let events = interactions::favorite(state, &actor.uri, &seen.target, &like_id)?;
                if let Some(DomainEvent::Favorited(favorited)) = events.first() {
                    like = Some(favorited.activity.clone());
                }
                Ok(events)
            })
            .await?;
        // A message of a server here: the server passes the like on.
        let passed_on = match like.filter(|_| target.position.is_some()) {
            Some(like) => {
                self.announce_activity(&target.uri, &actor.uri, &like, &super::Stamp::default())
                    .await?
            }
            None => None,
        };
        Ok(Target {
            position: passed_on.or(target.position),
            ..target
        })
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

    /// [`App::relate_with`] for actions that may concern a remote actor
    /// Chorus knows (a follower to approve, an actor to block): `other` is a
    /// local actor's reference, or a known actor's id or `user@host`.
    async fn relate_known<F>(
        &self,
        actor: &LocalActor,
        by: &str,
        other: &str,
        decide: F,
    ) -> Result<Target, AppError>
    where
        F: FnMut(&RelationshipState, &str) -> Result<Vec<DomainEvent>, AppError>,
    {
        let other = self.known_actor(other).await?;
        self.relate_with(actor, by, &other, decide).await
    }

    /// Decides on the relationship of `actor` with `other`; `by` is who
    /// acted (the actor itself, or a moderator of a server), recorded as
    /// the events' actor.
    async fn relate_with<F>(
        &self,
        actor: &LocalActor,
        by: &str,
        other: &str,
        mut decide: F,
    ) -> Result<Target, AppError>
    where
        F: FnMut(&RelationshipState, &str) -> Result<Vec<DomainEvent>, AppError>,
    {
        let position = self
            .execute::<RelationshipState, _>(
                &relationship_stream(&actor.uri, other),
                Some(by),
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
        match self.remote_actor(reference).await? {
            Some((actor, false)) => Ok(actor.uri),
            _ => Err(AppError::NotFound {
                what: "actor",
                id: reference.to_owned(),
            }),
        }
    }

    /// The remote actor `reference` (its id, or `user@host`) names in the
    /// actors read model, and whether it deleted itself.
    async fn remote_actor(&self, reference: &str) -> Result<Option<(KnownActor, bool)>, AppError> {
        type Row = (String, String, String, bool, Option<String>, bool);
        const COLUMNS: &str = "uri, handle, domain, locked, url, deleted_at IS NOT NULL";
        let reference = reference.trim();
        let row: Option<Row> = if is_http_url(reference) {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM actors WHERE uri = $1 AND NOT local"
            ))
            .bind(reference)
            .fetch_optional(&self.pool)
            .await?
        } else if let Some((name, host)) = parse_acct(reference) {
            // A live actor first, should a deleted one have had the name.
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM actors
                 WHERE lower(handle) = lower($1) AND domain = $2 AND NOT local
                 ORDER BY deleted_at IS NOT NULL LIMIT 1"
            ))
            .bind(name)
            .bind(host)
            .fetch_optional(&self.pool)
            .await?
        } else {
            None
        };
        Ok(row.map(|(uri, handle, domain, locked, url, deleted)| {
            (
                KnownActor {
                    uri,
                    acct: format!("{handle}@{domain}"),
                    local: false,
                    locked,
                    url,
                },
                deleted,
            )
        }))
    }

    /// Whether `reference` can only name a local actor: a bare handle, an
    /// address on this host, or an id under this server.
    fn names_local(&self, reference: &str) -> bool {
        let reference = reference.trim();
        if is_http_url(reference) {
            return self.is_local_uri(reference);
        }
        match parse_acct(reference) {
            Some((_, host)) => host.eq_ignore_ascii_case(self.host()),
            None => !reference.trim_start_matches('@').contains('@'),
        }
    }

    /// The actor `reference` names: a local actor (handle, address or id),
    /// or a remote one by id or `user@host`, from the actors read model or,
    /// when federation runs and it is unknown, from its own server (found
    /// with WebFinger, fetched and recorded).
    pub async fn find_actor(&self, reference: &str) -> Result<KnownActor, AppError> {
        let reference = reference.trim();
        match self.resolve_actor(reference).await {
            Ok(local) => {
                return Ok(KnownActor {
                    acct: local.handle.as_str().to_owned(),
                    uri: local.uri,
                    local: true,
                    locked: local.locked,
                    url: None,
                });
            }
            Err(AppError::NotFound { .. }) => {}
            Err(error) => return Err(error),
        }
        let not_found = || AppError::NotFound {
            what: "actor",
            id: reference.to_owned(),
        };
        if self.names_local(reference)
            || !(is_http_url(reference) || parse_acct(reference).is_some())
        {
            return Err(not_found());
        }
        match self.remote_actor(reference).await? {
            Some((actor, false)) => return Ok(actor),
            Some((_, true)) => return Err(not_found()),
            None => {}
        }
        let Some(directory) = &self.directory else {
            return Err(not_found());
        };
        let found = directory.resolve(reference).await?;
        Ok(KnownActor::from(&found))
    }

    /// Follows an actor, local or remote. A remote actor answers later with
    /// Accept or Reject (the interpreter takes them in); until then the
    /// follow is requested.
    pub async fn follow(&self, actor: &LocalActor, other: &str) -> Result<Target, AppError> {
        let other = self.find_actor(other).await?;
        if !other.local && self.instance_blocked(&other.uri).await? {
            return Err(DirectoryError::Blocked(host_of(&other.uri).unwrap_or_default()).into());
        }
        let (follow_id, accept_id) = (self.activity_id(), self.activity_id());
        let followee = Followee {
            uri: other.uri.clone(),
            locked: other.locked,
            local: other.local,
        };
        self.relate_with(actor, &actor.uri, &other.uri, |state, _| {
            Ok(relationships::follow(
                state, &actor.uri, &followee, &follow_id, &accept_id,
            )?)
        })
        .await
    }

    /// Stops following an actor, local or remote, or withdraws a request.
    pub async fn unfollow(&self, actor: &LocalActor, other: &str) -> Result<Target, AppError> {
        let uri = self.ended_with(other).await?;
        let undo_id = self.activity_id();
        self.relate_with(actor, &actor.uri, &uri, |state, other| {
            Ok(relationships::unfollow(state, &actor.uri, other, &undo_id)?)
        })
        .await
    }

    /// Approves `follower`'s pending request to follow `actor`.
    pub async fn approve_follow(
        &self,
        actor: &LocalActor,
        follower: &str,
    ) -> Result<Target, AppError> {
        self.approve_follow_by(actor, &actor.uri, follower).await
    }

    /// [`App::approve_follow`], decided by `by` on `actor`'s behalf (a moderator
    /// for a server).
    pub async fn approve_follow_by(
        &self,
        actor: &LocalActor,
        by: &str,
        follower: &str,
    ) -> Result<Target, AppError> {
        let accept_id = self.activity_id();
        self.relate_known(actor, by, follower, |state, other| {
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
        self.reject_follow_by(actor, &actor.uri, follower).await
    }

    /// [`App::reject_follow`], decided by `by` on `actor`'s behalf (a moderator
    /// for a server).
    pub async fn reject_follow_by(
        &self,
        actor: &LocalActor,
        by: &str,
        follower: &str,
    ) -> Result<Target, AppError> {
        let reject_id = self.activity_id();
        self.relate_known(actor, by, follower, |state, other| {
            Ok(relationships::reject(state, &actor.uri, other, &reject_id)?)
        })
        .await
    }

    /// Blocks an actor, local or remote (found with WebFinger when unknown,
    /// so that the Block reaches its server).
    pub async fn block(&self, actor: &LocalActor, other: &str) -> Result<Target, AppError> {
        self.block_by(actor, &actor.uri, other).await
    }

    /// [`App::block`], decided by `by` on `actor`'s behalf (a moderator
    /// for a server).
    pub async fn block_by(
        &self,
        actor: &LocalActor,
        by: &str,
        other: &str,
    ) -> Result<Target, AppError> {
        let uri = match self.known_actor(other).await {
            Ok(uri) => uri,
            Err(AppError::NotFound { .. }) => self.find_actor(other).await?.uri,
            Err(error) => return Err(error),
        };
        let block_id = self.activity_id();
        self.relate_with(actor, by, &uri, |state, other| {
            Ok(relationships::block(state, &actor.uri, other, &block_id)?)
        })
        .await
    }

    /// Lifts a block, on an actor known or not (any more).
    pub async fn unblock(&self, actor: &LocalActor, other: &str) -> Result<Target, AppError> {
        self.unblock_by(actor, &actor.uri, other).await
    }

    /// [`App::unblock`], decided by `by` on `actor`'s behalf (a moderator
    /// for a server).
    pub async fn unblock_by(
        &self,
        actor: &LocalActor,
        by: &str,
        other: &str,
    ) -> Result<Target, AppError> {
        let uri = self.ended_with(other).await?;
        let undo_id = self.activity_id();
        self.relate_with(actor, by, &uri, |state, other| {
            Ok(relationships::unblock(state, &actor.uri, other, &undo_id)?)
        })
        .await
    }

    /// The actor a follow or block to be ended names. Relationships are
    /// recorded by the other actor's id, so an id that names no actor
    /// Chorus knows (any more) still ends one; an unknown `user@host` is
    /// looked up.
    async fn ended_with(&self, other: &str) -> Result<String, AppError> {
        match self.known_actor(other).await {
            Ok(uri) => Ok(uri),
            Err(AppError::NotFound { .. }) if is_http_url(other.trim()) => {
                Ok(other.trim().to_owned())
            }
            Err(AppError::NotFound { .. }) => Ok(self.find_actor(other).await?.uri),
            Err(error) => Err(error),
        }
    }
}
