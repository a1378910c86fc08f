//! Remote actors and their public keys.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::InboundError;
use super::sanitize::{html_to_text, sanitize_html};
use super::vocab::{
    ACTOR_TYPES, boolean, has_type, host_of, http_id, id_of, known_types, lang_text, link,
    one_or_many, own_id, prop, raw_types, text,
};

/// The kinds of actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ActorKind {
    Person,
    Service,
    Group,
    Application,
    Organization,
}

impl ActorKind {
    /// The kind a type name stands for, if it is an actor type.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "Person" => Self::Person,
            "Service" => Self::Service,
            "Group" => Self::Group,
            "Application" => Self::Application,
            "Organization" => Self::Organization,
            _ => return None,
        })
    }

    /// The ActivityStreams type name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Person => "Person",
            Self::Service => "Service",
            Self::Group => "Group",
            Self::Application => "Application",
            Self::Organization => "Organization",
        }
    }
}

/// A public key an actor signs with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteKey {
    /// The `keyId` signatures name.
    pub id: String,
    /// The actor the key belongs to.
    pub owner: String,
    /// SPKI PEM (`-----BEGIN PUBLIC KEY-----`), as published.
    pub pem: String,
}

/// A remote actor's profile, as read from its document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteActor {
    pub id: String,
    pub kind: ActorKind,
    pub preferred_username: Option<String>,
    /// Plain text display name.
    pub name: Option<String>,
    /// Sanitised HTML.
    pub summary: Option<String>,
    pub inbox: String,
    /// `endpoints.sharedInbox`.
    pub shared_inbox: Option<String>,
    pub outbox: Option<String>,
    pub followers: Option<String>,
    pub following: Option<String>,
    /// The profile page.
    pub url: Option<String>,
    /// The avatar's URL.
    pub icon: Option<String>,
    /// `manuallyApprovesFollowers`: follows wait for approval.
    pub locked: bool,
    /// The first of `public_keys`: the one nearly every server publishes.
    pub public_key: Option<RemoteKey>,
    /// Every key of `publicKey` that the actor owns (Fedify may publish
    /// several; a signature may use any).
    pub public_keys: Vec<RemoteKey>,
}

impl RemoteActor {
    /// The host of the actor's id, with a non-default port.
    pub fn domain(&self) -> Option<String> {
        host_of(&self.id)
    }

    /// The key a signature names by `key_id`, if the actor publishes it.
    pub fn key(&self, key_id: &str) -> Option<&RemoteKey> {
        self.public_keys.iter().find(|k| k.id == key_id)
    }
}

/// Reads an actor document (`Person`, `Service`, `Group`, `Application`,
/// `Organization`).
///
/// Refuses documents without an http(s) `id` or `inbox`: such an actor
/// could neither be addressed nor be told of anything, as Mastodon also
/// judges. Keys whose `owner` is another actor are left out, so a document
/// cannot lend itself someone else's key.
pub fn read_actor(value: &Value) -> Result<RemoteActor, InboundError> {
    if !value.is_object() {
        return Err(InboundError::NotAnObject);
    }
    let raw_id = own_id(value).ok_or(InboundError::MissingId)?;
    let id = http_id(&raw_id).ok_or(InboundError::InvalidId(raw_id))?;
    let kind = known_types(value)
        .iter()
        .find_map(|t| ActorKind::from_name(t))
        .ok_or_else(|| InboundError::NotAnActor(raw_types(value).join(", ")))?;
    let raw_inbox = prop(value, "inbox")
        .and_then(id_of)
        .ok_or(InboundError::MissingInbox)?;
    let inbox = http_id(&raw_inbox).ok_or(InboundError::InvalidInbox(raw_inbox))?;
    let url_of = |name: &str| prop(value, name).and_then(id_of).and_then(|u| http_id(&u));
    let shared_inbox = prop(value, "endpoints")
        .and_then(|e| prop(e, "sharedInbox"))
        .and_then(id_of)
        .and_then(|u| http_id(&u))
        .or_else(|| url_of("sharedInbox"));
    let public_keys: Vec<RemoteKey> = one_or_many(prop(value, "publicKey"))
        .into_iter()
        .filter_map(|k| embedded_key(k, &id))
        .collect();
    Ok(RemoteActor {
        kind,
        preferred_username: text(prop(value, "preferredUsername")).map(|u| u.trim().to_owned()),
        name: lang_text(value, "name")
            .map(|n| html_to_text(&n))
            .filter(|n| !n.is_empty()),
        summary: lang_text(value, "summary")
            .map(|s| sanitize_html(&s))
            .filter(|s| !s.trim().is_empty()),
        inbox,
        shared_inbox,
        outbox: url_of("outbox"),
        followers: url_of("followers"),
        following: url_of("following"),
        url: link(prop(value, "url"), None).map(|(u, _)| u),
        icon: one_or_many(prop(value, "icon"))
            .into_iter()
            .find_map(|i| link(Some(i), None))
            .map(|(u, _)| u),
        locked: boolean(prop(value, "manuallyApprovesFollowers")).unwrap_or(false),
        public_key: public_keys.first().cloned(),
        public_keys,
        id,
    })
}

/// A key embedded in the actor `actor`, if it is one the actor owns. A key
/// that names no owner is the actor's (Fedify and Bridgy omit it).
fn embedded_key(key: &Value, actor: &str) -> Option<RemoteKey> {
    let pem = text(prop(key, "publicKeyPem"))?;
    let id = own_id(key)?;
    let owner = key_owner(key).unwrap_or_else(|| actor.to_owned());
    (owner == actor).then_some(RemoteKey { id, owner, pem })
}

