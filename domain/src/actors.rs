//! Actors: local accounts and the remote actors they interact with.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::StreamId;
use crate::activitypub::{self, PUBLIC};
use crate::events::DomainEvent;

/// A local account's name: the `alice` of `@alice@example.com`.
///
/// 1 to 30 characters from `a-z`, `0-9` and `_`, not starting with `_`.
/// Compared and stored in lower case, so `Alice` and `alice` are the same
/// account; names that collide with Chorus' own paths are reserved.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Handle(String);

/// Why a string is not an acceptable handle.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    #[error("a handle must not be empty")]
    Empty,
    #[error("a handle is at most {max} characters long", max = Handle::MAX_LEN)]
    TooLong,
    #[error("a handle may only contain letters, digits and `_`, not `{0}`")]
    InvalidCharacter(char),
    #[error("a handle must not start with `_`")]
    LeadingUnderscore,
    #[error("`{0}` is reserved")]
    Reserved(String),
}

impl Handle {
    /// The longest handle accepted.
    pub const MAX_LEN: usize = 30;

    /// Names that would shadow Chorus' own routes or impersonate the server.
    pub const RESERVED: &'static [&'static str] = &[
        "activities",
        "actor",
        "admin_api",
        "api",
        "graphql",
        "healthz",
        "inbox",
        "instance",
        "localhost",
        "metrics",
        "nodeinfo",
        "outbox",
        "posts",
        "readyz",
        "relay",
        "root",
        "servers",
        "static",
        "system",
        "tags",
        "users",
        "well_known",
        "webfinger",
    ];

    /// Validates and normalises a handle (a leading `@` is accepted and dropped).
    pub fn parse(input: &str) -> Result<Self, HandleError> {
        let handle = input
            .trim()
            .strip_prefix('@')
            .unwrap_or(input.trim())
            .to_ascii_lowercase();
        if handle.is_empty() {
            return Err(HandleError::Empty);
        }
        if handle.chars().count() > Self::MAX_LEN {
            return Err(HandleError::TooLong);
        }
        if let Some(c) = handle
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
        {
            return Err(HandleError::InvalidCharacter(c));
        }
        if handle.starts_with('_') {
            return Err(HandleError::LeadingUnderscore);
        }
        if Self::RESERVED.contains(&handle.as_str()) {
            return Err(HandleError::Reserved(handle));
        }
        Ok(Self(handle))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

validated_string!(Handle, HandleError);

/// The ActivityPub addresses of a local actor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorUris {
    /// The actor's id, also its profile URL.
    pub id: String,
    pub inbox: String,
    pub outbox: String,
    pub followers: String,
    pub following: String,
    pub shared_inbox: String,
    /// The `keyId` of its public key.
    pub key_id: String,
}

impl ActorUris {
    /// The addresses of local actor `handle` on the server at `base` (an
    /// origin such as `https://example.com`, with or without a final `/`).
    pub fn local(base: &str, handle: &Handle) -> Self {
        Self::under(base, "users", handle)
    }

    /// The addresses of a local actor at `{base}/{collection}/{handle}`.
    pub(crate) fn under(base: &str, collection: &str, handle: &Handle) -> Self {
        let base = base.trim_end_matches('/');
        let id = format!("{base}/{collection}/{handle}");
        Self {
            inbox: format!("{id}/inbox"),
            outbox: format!("{id}/outbox"),
            followers: format!("{id}/followers"),
            following: format!("{id}/following"),
            shared_inbox: format!("{base}/inbox"),
            key_id: format!("{id}#main-key"),
            id,
        }
    }
}

/// The stream of local actor `handle`. Keyed by handle, so that registering a
/// taken handle is a version conflict: handles are unique by construction.
pub fn actor_stream(handle: &Handle) -> StreamId {
    StreamId::composed(format!("actor-{handle}"))
}

/// A stable key for any actor (local or remote) from its ActivityPub id,
/// short enough for stream names.
pub fn actor_key(uri: &str) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, uri.as_bytes())
}

/// A local account came into being.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorRegistered {
    pub actor_id: Uuid,
    pub handle: Handle,
    pub uris: ActorUris,
    pub display_name: Option<String>,
    /// Follow requests wait for approval.
    pub locked: bool,
    pub admin: bool,
    /// PEM (SPKI) public key; the private key never enters the log.
    pub public_key_pem: String,
    pub registered_at: DateTime<Utc>,
}

