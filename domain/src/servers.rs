//! Servers: communities of channels that federate as ActivityPub `Group`
//! actors, following FEP-1b12.
//!
//! A server is a local actor: its name shares the namespace of account
//! handles (one `actor-{name}` stream each, so a name is taken once), it has
//! a key pair, an inbox, an outbox and followers, who are its members.
//! Joining is following it (auto-accepted for open servers, waiting for a
//! moderator otherwise), leaving is undoing the follow, a ban is a block by
//! the server, all in the relationship streams like any follow or block.
//!
//! What is the server's own lives in its actor stream: its creation, its
//! channels, its moderators. Each message posted in a channel has a stream
//! of its own, in which the server announces it once (and removes it once).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::StreamId;
use crate::activitypub::{self, PUBLIC};
use crate::actors::{ActorUris, Handle, MAX_DISPLAY_NAME, actor_key};
use crate::events::DomainEvent;

/// Who may join a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Membership {
    /// Anyone who follows the server is a member at once.
    Open,
    /// Follows wait for a moderator's approval.
    Approval,
}

/// A member's standing in a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Moderator,
    Member,
}

/// A channel's short name: the `general` of `/servers/rust/channels/general`.
/// 1 to 40 characters from `a-z`, `0-9`, `-` and `_`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ChannelSlug(String);

impl ChannelSlug {
    pub const MAX_LEN: usize = 40;

    /// Validates and normalises (lower case) a channel name.
    pub fn parse(input: &str) -> Result<Self, ServerError> {
        let slug = input.trim().trim_start_matches('#').to_ascii_lowercase();
        if slug.is_empty() || slug.chars().count() > Self::MAX_LEN {
            return Err(ServerError::InvalidChannel(input.to_owned()));
        }
        if !slug
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ServerError::InvalidChannel(input.to_owned()));
        }
        Ok(Self(slug))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

validated_string!(ChannelSlug, ServerError);

/// A channel of a server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    pub slug: ChannelSlug,
    /// What the channel is about.
    pub topic: Option<String>,
}

/// The ActivityPub id of a server's channel: the collection of its messages,
/// and what a message names as its `context`.
pub fn channel_uri(server: &str, slug: &ChannelSlug) -> String {
    format!("{server}/channels/{slug}")
}

/// The channel `uri` names on `server`, if it is one of the server's.
pub fn channel_of(server: &str, uri: &str) -> Option<ChannelSlug> {
    uri.strip_prefix(server)?
        .strip_prefix("/channels/")
        .and_then(|slug| ChannelSlug::parse(slug).ok())
}

impl ActorUris {
    /// The addresses of server `name` on the server at `base`.
    pub fn group(base: &str, name: &Handle) -> Self {
        Self::under(base, "servers", name)
    }
}

/// A server came into being, with its first channels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerCreated {
    pub server_id: Uuid,
    pub name: Handle,
    pub uris: ActorUris,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub membership: Membership,
    /// Whether anyone, member or not, may reply to its messages (open
    /// servers only); absent in events recorded before it existed: no.
    #[serde(default)]
    pub open_replies: bool,
    /// The local account that created it, its owner.
    pub owner: String,
    pub channels: Vec<Channel>,
    /// PEM (SPKI) public key; the private key never enters the log.
    pub public_key_pem: String,
    pub created_at: DateTime<Utc>,
}

/// A channel was added to a server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelCreated {
    /// The server's ActivityPub id.
    pub server: String,
    pub channel: Channel,
    /// Who added it (the owner or a moderator).
    pub by: String,
}

/// A member was made a moderator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModeratorAppointed {
    pub server: String,
    pub member: String,
    pub by: String,
}

/// A moderator went back to being a member.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModeratorDismissed {
    pub server: String,
    pub member: String,
    pub by: String,
}

/// A member's message (a post addressed to the server) was accepted in a
/// channel, and the server announces the member's whole activity to its
/// members (FEP-1b12).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelMessageAnnounced {
    pub server: String,
    pub channel: ChannelSlug,
    /// The post's ActivityPub id.
    pub post: String,
    pub author: String,
    /// The post this one replies to, if any.
    pub in_reply_to: Option<String>,
    /// `Announce` of the member's activity (embedded).
    pub announce: Value,
    pub announced_at: DateTime<Utc>,
}

