//! The command side: local actions decided against the current state of
//! their streams and appended to the log.
//!
//! Each command loads the stream(s) it needs, folds them, calls a pure
//! decision from `chorus_domain`, and appends the resulting events at the
//! stream version it read. If another writer got there first, it loads and
//! decides again.

mod accounts;
mod actions;
mod instances;
mod servers;

use std::sync::Arc;

use chorus_domain::actors::{self, ActorRegistered, ActorState, Handle};
use chorus_domain::instances::{InstanceError, InstanceState};
use chorus_domain::interactions::{InteractionError, InteractionState};
use chorus_domain::posts::{PostError, PostState};
use chorus_domain::relationships::{RelationshipError, RelationshipState};
use chorus_domain::remote::{RemoteActorState, RemotePostState};
use chorus_domain::servers::{MessageState, ServerState};
use chorus_domain::{
    AppendOutcome, DomainEvent, EventId, EventStore, EventStoreError, ExpectedVersion, Metadata,
    NewEvent, Position, StreamId,
};
use chorus_postgres::PgEventStore;
use sqlx::PgPool;
use uuid::Uuid;

use crate::federation::Federation;
use crate::federation::directory::{Directory, DirectoryError};

pub use accounts::NewAccount;
pub use actions::{KnownActor, PostInput, Target};
pub use instances::BlockedInstance;
pub use servers::{MemberAction, NewServer, ServerInput, ServerMember};