/// A local account was deleted: it cannot sign in any more, its actor
/// answers as a Tombstone, and its posts, follows, favorites, reblogs and
/// blocks are gone. Its content is then erased from the log too (see
/// [`crate::erasure`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActorDeleted {
    pub actor_id: Uuid,
    pub handle: Handle,
    /// The actor's ActivityPub id.
    pub uri: String,
    pub deleted_at: DateTime<Utc>,
    /// The Delete{Person} to deliver (it stands for the deletion of every
    /// post of the account too, as Mastodon's does).
    pub activity: Value,
}

/// Create a local account.
#[derive(Clone, Debug)]
pub struct RegisterActor {
    pub actor_id: Uuid,
    pub handle: Handle,
    pub display_name: Option<String>,
    pub locked: bool,
    pub admin: bool,
    pub public_key_pem: String,
}

/// Why an actor command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ActorError {
    #[error("the handle `{0}` is taken")]
    HandleTaken(Handle),
    #[error("a display name is at most {max} characters", max = MAX_DISPLAY_NAME)]
    DisplayNameTooLong,
    #[error("no such account")]
    NotFound,
    #[error("the account was deleted")]
    Deleted,
}

impl ActorError {
    /// A stable code for clients.
    pub fn code(&self) -> &'static str {
        match self {
            Self::HandleTaken(_) => "HANDLE_TAKEN",
            Self::DisplayNameTooLong => "DISPLAY_NAME_TOO_LONG",
            Self::NotFound => "NOT_FOUND",
            Self::Deleted => "DELETED",
        }
    }
}

/// The longest display name accepted.
pub const MAX_DISPLAY_NAME: usize = 100;

/// What the actor stream says so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ActorState {
    pub registered: Option<ActorRegistered>,
    /// When the account was deleted, if it was. A deleted account keeps its
    /// handle: it is never registered again.
    pub deleted: Option<DateTime<Utc>>,
    /// The handle names a server (see [`crate::servers`]): taken too.
    pub server: Option<crate::servers::ServerCreated>,
}

impl ActorState {
    pub fn apply(&mut self, event: &DomainEvent) {
        match event {
            DomainEvent::ActorRegistered(e) => self.registered = Some(e.clone()),
            DomainEvent::ServerCreated(e) => self.server = Some(e.clone()),
            DomainEvent::ActorDeleted(e) => self.deleted = Some(e.deleted_at),
            _ => {}
        }
    }

    /// The account, if it exists and is not deleted.
    pub fn live(&self) -> Option<&ActorRegistered> {
        self.registered.as_ref().filter(|_| self.deleted.is_none())
    }
}

/// Decides a registration: refused if the handle's stream already exists.
pub fn register(
    state: &ActorState,
    command: RegisterActor,
    base: &str,
    now: DateTime<Utc>,
) -> Result<Vec<DomainEvent>, ActorError> {
    if state.registered.is_some() || state.server.is_some() {
        return Err(ActorError::HandleTaken(command.handle));
    }
    let display_name = command
        .display_name
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    if display_name
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_DISPLAY_NAME)
    {
        return Err(ActorError::DisplayNameTooLong);
    }
    Ok(vec![DomainEvent::ActorRegistered(ActorRegistered {
        actor_id: command.actor_id,
        uris: ActorUris::local(base, &command.handle),
        handle: command.handle,
        display_name,
        locked: command.locked,
        admin: command.admin,
        public_key_pem: command.public_key_pem,
        registered_at: now,
    })])
}