/// With [`ChannelMessageAnnounced`]: the server announces the post alone
/// too, for peers that only understand announced objects (Mastodon), who
/// show it as shared by the server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelMessageShared {
    pub server: String,
    pub post: String,
    /// `Announce` of the post (by id).
    pub announce: Value,
}

/// A message was removed from its channel: by its author's own deletion,
/// or by a moderator (who deletes it for everyone).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelMessageRemoved {
    pub server: String,
    pub channel: ChannelSlug,
    pub post: String,
    pub author: String,
    /// Who removed it: the author, or a moderator.
    pub by: String,
    /// `Announce` of the `Delete` the server sends its members.
    pub announce: Value,
    pub removed_at: DateTime<Utc>,
}

/// A member's activity on a message of the server (its author's `Update`,
/// anyone's `Like`), which the server announces to its members (FEP-1b12).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelActivityAnnounced {
    pub server: String,
    pub post: String,
    /// The activity's type (`Update`, `Like`) and actor.
    pub activity_type: String,
    pub actor: String,
    /// `Announce` of the activity (embedded).
    pub announce: Value,
}

/// With [`ChannelMessageRemoved`]: the server takes back its announcement
/// of the post alone (`Undo` of the [`ChannelMessageShared`] one), so that
/// peers showing it as shared by the server stop doing so.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelMessageUnshared {
    pub server: String,
    pub post: String,
    pub undo: Value,
}

/// The stream of the message `post` in `server`.
pub fn message_stream(server: &str, post: &str) -> StreamId {
    StreamId::composed(format!(
        "server-message-{}-{}",
        actor_key(server),
        actor_key(post)
    ))
}

/// Why a server command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServerError {
    #[error("the name `{0}` is taken")]
    NameTaken(Handle),
    #[error("no such server")]
    NotFound,
    #[error("`{0}` is not a valid channel name (1 to 40 of a-z, 0-9, - and _)")]
    InvalidChannel(String),
    #[error("the channel `{0}` exists already")]
    ChannelExists(ChannelSlug),
    #[error("the server has no channel `{0}`")]
    NoSuchChannel(String),
    #[error("a server needs at least one channel")]
    NoChannels,
    #[error("a display name is at most {max} characters", max = MAX_DISPLAY_NAME)]
    DisplayNameTooLong,
    #[error("a description is at most {max} characters", max = MAX_DESCRIPTION)]
    DescriptionTooLong,
    #[error("only the server's moderators may do this")]
    NotModerator,
    #[error("only the server's owner may do this")]
    NotOwner,
    #[error("{0} is not a member of the server")]
    NotMember(String),
    #[error("{0} is banned from the server")]
    Banned(String),
    #[error("the owner's role cannot change")]
    OwnerRole,
    #[error("the message was announced already")]
    AlreadyAnnounced,
    #[error("the message is not in the server")]
    UnknownMessage,
    #[error("the message was removed already")]
    AlreadyRemoved,
}

impl ServerError {
    /// A stable code for clients.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NameTaken(_) => "NAME_TAKEN",
            Self::NotFound | Self::UnknownMessage => "NOT_FOUND",
            Self::InvalidChannel(_) | Self::NoChannels => "INVALID_CHANNEL",
            Self::ChannelExists(_) => "CHANNEL_EXISTS",
            Self::NoSuchChannel(_) => "NO_SUCH_CHANNEL",
            Self::DisplayNameTooLong | Self::DescriptionTooLong => "TOO_LONG",
            Self::NotModerator | Self::NotOwner | Self::OwnerRole => "FORBIDDEN",
            Self::NotMember(_) => "NOT_MEMBER",
            Self::Banned(_) => "BANNED",
            Self::AlreadyAnnounced | Self::AlreadyRemoved => "ALREADY_DONE",
        }
    }
}

/// The longest description accepted.
pub const MAX_DESCRIPTION: usize = 2_000;

/// What a server's actor stream says so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerState {
    pub created: Option<ServerCreated>,
    pub channels: Vec<Channel>,
    pub moderators: Vec<String>,
    /// The name is an account's handle.
    pub account: bool,
}

