//! Servers: creating them, their channels and moderators, their members,
//! and the messages members post in their channels.

use chorus_domain::actors::{self, Handle};
use chorus_domain::posts::{Audience, PostState, post_stream};
use chorus_domain::relationships::{RelationshipState, relationship_stream};
use chorus_domain::servers::{
    self, Channel, ChannelSlug, CreateServer, Membership, Message, MessageState, ServerCreated,
    ServerError, ServerState,
};
use chorus_domain::{DomainEvent, EventStoreError, ExpectedVersion, Metadata, Position};
use uuid::Uuid;

use super::{App, AppError, LocalActor, PostInput, Stamp, Target};
use crate::keys;

/// A created server.
#[derive(Debug)]
pub struct NewServer {
    pub server: LocalActor,
    pub created: ServerCreated,
    pub position: Option<Position>,
}

/// A server to create.
#[derive(Clone, Debug)]
pub struct ServerInput {
    /// Its name (shared with accounts' handles).
    pub name: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub membership: Membership,
    /// Non-members may reply to messages (open servers only).
    pub open_replies: bool,
    /// Its first channels: names and topics (`general` when none).
    pub channels: Vec<(String, Option<String>)>,
}

/// What a moderator does to a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberAction {
    /// Lets a pending member in.
    Approve,
    /// Removes a member (or turns down a request): they may ask again.
    Remove,
    /// Bans: removed, and refused from then on.
    Ban,
    /// Lifts a ban.
    Unban,
}

/// How an actor stands in a server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerMember {
    pub member: bool,
    pub banned: bool,
}