/// Decides the deletion of a local account: a `Delete` of the actor by
/// itself, addressed to the public collection, as Mastodon sends it (the
/// delivery planner sends it to every server Chorus knows).
pub fn delete(state: &ActorState, now: DateTime<Utc>) -> Result<Vec<DomainEvent>, ActorError> {
    let registered = state.registered.as_ref().ok_or(ActorError::NotFound)?;
    if state.deleted.is_some() {
        return Err(ActorError::Deleted);
    }
    let uri = &registered.uris.id;
    let activity = activitypub::activity(
        &format!("{uri}#delete"),
        "Delete",
        uri,
        Value::String(uri.clone()),
        &[PUBLIC.to_owned()],
        &[],
    );
    Ok(vec![DomainEvent::ActorDeleted(ActorDeleted {
        actor_id: registered.actor_id,
        handle: registered.handle.clone(),
        uri: uri.clone(),
        deleted_at: now,
        activity,
    })])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, HandleError>) {
        assert_eq!(
            Handle::parse(input).map(|h| h.0),
            expected.map(str::to_owned),
            "{input:?}"
        );
    }

    #[test]
    fn handles_are_validated_and_normalised() {
        check("alice", Ok("alice"));
        check("@Alice_2", Ok("alice_2"));
        check("", Err(HandleError::Empty));
        check("@", Err(HandleError::Empty));
        check(&"a".repeat(31), Err(HandleError::TooLong));
        check("al ice", Err(HandleError::InvalidCharacter(' ')));
        check("alice@example.com", Err(HandleError::InvalidCharacter('@')));
        check("ali.ce", Err(HandleError::InvalidCharacter('.')));
        check("_alice", Err(HandleError::LeadingUnderscore));
        check("inbox", Err(HandleError::Reserved("inbox".into())));
        check("GraphQL", Err(HandleError::Reserved("graphql".into())));
    }

    fn command(handle: &str) -> RegisterActor {
        RegisterActor {
            actor_id: Uuid::nil(),
            handle: Handle::parse(handle).unwrap_or_else(|e| panic!("{e}")),
            display_name: Some("  Alice  ".into()),
            locked: false,
            admin: false,
            public_key_pem: "PEM".into(),
        }
    }

    #[test]
    fn registering_a_new_handle_derives_its_addresses() {
        let events = register(
            &ActorState::default(),
            command("alice"),
            "https://ex.test/",
            Utc::now(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let [DomainEvent::ActorRegistered(e)] = events.as_slice() else {
            panic!("{events:?}")
        };
        assert_eq!(e.uris.id, "https://ex.test/users/alice");
        assert_eq!(e.uris.inbox, "https://ex.test/users/alice/inbox");
        assert_eq!(e.uris.shared_inbox, "https://ex.test/inbox");
        assert_eq!(e.uris.key_id, "https://ex.test/users/alice#main-key");
        assert_eq!(e.display_name.as_deref(), Some("Alice"));
    }

    #[test]
    fn a_taken_handle_is_refused() {
        let mut state = ActorState::default();
        for e in
            register(&state, command("alice"), "https://ex.test", Utc::now()).unwrap_or_default()
        {
            state.apply(&e);
        }
        assert_eq!(
            register(&state, command("alice"), "https://ex.test", Utc::now()),
            Err(ActorError::HandleTaken(
                Handle::parse("alice").unwrap_or_else(|e| panic!("{e}"))
            ))
        );
    }

    #[test]
    fn a_deleted_account_is_gone_once_and_its_handle_stays_taken() {
        let mut state = ActorState::default();
        assert_eq!(delete(&state, Utc::now()), Err(ActorError::NotFound));
        for e in
            register(&state, command("alice"), "https://ex.test", Utc::now()).unwrap_or_default()
        {
            state.apply(&e);
        }
        let events = delete(&state, Utc::now()).unwrap_or_else(|e| panic!("{e}"));
        let [DomainEvent::ActorDeleted(deleted)] = events.as_slice() else {
            panic!("{events:?}")
        };
        assert_eq!(deleted.uri, "https://ex.test/users/alice");
        assert_eq!(deleted.activity["type"], "Delete");
        assert_eq!(deleted.activity["id"], "https://ex.test/users/alice#delete");
        assert_eq!(deleted.activity["object"], "https://ex.test/users/alice");
        assert_eq!(deleted.activity["actor"], "https://ex.test/users/alice");
        assert_eq!(deleted.activity["to"][0], PUBLIC);
        for e in &events {
            state.apply(e);
        }
        assert!(state.live().is_none());
        assert_eq!(delete(&state, Utc::now()), Err(ActorError::Deleted));
        assert!(matches!(
            register(&state, command("alice"), "https://ex.test", Utc::now()),
            Err(ActorError::HandleTaken(_))
        ));
    }

    #[test]
    fn overlong_display_names_are_refused() {
        let mut c = command("bob");
        c.display_name = Some("x".repeat(101));
        assert_eq!(
            register(&ActorState::default(), c, "https://ex.test", Utc::now()),
            Err(ActorError::DisplayNameTooLong)
        );
    }
}