impl ServerState {
    pub fn apply(&mut self, event: &DomainEvent) {
        match event {
            DomainEvent::ServerCreated(e) => {
                self.channels = e.channels.clone();
                self.created = Some(e.clone());
            }
            DomainEvent::ActorRegistered(_) => self.account = true,
            DomainEvent::ChannelCreated(e) => self.channels.push(e.channel.clone()),
            DomainEvent::ModeratorAppointed(e) if !self.moderators.contains(&e.member) => {
                self.moderators.push(e.member.clone());
            }
            DomainEvent::ModeratorDismissed(e) => self.moderators.retain(|m| m != &e.member),
            _ => {}
        }
    }

    /// The role of `actor`, given whether it is a member.
    pub fn role(&self, actor: &str, member: bool) -> Option<Role> {
        let created = self.created.as_ref()?;
        if created.owner == actor {
            Some(Role::Owner)
        } else if self.moderators.iter().any(|m| m == actor) {
            Some(Role::Moderator)
        } else if member {
            Some(Role::Member)
        } else {
            None
        }
    }

    /// Whether `actor` may moderate: the owner or a moderator.
    pub fn moderates(&self, actor: &str) -> bool {
        matches!(self.role(actor, false), Some(Role::Owner | Role::Moderator))
    }

    /// Whether `author` may post a message: members (the owner and
    /// moderators are), and anyone replying to a message if the server is
    /// open to replies; never the banned.
    pub fn admits(
        &self,
        author: &str,
        member: bool,
        banned: bool,
        replying: bool,
    ) -> Result<(), ServerError> {
        let created = self.existing()?;
        if banned {
            return Err(ServerError::Banned(author.to_owned()));
        }
        if member || self.role(author, false).is_some() || (replying && created.open_replies) {
            return Ok(());
        }
        Err(ServerError::NotMember(author.to_owned()))
    }

    /// The channel named `slug`.
    pub fn channel(&self, slug: &ChannelSlug) -> Option<&Channel> {
        self.channels.iter().find(|c| &c.slug == slug)
    }

    /// Where messages that name no channel go: the first one.
    pub fn default_channel(&self) -> Option<&Channel> {
        self.channels.first()
    }

    fn existing(&self) -> Result<&ServerCreated, ServerError> {
        self.created.as_ref().ok_or(ServerError::NotFound)
    }
}

/// Create a server.
#[derive(Clone, Debug)]
pub struct CreateServer {
    pub server_id: Uuid,
    pub name: Handle,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub membership: Membership,
    /// Non-members may reply to messages (open servers only).
    pub open_replies: bool,
    pub owner: String,
    /// Its first channels; `general` when none are named.
    pub channels: Vec<Channel>,
    pub public_key_pem: String,
}

fn trimmed(
    text: Option<String>,
    max: usize,
    error: ServerError,
) -> Result<Option<String>, ServerError> {
    let text = text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
    if text.as_ref().is_some_and(|t| t.chars().count() > max) {
        return Err(error);
    }
    Ok(text)
}

/// Decides a server's creation, on the `actor-{name}` stream: refused if
/// an account or a server has the name already.
pub fn create(
    state: &ServerState,
    command: CreateServer,
    base: &str,
    now: DateTime<Utc>,
) -> Result<Vec<DomainEvent>, ServerError> {
    if state.created.is_some() || state.account {
        return Err(ServerError::NameTaken(command.name));
    }
    let display_name = trimmed(
        command.display_name,
        MAX_DISPLAY_NAME,
        ServerError::DisplayNameTooLong,
    )?;
    let description = trimmed(
        command.description,
        MAX_DESCRIPTION,
        ServerError::DescriptionTooLong,
    )?;
    let mut channels: Vec<Channel> = Vec::new();
    for channel in command.channels {
        if channels.iter().any(|c| c.slug == channel.slug) {
            return Err(ServerError::ChannelExists(channel.slug));
        }
        channels.push(channel);
    }
    if channels.is_empty() {
        channels.push(Channel {
            slug: ChannelSlug("general".to_owned()),
            topic: None,
        });
    }
    Ok(vec![DomainEvent::ServerCreated(ServerCreated {
        server_id: command.server_id,
        uris: ActorUris::group(base, &command.name),
        name: command.name,
        display_name,
        description,
        membership: command.membership,
        open_replies: command.open_replies && command.membership == Membership::Open,
        owner: command.owner,
        channels,
        public_key_pem: command.public_key_pem,
        created_at: now,
    })])
}

