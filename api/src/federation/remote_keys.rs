//! Remote actors' public keys, for verifying signed requests.
//!
//! A key is looked up in memory, then in the `actors` read model, then
//! fetched from its origin (a signed GET): the key document, and the actor
//! that owns it when the key came as a document of its own. A fetched actor
//! is appended to the log as [`RemoteActorUpdated`], so the read model (and
//! any rebuild of it) learns it the same way as from an Update.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chorus_domain::inbound::{RemoteActor, read_actor, read_key};
use chorus_domain::remote::{RemoteActorUpdated, remote_actor_stream};
use chorus_domain::signatures::{PublicKey, actor_id_from_key_id};
use chorus_domain::{DomainEvent, EventStore, ExpectedVersion, Metadata};
use chorus_postgres::PgEventStore;
use sqlx::PgPool;

use super::fetch::{FetchError, Fetcher};
use super::metrics::InboxMetrics;

/// A verified key and the actor it belongs to.
#[derive(Debug)]
pub struct RemoteKey {
    pub key_id: String,
    /// The actor owning the key (its `owner`, confirmed by the actor's own
    /// document listing the key).
    pub owner: String,
    pub key: PublicKey,
}

/// Why a key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyLookupError {
    #[error("the key {key_id} could not be fetched: {source}")]
    Fetch {
        key_id: String,
        #[source]
        source: FetchError,
    },
    #[error("the key document at {0} is not usable: {1}")]
    Invalid(String, String),
    #[error("{key_id} claims {owner} as its owner, but that actor does not list the key")]
    OwnerDisowns { key_id: String, owner: String },
    #[error("database failure")]
    Database(#[from] sqlx::Error),
    #[error("event store failure")]
    Store(#[from] chorus_domain::EventStoreError),
}

impl KeyLookupError {
    /// Whether the cause is ours (5xx) rather than the remote's.
    pub fn is_internal(&self) -> bool {
        matches!(self, Self::Database(_) | Self::Store(_))
    }
}

/// Finds and caches remote keys.
#[derive(Debug)]
pub struct KeyResolver {
    pool: PgPool,
    store: PgEventStore,
    fetcher: Fetcher,
    cache: RwLock<HashMap<String, Arc<RemoteKey>>>,
    /// When each key was last re-fetched after a failed verification.
    refreshed: std::sync::Mutex<HashMap<String, std::time::Instant>>,
}

/// The shortest time between two re-fetches of one key after failed
/// verifications (a rotated key is picked up; a flood of bad signatures
/// does not turn into a flood of fetches).
const REFRESH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Cached keys beyond this many are dropped wholesale (rare: a server
/// talks to far fewer actors, and the read model keeps them all anyway).
const CACHE_LIMIT: usize = 100_000;

impl KeyResolver {
    pub fn new(pool: PgPool, store: PgEventStore, fetcher: Fetcher) -> Self {
        Self {
            pool,
            store,
            fetcher,
            cache: RwLock::new(HashMap::new()),
            refreshed: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The key `key_id` names, from memory, the read model or its origin.
    pub async fn get(
        &self,
        key_id: &str,
        metrics: &InboxMetrics,
    ) -> Result<Arc<RemoteKey>, KeyLookupError> {
        if let Some(key) = self.cached(key_id) {
            return Ok(key);
        }
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT uri, public_key_pem FROM actors
             WHERE key_id = $1 AND NOT local AND deleted_at IS NULL LIMIT 1",
        )
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await?;
        if let Some((owner, Some(pem))) = row
            && let Ok(key) = PublicKey::from_pem(&pem)
        {
            return Ok(self.remember(RemoteKey {
                key_id: key_id.to_owned(),
                owner,
                key,
            }));
        }
        self.refresh(key_id, metrics).await
    }

    /// Whether `key_id` may be re-fetched now (after a failed verification);
    /// if so, the re-fetch is counted from now.
    pub fn may_refresh(&self, key_id: &str) -> bool {
        let Ok(mut refreshed) = self.refreshed.lock() else {
            return false;
        };
        let now = std::time::Instant::now();
        if refreshed.len() > CACHE_LIMIT {
            refreshed.retain(|_, at| now.duration_since(*at) < REFRESH_INTERVAL);
        }
        match refreshed.get(key_id) {
            Some(at) if now.duration_since(*at) < REFRESH_INTERVAL => false,
            _ => {
                refreshed.insert(key_id.to_owned(), now);
                true
            }
        }
    }

    /// Fetches `key_id` from its origin, bypassing what is known (after a
    /// verification failed with the known key: the actor may have rotated it).
    pub async fn refresh(
        &self,
        key_id: &str,
        metrics: &InboxMetrics,
    ) -> Result<Arc<RemoteKey>, KeyLookupError> {
        metrics.key_fetched();
        let fetched =
            self.fetcher
                .get_activity(key_id)
                .await
                .map_err(|source| KeyLookupError::Fetch {
                    key_id: key_id.to_owned(),
                    source,
                })?;
        // The document is either the actor (with the key embedded; Mastodon's
        // `#main-key` ids fetch the actor) or the key alone, naming its owner.
        let actor = match read_actor(&fetched.document) {
            Ok(actor) => {
                same_origin(key_id, fetched.url.as_str(), &actor.id)?;
                actor
            }
            Err(_) => {
                let key = read_key(&fetched.document)
                    .map_err(|e| KeyLookupError::Invalid(key_id.to_owned(), e.to_string()))?;
                same_origin(key_id, fetched.url.as_str(), &key.owner)?;
                let owner = self
                    .fetcher
                    .get_activity(&key.owner)
                    .await
                    .map_err(|source| KeyLookupError::Fetch {
                        key_id: key_id.to_owned(),
                        source,
                    })?;
                let actor = read_actor(&owner.document)
                    .map_err(|e| KeyLookupError::Invalid(key.owner.clone(), e.to_string()))?;
                same_origin(key_id, owner.url.as_str(), &actor.id)?;
                actor
            }
        };
        // The actor must list the key: a key document alone proves nothing.
        let listed = actor.key(key_id).or_else(|| {
            actor
                .public_key
                .as_ref()
                .filter(|_| actor_id_from_key_id(key_id) == actor.id)
        });
        let Some(listed) = listed else {
            return Err(KeyLookupError::OwnerDisowns {
                key_id: key_id.to_owned(),
                owner: actor.id,
            });
        };
        let key = PublicKey::from_pem(&listed.pem)
            .map_err(|e| KeyLookupError::Invalid(key_id.to_owned(), e.to_string()))?;
        self.record(&actor).await?;
        Ok(self.remember(RemoteKey {
            key_id: key_id.to_owned(),
            owner: actor.id,
            key,
        }))
    }

    /// Appends what was fetched of an actor, so the read model knows it.
    pub async fn record(&self, actor: &RemoteActor) -> Result<(), KeyLookupError> {
        let event = DomainEvent::RemoteActorUpdated(remote_actor_updated(actor));
        let new_event = event
            .to_new_event()
            .map_err(|e| KeyLookupError::Invalid(actor.id.clone(), e.to_string()))?
            .with_metadata(Metadata {
                actor: Some(actor.id.clone()),
                ..Metadata::default()
            });
        self.store
            .append(
                &remote_actor_stream(&actor.id),
                ExpectedVersion::Any,
                vec![new_event],
            )
            .await?;
        Ok(())
    }

    /// Forgets every cached key of `owner` (after an Update or Delete of it).
    pub fn forget_owner(&self, owner: &str) {
        if let Ok(mut cache) = self.cache.write() {
            cache.retain(|_, key| key.owner != owner);
        }
    }

    fn cached(&self, key_id: &str) -> Option<Arc<RemoteKey>> {
        self.cache.read().ok()?.get(key_id).cloned()
    }

    fn remember(&self, key: RemoteKey) -> Arc<RemoteKey> {
        let key = Arc::new(key);
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(key.key_id.clone(), key.clone());
        }
        key
    }
}

/// The event recording a remote actor's profile.
pub fn remote_actor_updated(actor: &RemoteActor) -> RemoteActorUpdated {
    RemoteActorUpdated {
        uri: actor.id.clone(),
        kind: format!("{:?}", actor.kind),
        handle: actor.preferred_username.clone().unwrap_or_default(),
        domain: domain_of(&actor.id),
        display_name: actor.name.clone(),
        summary: actor.summary.clone(),
        inbox: actor.inbox.clone(),
        shared_inbox: actor.shared_inbox.clone(),
        outbox: actor.outbox.clone(),
        followers: actor.followers.clone(),
        following: actor.following.clone(),
        url: actor.url.clone(),
        icon: actor.icon.clone(),
        locked: actor.locked,
        key_id: actor.public_key.as_ref().map(|k| k.id.clone()),
        public_key_pem: actor.public_key.as_ref().map(|k| k.pem.clone()),
        updated_at: chrono::Utc::now(),
    }
}

/// A key, the document it was served as and the actor it names must all
/// be on one server: otherwise any server could claim anyone's identity.
fn same_origin(key_id: &str, served_from: &str, actor: &str) -> Result<(), KeyLookupError> {
    let origin = domain_of(key_id);
    if origin.is_empty() || domain_of(served_from) != origin || domain_of(actor) != origin {
        return Err(KeyLookupError::Invalid(
            key_id.to_owned(),
            format!(
                "the key, the document served ({served_from}) and the actor ({actor}) are not all on one server"
            ),
        ));
    }
    Ok(())
}

/// The host of a URL, with a non-default port (`example.com:8443`); empty
/// for anything but an http(s) URL.
pub fn domain_of(uri: &str) -> String {
    chorus_domain::inbound::host_of(uri).unwrap_or_default()
}