impl App {
    /// Creates a server owned by `owner`, with its own key pair. The
    /// creation event and the private key commit together.
    pub async fn create_server(
        &self,
        owner: &LocalActor,
        input: ServerInput,
    ) -> Result<NewServer, AppError> {
        if owner.group {
            return Err(AppError::Forbidden);
        }
        let ServerInput {
            name,
            display_name,
            description,
            membership,
            open_replies,
            channels,
        } = input;
        let name = Handle::parse(&name)?;
        let channels = channels
            .into_iter()
            .map(|(slug, topic)| {
                Ok(Channel {
                    slug: ChannelSlug::parse(&slug)?,
                    topic: topic.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()),
                })
            })
            .collect::<Result<Vec<_>, ServerError>>()?;
        let stream = actors::actor_stream(&name);
        let (state, _) = self.load::<ServerState>(&stream).await?;
        let keys = keys::generate()?;
        let server_id = Uuid::now_v7();
        let events = servers::create(
            &state,
            CreateServer {
                server_id,
                name: name.clone(),
                display_name,
                description,
                membership,
                open_replies,
                owner: owner.uri.clone(),
                channels,
                public_key_pem: keys.public_pem.clone(),
            },
            &self.base_url,
            chrono::Utc::now(),
        )?;
        let Some(DomainEvent::ServerCreated(created)) = events.first().cloned() else {
            return Err(AppError::Invalid("the creation decided nothing".into()));
        };
        let stamp = Stamp {
            metadata: Metadata {
                actor: Some(owner.uri.clone()),
                correlation_id: Some(Uuid::now_v7()),
                ..Metadata::default()
            },
            cause: None,
        };
        let new_events = events
            .iter()
            .map(|e| stamp.event(e, "created"))
            .collect::<Result<Vec<_>, _>>()?;
        let mut tx = self.pool.begin().await?;
        let outcome = match self
            .store
            .append_in(&mut tx, &stream, ExpectedVersion::NoStream, &new_events)
            .await
        {
            Ok(outcome) => outcome,
            Err(EventStoreError::WrongExpectedVersion { .. }) => {
                return Err(ServerError::NameTaken(name).into());
            }
            Err(e) => return Err(e.into()),
        };
        sqlx::query("INSERT INTO actor_keys (actor_id, private_key_pem) VALUES ($1, $2)")
            .bind(server_id)
            .bind(&keys.private_pem)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.store.appended();
        Ok(NewServer {
            server: LocalActor::from(&created),
            created,
            position: outcome.last_position(),
        })
    }

    /// The server named `name` (or with that ActivityPub id), as its
    /// stream tells it.
    pub async fn server(&self, reference: &str) -> Result<(LocalActor, ServerState), AppError> {
        let not_found = || AppError::NotFound {
            what: "server",
            id: reference.to_owned(),
        };
        let name = reference
            .strip_prefix(&format!("{}/servers/", self.base_url))
            .unwrap_or(reference);
        let name = Handle::parse(name).map_err(|_| not_found())?;
        let (state, _) = self
            .load::<ServerState>(&actors::actor_stream(&name))
            .await?;
        let server = state
            .created
            .as_ref()
            .map(LocalActor::from)
            .ok_or_else(not_found)?;
        Ok((server, state))
    }

    /// Whether `actor` is a member of `server` (follows it, accepted) and
    /// whether the server banned it (blocks it).
    pub async fn standing_in(&self, server: &str, actor: &str) -> Result<ServerMember, AppError> {
        let (state, _) = self
            .load::<RelationshipState>(&relationship_stream(actor, server))
            .await?;
        Ok(ServerMember {
            member: state.follows(actor, server),
            banned: state.blocks(server, actor),
        })
    }

    /// Adds a channel, as the owner or a moderator.
    pub async fn add_channel(
        &self,
        by: &LocalActor,
        server: &str,
        slug: &str,
        topic: Option<String>,
    ) -> Result<Option<Position>, AppError> {
        let (server, _) = self.server(server).await?;
        let channel = Channel {
            slug: ChannelSlug::parse(slug)?,
            topic: topic.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()),
        };
        self.execute::<ServerState, _>(
            &actors::actor_stream(&server.handle),
            Some(&by.uri),
            |state| Ok(servers::create_channel(state, &by.uri, channel.clone())?),
        )
        .await
    }

    /// Makes a member a moderator, or a member again, as the owner.
    pub async fn set_moderator(
        &self,
        by: &LocalActor,
        server: &str,
        member: &str,
        moderator: bool,
    ) -> Result<Option<Position>, AppError> {
        let (server, _) = self.server(server).await?;
        let member = self.known_actor(member).await?;
        let standing = self.standing_in(&server.uri, &member).await?;
        self.execute::<ServerState, _>(
            &actors::actor_stream(&server.handle),
            Some(&by.uri),
            |state| {
                Ok(servers::set_moderator(
                    state,
                    &by.uri,
                    &member,
                    standing.member && !standing.banned,
                    moderator,
                )?)
            },
        )
        .await
    }

    /// Approves, removes, bans or unbans a member, as a moderator: the
    /// server accepts or rejects the member's follow, or blocks them.
    pub async fn moderate_member(
        &self,
        by: &LocalActor,
        server: &str,
        member: &str,
        action: MemberAction,
    ) -> Result<Target, AppError> {
        let (server, state) = self.server(server).await?;
        if !state.moderates(&by.uri) {
            return Err(ServerError::NotModerator.into());
        }
        let member_uri = self.known_actor(member).await?;
        if state.role(&member_uri, false).is_some() && action != MemberAction::Approve {
            // The owner and moderators are demoted first.
            return Err(ServerError::OwnerRole.into());
        }
        match action {
            MemberAction::Approve => self.approve_follow_by(&server, &by.uri, member).await,
            MemberAction::Remove => self.reject_follow_by(&server, &by.uri, member).await,
            MemberAction::Ban => self.block_by(&server, &by.uri, member).await,
            MemberAction::Unban => self.unblock_by(&server, &by.uri, member).await,
        }
    }

    /// Posts a message in a server's channel (its first one when `channel`
    /// is `None`, or the channel of the message replied to) as a member,
    /// and has the server announce it to its members.
    pub async fn post_message(
        &self,
        by: &LocalActor,
        server: &str,
        channel: Option<&str>,
        mut input: PostInput,
    ) -> Result<Target, AppError> {
        let (server, state) = match self.server(server).await {
            Ok(found) => found,
            Err(AppError::NotFound { .. }) => {
                return self.post_remote_message(by, server, channel, input).await;
            }
            Err(error) => return Err(error),
        };
        let standing = self.standing_in(&server.uri, &by.uri).await?;
        let parent_channel = match &input.in_reply_to {
            Some(parent) => {
                let parent = match self.post_id(parent) {
                    Ok(id) => chorus_domain::posts::post_uri(&self.base_url, id),
                    Err(_) => parent.trim().to_owned(),
                };
                self.message_channel(&server.uri, &parent).await?
            }
            None => None,
        };
        state.admits(
            &by.uri,
            standing.member,
            standing.banned,
            parent_channel.is_some(),
        )?;
        let slug = match (channel, parent_channel.clone()) {
            (Some(named), _) => {
                let slug = ChannelSlug::parse(named)?;
                state
                    .channel(&slug)
                    .ok_or_else(|| ServerError::NoSuchChannel(named.to_owned()))?
                    .slug
                    .clone()
            }
            (None, Some(parent)) => parent,
            (None, None) => state
                .default_channel()
                .ok_or(ServerError::NoChannels)?
                .slug
                .clone(),
        };
        input.audience = Some(Audience {
            server: server.uri.clone(),
            channel: Some(servers::channel_uri(&server.uri, &slug)),
        });
        let post = self.create_post(by, input).await?;
        let (created, _) = self
            .load::<PostState>(&post_stream(post.post_id.unwrap_or_default()))
            .await?;
        let Some(created) = created.created else {
            return Err(AppError::Invalid("the message was not created".into()));
        };
        let message = Message {
            post: created.uri.clone(),
            author: by.uri.clone(),
            in_reply_to: created.in_reply_to.clone(),
            channel: Some(servers::channel_uri(&server.uri, &slug)),
            parent_channel,
            activity: created.activity.clone(),
            member: standing.member,
            banned: false,
        };
        let position = self
            .announce_message(&server, message, &Stamp::default())
            .await?;
        Ok(Target {
            position: position.or(post.position),
            ..post
        })
    }

    /// Posts a message to a server elsewhere (a `Group` on another Chorus,
    /// a Lemmy community): addressed to it, for it to check and announce.
    /// A channel is named by its id, or by its name on another Chorus.
    async fn post_remote_message(
        &self,
        by: &LocalActor,
        server: &str,
        channel: Option<&str>,
        mut input: PostInput,
    ) -> Result<Target, AppError> {
        let group = self.find_actor(server).await?;
        let kind: Option<String> = sqlx::query_scalar("SELECT kind FROM actors WHERE uri = $1")
            .bind(&group.uri)
            .fetch_optional(&self.pool)
            .await?;
        if group.local || kind.as_deref() != Some("Group") {
            return Err(AppError::NotFound {
                what: "server",
                id: server.to_owned(),
            });
        }
        let channel = match channel.map(str::trim) {
            Some(id) if id.starts_with("https://") || id.starts_with("http://") => {
                Some(id.to_owned())
            }
            Some(name) => Some(servers::channel_uri(&group.uri, &ChannelSlug::parse(name)?)),
            None => None,
        };
        input.audience = Some(Audience {
            server: group.uri,
            channel,
        });
        self.create_post(by, input).await
    }

    /// The channel of `post` if it is a message of `server` (from the
    /// servers read model).
    pub async fn message_channel(
        &self,
        server: &str,
        post: &str,
    ) -> Result<Option<ChannelSlug>, AppError> {
        let slug: Option<String> = sqlx::query_scalar(
            "SELECT channel FROM channel_messages WHERE server = $1 AND post = $2",
        )
        .bind(server)
        .bind(post)
        .fetch_optional(&self.pool)
        .await?;
        Ok(slug.and_then(|s| ChannelSlug::parse(&s).ok()))
    }

    /// Has `server` announce a member's message (local or remote), once.
    pub async fn announce_message(
        &self,
        server: &LocalActor,
        message: Message,
        stamp: &Stamp,
    ) -> Result<Option<Position>, AppError> {
        let (state, _) = self
            .load::<ServerState>(&actors::actor_stream(&server.handle))
            .await?;
        let mut stamp = stamp.clone();
        stamp.metadata.actor = Some(server.uri.clone());
        if stamp.metadata.correlation_id.is_none() {
            stamp.metadata.correlation_id = Some(Uuid::now_v7());
        }
        self.execute_stamped::<MessageState, _>(
            &servers::message_stream(&server.uri, &message.post),
            &stamp,
            |current| {
                Ok(servers::announce_message(
                    &state,
                    current,
                    message.clone(),
                    chrono::Utc::now(),
                )?)
            },
        )
        .await
    }

    /// A post its author deleted leaves the servers it was posted in: each
    /// announces the author's `Delete` (`delete`) to its members. Servers
    /// that removed it already change nothing.
    pub async fn message_deleted(
        &self,
        post: &str,
        author: &str,
        delete: &serde_json::Value,
        stamp: &Stamp,
    ) -> Result<Option<Position>, AppError> {
        self.on_messages(
            post,
            author,
            stamp,
            |state, message, _| match servers::remove_message(
                state,
                message,
                author,
                Some(delete.clone()),
                chrono::Utc::now(),
            ) {
                Err(ServerError::AlreadyRemoved | ServerError::UnknownMessage) => Ok(vec![]),
                decided => Ok(decided?),
            },
        )
        .await
    }

    /// Has every server here that `post` is a message of announce
    /// `activity` on it (its author's `Update`, a member's `Like`), once.
    /// Returns the position of the last announcement, if any was made.
    pub async fn announce_activity(
        &self,
        post: &str,
        actor: &str,
        activity: &serde_json::Value,
        stamp: &Stamp,
    ) -> Result<Option<Position>, AppError> {
        self.on_messages(post, actor, stamp, |state, message, standing| {
            match servers::announce_activity(
                state,
                message,
                actor,
                standing.member,
                standing.banned,
                activity.clone(),
            ) {
                // Not for the server to pass on: nothing to do.
                Err(
                    ServerError::UnknownMessage
                    | ServerError::Banned(_)
                    | ServerError::NotMember(_)
                    | ServerError::NotModerator,
                ) => Ok(vec![]),
                decided => Ok(decided?),
            }
        })
        .await
    }

    /// Decides, for every server here that `post` is a standing message
    /// of, on the message's stream: `decide` sees the server's state, the
    /// message's, and how `actor` (who acted) stands in the server. The
    /// events are the server's, caused as `stamp` says. Returns the
    /// position of the last append.
    async fn on_messages<F>(
        &self,
        post: &str,
        actor: &str,
        stamp: &Stamp,
        mut decide: F,
    ) -> Result<Option<Position>, AppError>
    where
        F: FnMut(&ServerState, &MessageState, ServerMember) -> Result<Vec<DomainEvent>, AppError>,
    {
        let servers: Vec<String> = sqlx::query_scalar(
            "SELECT server FROM channel_messages WHERE post = $1 AND removed_at IS NULL",
        )
        .bind(post)
        .fetch_all(&self.pool)
        .await?;
        let mut last = None;
        for uri in servers {
            let (server, state) = self.server(&uri).await?;
            let standing = self.standing_in(&server.uri, actor).await?;
            let mut stamp = stamp.clone();
            stamp.metadata.actor = Some(actor.to_owned());
            if stamp.metadata.correlation_id.is_none() {
                stamp.metadata.correlation_id = Some(Uuid::now_v7());
            }
            let decided = self
                .execute_stamped::<MessageState, _>(
                    &servers::message_stream(&server.uri, post),
                    &stamp,
                    |message| decide(&state, message, standing),
                )
                .await?;
            last = decided.or(last);
        }
        Ok(last)
    }

    /// Removes a message from its server, as its author or a moderator:
    /// the server announces a `Delete` to its members.
    pub async fn remove_message(
        &self,
        by: &LocalActor,
        server: &str,
        post: &str,
    ) -> Result<Option<Position>, AppError> {
        let (server, state) = self.server(server).await?;
        let post = match self.post_id(post) {
            Ok(id) => chorus_domain::posts::post_uri(&self.base_url, id),
            Err(_) => post.trim().to_owned(),
        };
        self.execute::<MessageState, _>(
            &servers::message_stream(&server.uri, &post),
            Some(&by.uri),
            |message| {
                Ok(servers::remove_message(
                    &state,
                    message,
                    &by.uri,
                    None,
                    chrono::Utc::now(),
                )?)
            },
        )
        .await
    }
}