/// Decides adding a channel, by the owner or a moderator.
pub fn create_channel(
    state: &ServerState,
    by: &str,
    channel: Channel,
) -> Result<Vec<DomainEvent>, ServerError> {
    let server = state.existing()?;
    if !state.moderates(by) {
        return Err(ServerError::NotModerator);
    }
    if state.channel(&channel.slug).is_some() {
        return Err(ServerError::ChannelExists(channel.slug));
    }
    Ok(vec![DomainEvent::ChannelCreated(ChannelCreated {
        server: server.uris.id.clone(),
        channel,
        by: by.to_owned(),
    })])
}

/// Decides making `member` a moderator (`moderator`: true) or a member
/// again (false), by the owner. `is_member`: whether `member` is one.
pub fn set_moderator(
    state: &ServerState,
    by: &str,
    member: &str,
    is_member: bool,
    moderator: bool,
) -> Result<Vec<DomainEvent>, ServerError> {
    let server = state.existing()?;
    if server.owner != by {
        return Err(ServerError::NotOwner);
    }
    if server.owner == member {
        return Err(ServerError::OwnerRole);
    }
    let current = state.moderators.iter().any(|m| m == member);
    let (server, member, by) = (server.uris.id.clone(), member.to_owned(), by.to_owned());
    Ok(match (moderator, current) {
        (true, false) if !is_member => return Err(ServerError::NotMember(member)),
        (true, false) => vec![DomainEvent::ModeratorAppointed(ModeratorAppointed {
            server,
            member,
            by,
        })],
        (false, true) => vec![DomainEvent::ModeratorDismissed(ModeratorDismissed {
            server,
            member,
            by,
        })],
        _ => vec![],
    })
}

/// A member's post addressed to the server, to be announced.
#[derive(Clone, Debug)]
pub struct Message {
    pub post: String,
    pub author: String,
    pub in_reply_to: Option<String>,
    /// The channel it names (its `context`), if any.
    pub channel: Option<String>,
    /// The channel of the post it replies to, if that is in the server.
    pub parent_channel: Option<ChannelSlug>,
    /// The author's activity (a `Create`), as sent.
    pub activity: Value,
    /// Whether the author is a member (the owner counts as one).
    pub member: bool,
    /// Whether the server banned the author.
    pub banned: bool,
}

/// What a message's stream says so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MessageState {
    pub announced: Option<ChannelMessageAnnounced>,
    pub removed: bool,
    /// The ids of the announcements of activities on it.
    pub activities: Vec<String>,
}

impl MessageState {
    pub fn apply(&mut self, event: &DomainEvent) {
        match event {
            DomainEvent::ChannelMessageAnnounced(e) => self.announced = Some(e.clone()),
            DomainEvent::ChannelMessageRemoved(_) => self.removed = true,
            DomainEvent::ChannelActivityAnnounced(e) => {
                if let Some(id) = e.announce["id"].as_str() {
                    self.activities.push(id.to_owned());
                }
            }
            _ => {}
        }
    }
}

/// The server's `Announce` of `object`, to its members.
fn announce(server: &ServerCreated, id: String, object: Value) -> Value {
    let mut announce = activitypub::activity(
        &id,
        "Announce",
        &server.uris.id,
        object,
        &[PUBLIC.to_owned()],
        std::slice::from_ref(&server.uris.followers),
    );
    announce["audience"] = json!(server.uris.id);
    announce
}

fn without_context(mut value: Value) -> Value {
    if let Some(map) = value.as_object_mut() {
        map.remove("@context");
    }
    value
}