/// Why a command was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Handle(#[from] actors::HandleError),
    #[error("{0}")]
    Actor(#[from] actors::ActorError),
    #[error("{0}")]
    Post(#[from] PostError),
    #[error("{0}")]
    Relationship(#[from] RelationshipError),
    #[error("{0}")]
    Interaction(#[from] InteractionError),
    #[error("{0}")]
    Instance(#[from] InstanceError),
    #[error("{0}")]
    Server(#[from] chorus_domain::servers::ServerError),
    #[error("only admins may do this")]
    Forbidden,
    #[error("no such {what}: {id}")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    Invalid(String),
    #[error("the state changed under this command too many times; try again")]
    Contended,
    #[error("event store failure")]
    Store(#[source] EventStoreError),
    #[error("database failure")]
    Database(#[from] sqlx::Error),
    #[error("could not generate keys")]
    Keys(#[from] crate::keys::KeyError),
    #[error("stored event is unreadable")]
    Decode(#[from] chorus_domain::events::DecodeError),
    /// A remote actor could not be found on its server.
    #[error("{0}")]
    Directory(#[from] DirectoryError),
}

impl From<EventStoreError> for AppError {
    fn from(error: EventStoreError) -> Self {
        Self::Store(error)
    }
}

impl AppError {
    /// A stable code for clients.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Handle(_) => "INVALID_HANDLE",
            Self::Actor(e) => e.code(),
            Self::Post(e) => e.code(),
            Self::Relationship(e) => e.code(),
            Self::Interaction(e) => e.code(),
            Self::Instance(e) => e.code(),
            Self::Server(e) => e.code(),
            Self::Forbidden => "FORBIDDEN",
            Self::NotFound { .. } => "NOT_FOUND",
            Self::Invalid(_) => "INVALID_INPUT",
            Self::Contended => "CONFLICT",
            Self::Directory(e) => e.code(),
            Self::Store(_) | Self::Database(_) | Self::Keys(_) | Self::Decode(_) => "INTERNAL",
        }
    }

    /// Whether the cause is on the server's side (5xx), not the caller's.
    pub fn is_internal(&self) -> bool {
        self.code() == "INTERNAL"
    }
}

/// A local actor, as commands need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalActor {
    pub actor_id: Uuid,
    pub handle: Handle,
    pub uri: String,
    pub followers: String,
    pub locked: bool,
    pub admin: bool,
    /// A server (a `Group`), which acts only through its moderators.
    pub group: bool,
}

impl From<&ActorRegistered> for LocalActor {
    fn from(e: &ActorRegistered) -> Self {
        Self {
            actor_id: e.actor_id,
            handle: e.handle.clone(),
            uri: e.uris.id.clone(),
            followers: e.uris.followers.clone(),
            locked: e.locked,
            admin: e.admin,
            group: false,
        }
    }
}

impl From<&chorus_domain::servers::ServerCreated> for LocalActor {
    fn from(e: &chorus_domain::servers::ServerCreated) -> Self {
        Self {
            actor_id: e.server_id,
            handle: e.name.clone(),
            uri: e.uris.id.clone(),
            followers: e.uris.followers.clone(),
            locked: e.membership == chorus_domain::servers::Membership::Approval,
            admin: false,
            group: true,
        }
    }
}

/// State folded from a stream's domain events.
pub trait Fold: Default {
    fn fold(&mut self, event: &DomainEvent);
}

macro_rules! fold_via_apply {
    ($($state:ty),*) => {$(
        impl Fold for $state {
            fn fold(&mut self, event: &DomainEvent) {
                self.apply(event);
            }
        }
    )*};
}
fold_via_apply!(
    ActorState,
    PostState,
    RelationshipState,
    InteractionState,
    InstanceState,
    RemotePostState,
    RemoteActorState,
    ServerState,
    MessageState
);

/// How the events of a decision are stamped.
#[derive(Clone, Debug, Default)]
pub struct Stamp {
    /// Copied onto every event.
    pub metadata: Metadata,
    /// For events caused by another (an interpreted activity): their ids are
    /// derived from the cause's, so deciding again appends nothing twice.
    pub cause: Option<EventId>,
}

impl Stamp {
    /// `event` ready to append, with this stamp's metadata; with a cause,
    /// its id is derived from the cause and `name` (unique among the events
    /// of one cause).
    pub fn event(&self, event: &DomainEvent, name: &str) -> Result<NewEvent, AppError> {
        let mut new_event = event
            .to_new_event()
            .map_err(|e| AppError::Invalid(format!("event could not be encoded: {e}")))?
            .with_metadata(self.metadata.clone());
        if let Some(cause) = self.cause {
            new_event.id = EventId::derived(cause, name);
        }
        Ok(new_event)
    }
}

/// How many times a command is decided again after losing a race.
pub(crate) const ATTEMPTS: usize = 5;

/// The command side of Chorus.
#[derive(Clone, Debug)]
pub struct App {
    pub store: PgEventStore,
    pub pool: PgPool,
    /// The public origin, without a final `/`.
    pub base_url: String,
    /// Finds remote actors that are not known yet (WebFinger, fetches);
    /// `None` when federation is not running, and then only actors in the
    /// actors read model can be acted on.
    pub directory: Option<Directory>,
}

impl App {
    pub fn new(store: PgEventStore, base_url: &str) -> Self {
        Self {
            pool: store.pool().clone(),
            store,
            base_url: base_url.trim_end_matches('/').to_owned(),
            directory: None,
        }
    }

    /// The same App, able to find unknown remote actors through `federation`.
    pub fn with_federation(mut self, federation: Arc<Federation>) -> Self {
        self.directory = Some(Directory::new(
            federation,
            self.pool.clone(),
            &self.base_url,
        ));
        self
    }

    /// This server's host (with port, if any): the domain of local `acct:`s.
    pub fn host(&self) -> &str {
        self.base_url.split("://").nth(1).unwrap_or(&self.base_url)
    }

    /// Folds every event of `stream`; also returns its version.
    pub async fn load<S: Fold>(&self, stream: &StreamId) -> Result<(S, u64), AppError> {
        let mut state = S::default();
        let mut version = 0;
        loop {
            let page = self.store.read_stream(stream, version + 1, 1000).await?;
            let Some(last) = page.last() else { break };
            version = last.stream_version;
            for event in &page {
                if let Some(event) = DomainEvent::from_recorded(event)? {
                    state.fold(&event);
                }
            }
        }
        Ok((state, version))
    }

    /// Loads `stream`, decides, and appends the decision at the version read;
    /// decides again if the stream moved in between. Returns the position of
    /// the last event appended (or `None` if the decision was to do nothing).
    pub async fn execute<S, F>(
        &self,
        stream: &StreamId,
        actor: Option<&str>,
        decide: F,
    ) -> Result<Option<Position>, AppError>
    where
        S: Fold,
        F: FnMut(&S) -> Result<Vec<DomainEvent>, AppError>,
    {
        let stamp = Stamp {
            metadata: Metadata {
                actor: actor.map(str::to_owned),
                correlation_id: Some(Uuid::now_v7()),
                ..Metadata::default()
            },
            cause: None,
        };
        self.execute_stamped(stream, &stamp, decide).await
    }

    /// [`App::execute`] with the events' metadata and ids given by `stamp`.
    pub async fn execute_stamped<S, F>(
        &self,
        stream: &StreamId,
        stamp: &Stamp,
        mut decide: F,
    ) -> Result<Option<Position>, AppError>
    where
        S: Fold,
        F: FnMut(&S) -> Result<Vec<DomainEvent>, AppError>,
    {
        for _ in 0..ATTEMPTS {
            let (state, version) = self.load::<S>(stream).await?;
            let events = decide(&state)?;
            if events.is_empty() {
                return Ok(None);
            }
            let expected = if version == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(version)
            };
            let new_events = events
                .iter()
                .enumerate()
                .map(|(i, e)| stamp.event(e, &format!("{stream}#{i}")))
                .collect::<Result<Vec<_>, _>>()?;
            match self.store.append(stream, expected, new_events).await {
                Ok(outcome) => return Ok(last_position(&outcome)),
                Err(EventStoreError::WrongExpectedVersion { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(AppError::Contended)
    }

    /// The local actor with `handle`, from its stream (authoritative, so an
    /// account can act the moment it exists, and not once it is deleted).
    pub async fn local_actor(&self, handle: &Handle) -> Result<Option<LocalActor>, AppError> {
        let (state, _) = self
            .load::<ActorState>(&actors::actor_stream(handle))
            .await?;
        Ok(state
            .live()
            .map(LocalActor::from)
            .or_else(|| state.server.as_ref().map(LocalActor::from)))
    }

    /// The local actor (an account or a server) whose ActivityPub id is `uri`.
    pub async fn local_actor_by_uri(&self, uri: &str) -> Result<Option<LocalActor>, AppError> {
        let Some(rest) = uri.strip_prefix(&self.base_url) else {
            return Ok(None);
        };
        let Some(handle) = rest
            .strip_prefix("/users/")
            .or_else(|| rest.strip_prefix("/servers/"))
        else {
            return Ok(None);
        };
        let Ok(handle) = Handle::parse(handle) else {
            return Ok(None);
        };
        // `/users/{server}` names no one, nor `/servers/{account}`.
        Ok(self.local_actor(&handle).await?.filter(|a| a.uri == uri))
    }

    /// Resolves an actor reference: a handle (`alice`, `@alice`,
    /// `alice@this.host`) or an ActivityPub id of a local actor.
    pub async fn resolve_actor(&self, reference: &str) -> Result<LocalActor, AppError> {
        let not_found = || AppError::NotFound {
            what: "actor",
            id: reference.to_owned(),
        };
        if reference.starts_with("http://") || reference.starts_with("https://") {
            return self
                .local_actor_by_uri(reference)
                .await?
                .ok_or_else(not_found);
        }
        let acct = reference.trim().trim_start_matches('@');
        let handle = match acct.split_once('@') {
            Some((name, host)) if host.eq_ignore_ascii_case(self.host()) => name,
            Some(_) => return Err(not_found()),
            None => acct,
        };
        let handle = Handle::parse(handle).map_err(|_| not_found())?;
        self.local_actor(&handle).await?.ok_or_else(not_found)
    }

    /// A new activity id under this server.
    pub fn activity_id(&self) -> String {
        format!("{}/activities/{}", self.base_url, Uuid::now_v7())
    }
}

fn last_position(outcome: &AppendOutcome) -> Option<Position> {
    outcome.last_position()
}