fn key_owner(key: &Value) -> Option<String> {
    prop(key, "owner")
        .or_else(|| prop(key, "controller"))
        .and_then(id_of)
}

/// Reads a key document, as found by dereferencing a signature's `keyId`.
///
/// A standalone key (`CryptographicKey`, or any object with `publicKeyPem`
/// and `owner`) must name its owner, since nothing else ties it to an actor.
/// When the `keyId` resolves to the actor itself (Hubzilla's keys have the
/// actor's id; Mastodon's `#main-key` fragments fetch the actor), the
/// actor's first own key is returned; a caller that must match a particular
/// `keyId` among several reads the actor and asks [`RemoteActor::key`].
pub fn read_key(value: &Value) -> Result<RemoteKey, InboundError> {
    if !value.is_object() {
        return Err(InboundError::NotAnObject);
    }
    if has_type(value, ACTOR_TYPES) {
        let actor = read_actor(value)?;
        return actor.public_key.ok_or(InboundError::MissingPublicKey);
    }
    let pem = text(prop(value, "publicKeyPem")).ok_or(InboundError::NotAKey)?;
    if !pem.trim_start().starts_with("-----BEGIN") {
        return Err(InboundError::InvalidKeyPem);
    }
    let id = own_id(value).ok_or(InboundError::MissingId)?;
    let owner = key_owner(value).ok_or(InboundError::MissingKeyOwner)?;
    let owner = http_id(&owner).ok_or(InboundError::InvalidActor(owner))?;
    Ok(RemoteKey { id, owner, pem })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PEM: &str = "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n";

    #[test]
    fn an_actor_is_read_tolerantly() {
        let actor = read_actor(&json!({
            "id": "https://a.example/users/alice",
            "type": ["Person"],
            "preferredUsername": "alice",
            "name": "<b>Alice</b>",
            "summary": "<p>hi<script>x()</script></p>",
            "inbox": "https://a.example/users/alice/inbox",
            "endpoints": {"sharedInbox": "https://a.example/inbox"},
            "followers": {"type": "OrderedCollection", "id": "https://a.example/users/alice/followers"},
            "icon": [{"type": "Image", "url": "https://a.example/a.png"}],
            "url": {"type": "Link", "href": "https://a.example/@alice"},
            "manuallyApprovesFollowers": "true",
            "publicKey": [
                {"id": "https://a.example/users/alice#main-key", "owner": "https://a.example/users/alice", "publicKeyPem": PEM},
                {"id": "https://evil.example/k", "owner": "https://evil.example/u", "publicKeyPem": PEM}
            ]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(actor.kind, ActorKind::Person);
        assert_eq!(actor.name.as_deref(), Some("Alice"));
        assert_eq!(actor.summary.as_deref(), Some("<p>hi</p>"));
        assert_eq!(
            actor.shared_inbox.as_deref(),
            Some("https://a.example/inbox")
        );
        assert_eq!(
            actor.followers.as_deref(),
            Some("https://a.example/users/alice/followers")
        );
        assert_eq!(actor.icon.as_deref(), Some("https://a.example/a.png"));
        assert_eq!(actor.url.as_deref(), Some("https://a.example/@alice"));
        assert!(actor.locked);
        assert_eq!(actor.public_keys.len(), 1, "a foreign key is left out");
        assert!(
            actor
                .key("https://a.example/users/alice#main-key")
                .is_some()
        );
        assert_eq!(actor.domain().as_deref(), Some("a.example"));
    }

    #[test]
    fn actor_refusals() {
        let check = |value: Value, expected: InboundError| {
            assert_eq!(read_actor(&value), Err(expected));
        };
        check(json!("x"), InboundError::NotAnObject);
        check(
            json!({"type": "Person", "inbox": "https://a.example/i"}),
            InboundError::MissingId,
        );
        check(
            json!({"id": "https://a.example/n", "type": "Note", "inbox": "https://a.example/i"}),
            InboundError::NotAnActor("Note".into()),
        );
        check(
            json!({"id": "https://a.example/u", "type": "Person"}),
            InboundError::MissingInbox,
        );
        check(
            json!({"id": "https://a.example/u", "type": "Person", "inbox": "/inbox"}),
            InboundError::InvalidInbox("/inbox".into()),
        );
    }

    #[test]
    fn keys_are_read_standalone_or_from_their_actor() {
        let key = read_key(&json!({
            "id": "https://a.example/key", "type": "CryptographicKey",
            "owner": "https://a.example/u", "publicKeyPem": PEM
        }));
        assert_eq!(key.map(|k| k.owner), Ok("https://a.example/u".to_owned()));
        let key = read_key(&json!({
            "id": "https://a.example/u", "type": "Person", "inbox": "https://a.example/i",
            "publicKey": {"id": "https://a.example/u#main-key", "owner": "https://a.example/u", "publicKeyPem": PEM}
        }));
        assert_eq!(
            key.map(|k| k.id),
            Ok("https://a.example/u#main-key".to_owned())
        );
        assert_eq!(
            read_key(&json!({"id": "https://a.example/k", "publicKeyPem": PEM})),
            Err(InboundError::MissingKeyOwner)
        );
        assert_eq!(
            read_key(
                &json!({"id": "https://a.example/k", "owner": "https://a.example/u", "publicKeyPem": "x"})
            ),
            Err(InboundError::InvalidKeyPem)
        );
        assert_eq!(
            read_key(&json!({"id": "https://a.example/k"})),
            Err(InboundError::NotAKey)
        );
    }
}