/// Decides announcing a member's message (FEP-1b12): the author must be a
/// member and not banned, and the channel must exist (a reply goes to its
/// parent's channel; a message naming none to the first channel).
pub fn announce_message(
    server: &ServerState,
    message: &MessageState,
    incoming: Message,
    now: DateTime<Utc>,
) -> Result<Vec<DomainEvent>, ServerError> {
    let created = server.existing()?;
    if message.announced.is_some() {
        return Err(ServerError::AlreadyAnnounced);
    }
    server.admits(
        &incoming.author,
        incoming.member,
        incoming.banned,
        incoming.parent_channel.is_some(),
    )?;
    let channel = match (&incoming.channel, incoming.parent_channel) {
        (Some(named), _) => {
            let slug = channel_of(&created.uris.id, named)
                .ok_or_else(|| ServerError::NoSuchChannel(named.clone()))?;
            server
                .channel(&slug)
                .ok_or_else(|| ServerError::NoSuchChannel(named.clone()))?
                .slug
                .clone()
        }
        (None, Some(parent)) => parent,
        (None, None) => server
            .default_channel()
            .ok_or(ServerError::NoChannels)?
            .slug
            .clone(),
    };
    let key = actor_key(&incoming.post);
    let announce_id = format!("{}/announces/{key}", created.uris.id);
    Ok(vec![
        DomainEvent::ChannelMessageAnnounced(ChannelMessageAnnounced {
            server: created.uris.id.clone(),
            announce: announce(
                created,
                announce_id.clone(),
                without_context(incoming.activity),
            ),
            channel,
            post: incoming.post.clone(),
            author: incoming.author,
            in_reply_to: incoming.in_reply_to,
            announced_at: now,
        }),
        DomainEvent::ChannelMessageShared(ChannelMessageShared {
            server: created.uris.id.clone(),
            announce: announce(
                created,
                format!("{announce_id}/object"),
                Value::String(incoming.post.clone()),
            ),
            post: incoming.post,
        }),
    ])
}

/// Decides announcing `activity` (by `actor`, on a message of the server):
/// an `Update` only by the message's author, anything else (a `Like`) only
/// by a member; nothing from anyone the server banned, nothing once the
/// message is removed. Announced once per activity id: nothing when it was
/// already.
pub fn announce_activity(
    server: &ServerState,
    message: &MessageState,
    actor: &str,
    member: bool,
    banned: bool,
    activity: Value,
) -> Result<Vec<DomainEvent>, ServerError> {
    let created = server.existing()?;
    let announced = message
        .announced
        .as_ref()
        .filter(|_| !message.removed)
        .ok_or(ServerError::UnknownMessage)?;
    let activity_type = activity["type"].as_str().unwrap_or_default().to_owned();
    if activity_type == "Update" {
        if banned {
            return Err(ServerError::Banned(actor.to_owned()));
        }
        if announced.author != actor {
            return Err(ServerError::NotModerator);
        }
    } else {
        server.admits(actor, member, banned, false)?;
    }
    let Some(id) = activity["id"].as_str().map(str::to_owned) else {
        return Ok(vec![]);
    };
    let announce_id = format!(
        "{}/announces/{}/{}",
        created.uris.id,
        actor_key(&announced.post),
        actor_key(&id)
    );
    if message.activities.contains(&announce_id) {
        return Ok(vec![]);
    }
    Ok(vec![DomainEvent::ChannelActivityAnnounced(
        ChannelActivityAnnounced {
            server: created.uris.id.clone(),
            post: announced.post.clone(),
            activity_type,
            actor: actor.to_owned(),
            announce: announce(created, announce_id, without_context(activity)),
        },
    )])
}

/// Decides removing a message: by its author (who deleted it) or by a
/// moderator. `delete` is the `Delete` to announce (the author's own, or
/// one the server makes for a moderator's removal).
pub fn remove_message(
    server: &ServerState,
    message: &MessageState,
    by: &str,
    delete: Option<Value>,
    now: DateTime<Utc>,
) -> Result<Vec<DomainEvent>, ServerError> {
    let created = server.existing()?;
    let announced = message
        .announced
        .as_ref()
        .ok_or(ServerError::UnknownMessage)?;
    if message.removed {
        return Err(ServerError::AlreadyRemoved);
    }
    if announced.author != by && !server.moderates(by) {
        return Err(ServerError::NotModerator);
    }
    let key = actor_key(&announced.post);
    let delete = delete.map(without_context).unwrap_or_else(|| {
        without_context(activitypub::activity(
            &format!("{}/removals/{key}", created.uris.id),
            "Delete",
            &created.uris.id,
            Value::String(announced.post.clone()),
            &[PUBLIC.to_owned()],
            std::slice::from_ref(&created.uris.followers),
        ))
    });
    let shared = announce(
        created,
        format!("{}/announces/{key}/object", created.uris.id),
        Value::String(announced.post.clone()),
    );
    Ok(vec![
        DomainEvent::ChannelMessageRemoved(ChannelMessageRemoved {
            server: created.uris.id.clone(),
            channel: announced.channel.clone(),
            post: announced.post.clone(),
            author: announced.author.clone(),
            by: by.to_owned(),
            announce: announce(
                created,
                format!("{}/announces/{key}/delete", created.uris.id),
                delete,
            ),
            removed_at: now,
        }),
        DomainEvent::ChannelMessageUnshared(ChannelMessageUnshared {
            server: created.uris.id.clone(),
            post: announced.post.clone(),
            undo: activitypub::undo(
                &format!("{}/announces/{key}/object/undo", created.uris.id),
                &created.uris.id,
                shared,
                &[PUBLIC.to_owned()],
                std::slice::from_ref(&created.uris.followers),
            ),
        }),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "https://ex.test";
    const OWNER: &str = "https://ex.test/users/alice";
    const BOB: &str = "https://far.test/users/bob";

    fn slug(s: &str) -> ChannelSlug {
        ChannelSlug::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn server(membership: Membership) -> ServerState {
        let mut state = ServerState::default();
        let events = create(
            &state,
            CreateServer {
                server_id: Uuid::nil(),
                name: Handle::parse("rust").unwrap_or_else(|e| panic!("{e}")),
                display_name: Some(" Rust ".into()),
                description: None,
                membership,
                open_replies: true,
                owner: OWNER.into(),
                channels: vec![],
                public_key_pem: "PEM".into(),
            },
            BASE,
            Utc::now(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        for e in &events {
            state.apply(e);
        }
        state
    }

    fn message(post: &str, channel: Option<&str>) -> Message {
        Message {
            post: post.into(),
            author: BOB.into(),
            in_reply_to: None,
            channel: channel.map(str::to_owned),
            parent_channel: None,
            activity: json!({"@context": "x", "type": "Create", "id": format!("{post}/activity"), "actor": BOB, "object": post}),
            member: true,
            banned: false,
        }
    }

    #[test]
    fn channel_names_are_validated() {
        assert_eq!(slug("#Off-Topic").as_str(), "off-topic");
        assert!(ChannelSlug::parse("").is_err());
        assert!(ChannelSlug::parse("a b").is_err());
        assert!(ChannelSlug::parse(&"x".repeat(41)).is_err());
    }

    #[test]
    fn a_new_server_is_a_group_with_a_general_channel() {
        let state = server(Membership::Open);
        let created = state
            .created
            .clone()
            .unwrap_or_else(|| panic!("not created"));
        assert_eq!(created.uris.id, "https://ex.test/servers/rust");
        assert_eq!(created.uris.inbox, "https://ex.test/servers/rust/inbox");
        assert_eq!(created.display_name.as_deref(), Some("Rust"));
        assert_eq!(
            state.channels,
            vec![Channel {
                slug: slug("general"),
                topic: None
            }]
        );
        assert_eq!(state.role(OWNER, false), Some(Role::Owner));
        assert!(matches!(
            create(
                &state,
                CreateServer {
                    server_id: Uuid::nil(),
                    name: created.name.clone(),
                    display_name: None,
                    description: None,
                    membership: Membership::Open,
                    open_replies: false,
                    owner: OWNER.into(),
                    channels: vec![],
                    public_key_pem: "PEM".into(),
                },
                BASE,
                Utc::now()
            ),
            Err(ServerError::NameTaken(_))
        ));
    }

    #[test]
    fn only_moderators_add_channels_and_only_the_owner_appoints_them() {
        let mut state = server(Membership::Approval);
        let channel = Channel {
            slug: slug("help"),
            topic: Some("questions".into()),
        };
        assert_eq!(
            create_channel(&state, BOB, channel.clone()),
            Err(ServerError::NotModerator)
        );
        assert_eq!(
            set_moderator(&state, BOB, BOB, true, true),
            Err(ServerError::NotOwner)
        );
        assert_eq!(
            set_moderator(&state, OWNER, BOB, false, true),
            Err(ServerError::NotMember(BOB.into()))
        );
        for e in set_moderator(&state, OWNER, BOB, true, true).unwrap_or_default() {
            state.apply(&e);
        }
        assert_eq!(state.role(BOB, true), Some(Role::Moderator));
        for e in create_channel(&state, BOB, channel.clone()).unwrap_or_default() {
            state.apply(&e);
        }
        assert!(state.channel(&slug("help")).is_some());
        assert_eq!(
            create_channel(&state, OWNER, channel),
            Err(ServerError::ChannelExists(slug("help")))
        );
        assert_eq!(
            set_moderator(&state, OWNER, OWNER, true, false),
            Err(ServerError::OwnerRole)
        );
    }

    #[test]
    fn members_messages_are_announced_whole_and_as_objects() {
        let state = server(Membership::Open);
        let events = announce_message(
            &state,
            &MessageState::default(),
            message("https://far.test/notes/1", None),
            Utc::now(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let [
            DomainEvent::ChannelMessageAnnounced(announced),
            DomainEvent::ChannelMessageShared(shared),
        ] = events.as_slice()
        else {
            panic!("{events:?}")
        };
        assert_eq!(announced.channel, slug("general"));
        assert_eq!(announced.announce["type"], "Announce");
        assert_eq!(announced.announce["actor"], "https://ex.test/servers/rust");
        assert_eq!(announced.announce["object"]["type"], "Create");
        assert!(announced.announce["object"].get("@context").is_none());
        assert_eq!(
            announced.announce["cc"][0],
            "https://ex.test/servers/rust/followers"
        );
        assert_eq!(
            announced.announce["audience"],
            "https://ex.test/servers/rust"
        );
        assert_eq!(shared.announce["object"], "https://far.test/notes/1");
        assert_ne!(announced.announce["id"], shared.announce["id"]);
    }

    #[test]
    fn strangers_banned_members_and_unknown_channels_are_refused() {
        let state = server(Membership::Open);
        let none = MessageState::default();
        let mut stranger = message("https://far.test/notes/2", None);
        stranger.member = false;
        assert_eq!(
            announce_message(&state, &none, stranger, Utc::now()),
            Err(ServerError::NotMember(BOB.into()))
        );
        let mut banned = message("https://far.test/notes/3", None);
        banned.banned = true;
        assert_eq!(
            announce_message(&state, &none, banned, Utc::now()),
            Err(ServerError::Banned(BOB.into()))
        );
        let elsewhere = message(
            "https://far.test/notes/4",
            Some("https://ex.test/servers/rust/channels/nope"),
        );
        assert!(matches!(
            announce_message(&state, &none, elsewhere, Utc::now()),
            Err(ServerError::NoSuchChannel(_))
        ));
        let named = message(
            "https://far.test/notes/5",
            Some("https://ex.test/servers/rust/channels/general"),
        );
        assert!(announce_message(&state, &none, named, Utc::now()).is_ok());
    }

    #[test]
    fn strangers_may_reply_to_messages_of_servers_open_to_replies() {
        let open = server(Membership::Open);
        let mut reply = message("https://far.test/notes/7", None);
        reply.member = false;
        reply.in_reply_to = Some("https://far.test/notes/1".into());
        reply.parent_channel = Some(slug("general"));
        assert!(
            announce_message(&open, &MessageState::default(), reply.clone(), Utc::now()).is_ok()
        );
        // Not a reply to one of its messages: a member's post only.
        let mut stray = reply.clone();
        stray.parent_channel = None;
        assert_eq!(
            announce_message(&open, &MessageState::default(), stray, Utc::now()),
            Err(ServerError::NotMember(BOB.into()))
        );
        // A server that asks for approval takes members' replies only.
        let closed = server(Membership::Approval);
        assert_eq!(
            announce_message(&closed, &MessageState::default(), reply, Utc::now()),
            Err(ServerError::NotMember(BOB.into()))
        );
    }

    #[test]
    fn edits_by_the_author_and_likes_are_announced_once() {
        let state = server(Membership::Open);
        let mut message_state = MessageState::default();
        let like = json!({"type": "Like", "id": "https://else.test/likes/1",
                          "actor": "https://else.test/users/eve", "object": "https://far.test/notes/8"});
        assert_eq!(
            announce_activity(
                &state,
                &message_state,
                "https://else.test/users/eve",
                true,
                false,
                like.clone()
            ),
            Err(ServerError::UnknownMessage)
        );
        for e in announce_message(
            &state,
            &message_state,
            message("https://far.test/notes/8", None),
            Utc::now(),
        )
        .unwrap_or_default()
        {
            message_state.apply(&e);
        }
        let events = announce_activity(
            &state,
            &message_state,
            "https://else.test/users/eve",
            true,
            false,
            like.clone(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let [DomainEvent::ChannelActivityAnnounced(announced)] = events.as_slice() else {
            panic!("{events:?}")
        };
        assert_eq!(announced.announce["object"]["type"], "Like");
        for e in &events {
            message_state.apply(e);
        }
        assert_eq!(
            announce_activity(
                &state,
                &message_state,
                "https://else.test/users/eve",
                true,
                false,
                like
            ),
            Ok(vec![])
        );
        let stranger = json!({"type": "Like", "id": "https://else.test/likes/2",
                              "actor": "https://else.test/users/mallory", "object": "https://far.test/notes/8"});
        assert_eq!(
            announce_activity(
                &state,
                &message_state,
                "https://else.test/users/mallory",
                false,
                false,
                stranger
            ),
            Err(ServerError::NotMember(
                "https://else.test/users/mallory".into()
            ))
        );
        let edit = json!({"type": "Update", "id": "https://else.test/updates/1",
                          "actor": "https://else.test/users/eve", "object": "https://far.test/notes/8"});
        assert_eq!(
            announce_activity(
                &state,
                &message_state,
                "https://else.test/users/eve",
                true,
                false,
                edit
            ),
            Err(ServerError::NotModerator)
        );
        let own = json!({"type": "Update", "id": "https://far.test/updates/1",
                         "actor": BOB, "object": "https://far.test/notes/8"});
        assert!(announce_activity(&state, &message_state, BOB, true, false, own.clone()).is_ok());
        assert_eq!(
            announce_activity(&state, &message_state, BOB, true, true, own),
            Err(ServerError::Banned(BOB.into()))
        );
    }

    #[test]
    fn a_message_is_removed_by_its_author_or_a_moderator_once() {
        let state = server(Membership::Open);
        let mut message_state = MessageState::default();
        assert_eq!(
            remove_message(&state, &message_state, OWNER, None, Utc::now()),
            Err(ServerError::UnknownMessage)
        );
        for e in announce_message(
            &state,
            &message_state,
            message("https://far.test/notes/6", None),
            Utc::now(),
        )
        .unwrap_or_default()
        {
            message_state.apply(&e);
        }
        assert_eq!(
            remove_message(
                &state,
                &message_state,
                "https://else.test/users/eve",
                None,
                Utc::now()
            ),
            Err(ServerError::NotModerator)
        );
        let events = remove_message(&state, &message_state, OWNER, None, Utc::now())
            .unwrap_or_else(|e| panic!("{e}"));
        let [
            DomainEvent::ChannelMessageRemoved(removed),
            DomainEvent::ChannelMessageUnshared(unshared),
        ] = events.as_slice()
        else {
            panic!("{events:?}")
        };
        assert_eq!(unshared.undo["type"], "Undo");
        assert_eq!(unshared.undo["object"]["type"], "Announce");
        assert_eq!(
            unshared.undo["object"]["object"],
            "https://far.test/notes/6"
        );
        assert_eq!(removed.announce["object"]["type"], "Delete");
        assert_eq!(
            removed.announce["object"]["actor"],
            "https://ex.test/servers/rust"
        );
        assert_eq!(
            removed.announce["object"]["object"],
            "https://far.test/notes/6"
        );
        for e in &events {
            message_state.apply(e);
        }
        assert_eq!(
            remove_message(&state, &message_state, BOB, None, Utc::now()),
            Err(ServerError::AlreadyRemoved)
        );
    }
}
