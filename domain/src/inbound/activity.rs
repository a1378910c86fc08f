//! The envelope of a received activity: who did what to which object.

use std::fmt;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::InboundError;
use super::vocab::{
    ACTOR_TYPES, OBJECT_TYPES, addresses, datetime, host_of, http_id, id_of, ids, known_types,
    one_or_many, own_id, prop, raw_types, text,
};

/// What an activity does: the types the interpreter acts on, and `Other`
/// for every other activity type (of the vocabulary or an extension), which
/// is stored but not acted on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ActivityKind {
    Create,
    Update,
    Delete,
    Follow,
    Accept,
    Reject,
    Like,
    Announce,
    Undo,
    Block,
    /// Pleroma's and Misskey's emoji reaction.
    EmojiReact,
    /// Any other activity type, by its short name (`Move`, `Flag`, `Lock`…).
    Other(String),
}

impl ActivityKind {
    /// The kind a short type name stands for.
    pub fn from_name(name: &str) -> Self {
        match name {
            "Create" => Self::Create,
            "Update" => Self::Update,
            "Delete" => Self::Delete,
            "Follow" => Self::Follow,
            "Accept" => Self::Accept,
            "Reject" => Self::Reject,
            "Like" => Self::Like,
            "Announce" => Self::Announce,
            "Undo" => Self::Undo,
            "Block" => Self::Block,
            "EmojiReact" | "EmojiReaction" => Self::EmojiReact,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The short type name.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Create => "Create",
            Self::Update => "Update",
            Self::Delete => "Delete",
            Self::Follow => "Follow",
            Self::Accept => "Accept",
            Self::Reject => "Reject",
            Self::Like => "Like",
            Self::Announce => "Announce",
            Self::Undo => "Undo",
            Self::Block => "Block",
            Self::EmojiReact => "EmojiReact",
            Self::Other(name) => name,
        }
    }
}

impl fmt::Display for ActivityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `object` (or `target`) of an activity.
#[derive(Clone, Debug, PartialEq)]
pub enum ObjectRef {
    /// Named by its id (a string, or a `Link`'s `href`).
    Id(String),
    /// Embedded. Its `id` (if any) is not checked: see [`ObjectRef::id`].
    Inline(Value),
    /// Absent.
    None,
}

impl ObjectRef {
    /// Reads a property that may be an id, a `Link`, an embedded object or
    /// an array of those (of which the first is taken: only `Flag` sends
    /// several, and it is not acted on).
    fn read(value: Option<&Value>) -> Self {
        let Some(first) = one_or_many(value).into_iter().next() else {
            return Self::None;
        };
        match first {
            Value::Object(_) if is_link(first) => id_of(first).map_or(Self::None, Self::Id),
            Value::Object(_) => Self::Inline(first.clone()),
            other => id_of(other).map_or(Self::None, Self::Id),
        }
    }

    /// The id, as written: the string, or the embedded object's `id`.
    pub fn id(&self) -> Option<&str> {
        match self {
            Self::Id(id) => Some(id),
            Self::Inline(value) => value
                .get("id")
                .or_else(|| value.get("@id"))
                .and_then(Value::as_str),
            Self::None => None,
        }
    }

    /// The embedded object, if any.
    pub fn inline(&self) -> Option<&Value> {
        match self {
            Self::Inline(value) => Some(value),
            _ => None,
        }
    }

    /// The short names of the embedded object's known types (empty for ids).
    pub fn types(&self) -> Vec<String> {
        self.inline().map(known_types).unwrap_or_default()
    }
}

/// A `Link` or `Mention` standing for the object it points to.
fn is_link(value: &Value) -> bool {
    own_id(value).is_none()
        && prop(value, "href").is_some()
        && known_types(value)
            .iter()
            .all(|t| t == "Link" || t == "Mention")
}

/// A received activity's envelope, read tolerantly and checked.
#[derive(Clone, Debug, PartialEq)]
pub struct InboundActivity {
    /// An absolute http(s) URL.
    pub id: String,
    /// What the first known type says the activity does.
    pub kind: ActivityKind,
    /// Every type as written.
    pub types: Vec<String>,
    /// The actor's id (an absolute http(s) URL), also when embedded.
    pub actor: String,
    pub object: ObjectRef,
    pub target: ObjectRef,
    /// The public collection in any spelling is normalised to its full IRI.
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub published: Option<DateTime<Utc>>,
    /// The activity's own `content`: the emoji of an `EmojiReact` or of a
    /// Misskey `Like`.
    pub content: Option<String>,
}

impl InboundActivity {
    /// The host of the actor, with a non-default port.
    pub fn actor_host(&self) -> Option<String> {
        host_of(&self.actor)
    }
}

/// Reads and checks the envelope of a received activity.
///
/// Refused (each with a message fit for an HTTP 400 body): a body that is
/// not a JSON object; no `id`, or one that is not an absolute http(s) URL;
/// no `type`; a type that is neither of ActivityStreams nor a known
/// extension; a type that is not an activity (a `Note` or `Person` posted
/// bare); no `actor`, or one that is not an absolute http(s) URL; an
/// embedded object whose type is not ActivityStreams.
///
/// Unknown properties, `@context` (absent or extended), Misskey's
/// `_misskey_*`, and embedded `signature` (RsaSignature2017) and `proof`
/// are ignored: the raw body is stored as received, so nothing is lost.
pub fn read_activity(value: &Value) -> Result<InboundActivity, InboundError> {
    if !value.is_object() {
        return Err(InboundError::NotAnObject);
    }
    let raw_id = own_id(value).ok_or(InboundError::MissingId)?;
    let id = http_id(&raw_id).ok_or(InboundError::InvalidId(raw_id))?;
    let types = raw_types(value);
    if types.is_empty() {
        return Err(InboundError::MissingType);
    }
    let known = known_types(value);
    let Some(first) = known.first() else {
        return Err(InboundError::UnknownType(types.join(", ")));
    };
    if ACTOR_TYPES.contains(&first.as_str()) || OBJECT_TYPES.contains(&first.as_str()) {
        return Err(InboundError::NotAnActivity(first.clone()));
    }
    let kind = ActivityKind::from_name(first);
    let raw_actor = ids(prop(value, "actor"))
        .into_iter()
        .next()
        .ok_or(InboundError::MissingActor)?;
    let actor = http_id(&raw_actor).ok_or(InboundError::InvalidActor(raw_actor))?;
    let object = ObjectRef::read(prop(value, "object"));
    if let ObjectRef::Inline(inline) = &object {
        let object_types = raw_types(inline);
        if !object_types.is_empty() && known_types(inline).is_empty() {
            return Err(InboundError::UnknownObjectType(object_types.join(", ")));
        }
    }
    Ok(InboundActivity {
        id,
        kind,
        types,
        actor,
        object,
        target: ObjectRef::read(prop(value, "target")),
        to: addresses(prop(value, "to")),
        cc: addresses(prop(value, "cc")),
        published: datetime(prop(value, "published")),
        content: text(prop(value, "content")),
    })
}

/// Whether the object of `activity` comes from where its actor does: the
/// host of the actor, of the object's id and of every `attributedTo` (and
/// embedded `actor`) of an embedded object are one.
///
/// It matters for activities that vouch for an object's content (Create,
/// Update, Delete): an object embedded by a server other than its own may
/// be forged, so the caller must not trust it (Chorus' interpreter refuses
/// it, as Pleroma's and Mastodon's origin containment does). For activities
/// about other actors' objects (Like, Announce, Follow) a mismatch is
/// normal. An activity without an object has nothing to contradict.
pub fn origin_matches(activity: &InboundActivity) -> bool {
    let Some(actor_host) = host_of(&activity.actor) else {
        return false;
    };
    let same = |id: &str| host_of(id).as_deref() == Some(actor_host.as_str());
    match &activity.object {
        ObjectRef::None => true,
        ObjectRef::Id(id) => same(id),
        ObjectRef::Inline(object) => {
            own_id(object).is_none_or(|id| same(&id))
                && ids(prop(object, "attributedTo"))
                    .iter()
                    .chain(&ids(prop(object, "actor")))
                    .all(|a| same(a))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activitypub::PUBLIC;
    use serde_json::json;

    fn read(value: Value) -> InboundActivity {
        read_activity(&value).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_envelope_is_read_tolerantly() {
        let a = read(json!({
            "@id": "https://a.example/activities/1",
            "type": ["as:Like", "https://example.com/Extra"],
            "actor": [{"type": "Person", "id": "https://a.example/users/alice"}],
            "object": {"type": "Link", "href": "https://b.example/notes/1"},
            "to": "Public",
            "cc": [{"id": "https://a.example/users/alice/followers"}],
            "published": "2024-01-02T03:04:05Z",
            "content": "👍",
            "proof": {"type": "DataIntegrityProof"}
        }));
        assert_eq!(a.id, "https://a.example/activities/1");
        assert_eq!(a.kind, ActivityKind::Like);
        assert_eq!(a.types.len(), 2);
        assert_eq!(a.actor, "https://a.example/users/alice");
        assert_eq!(a.object, ObjectRef::Id("https://b.example/notes/1".into()));
        assert_eq!(a.to, vec![PUBLIC.to_owned()]);
        assert_eq!(
            a.cc,
            vec!["https://a.example/users/alice/followers".to_owned()]
        );
        assert!(a.published.is_some());
        assert_eq!(a.content.as_deref(), Some("👍"));
    }

    #[test]
    fn envelope_refusals() {
        let check = |value: Value, expected: InboundError| {
            assert_eq!(read_activity(&value), Err(expected), "{value}");
        };
        let actor = "https://a.example/u";
        check(json!("Create"), InboundError::NotAnObject);
        check(json!(null), InboundError::NotAnObject);
        check(
            json!({"type": "Follow", "actor": actor}),
            InboundError::MissingId,
        );
        check(
            json!({"id": "/activities/1", "type": "Follow", "actor": actor}),
            InboundError::InvalidId("/activities/1".into()),
        );
        check(
            json!({"id": "ftp://a.example/1", "type": "Follow", "actor": actor}),
            InboundError::InvalidId("ftp://a.example/1".into()),
        );
        check(
            json!({"id": "https://a.example/1", "actor": actor}),
            InboundError::MissingType,
        );
        check(
            json!({"id": "https://a.example/1", "type": "https://example.com/", "actor": actor}),
            InboundError::UnknownType("https://example.com/".into()),
        );
        check(
            json!({"id": "https://a.example/1", "type": 7, "actor": actor}),
            InboundError::MissingType,
        );
        check(
            json!({"id": "https://a.example/1", "type": "Note", "attributedTo": actor}),
            InboundError::NotAnActivity("Note".into()),
        );
        check(
            json!({"id": "https://a.example/1", "type": "Follow"}),
            InboundError::MissingActor,
        );
        check(
            json!({"id": "https://a.example/1", "type": "Follow", "actor": "acct:alice@a.example"}),
            InboundError::InvalidActor("acct:alice@a.example".into()),
        );
        check(
            json!({"id": "https://a.example/1", "type": "Create", "actor": actor,
                   "object": {"@type": "https://example.com/"}}),
            InboundError::UnknownObjectType("https://example.com/".into()),
        );
    }

    #[test]
    fn origin_compares_actor_object_and_author_hosts() {
        let create = |object: Value| {
            read(json!({"id": "https://a.example/c/1", "type": "Create",
                        "actor": "https://a.example/u", "object": object}))
        };
        assert!(origin_matches(&create(json!({
            "id": "https://a.example/n/1", "type": "Note", "attributedTo": "https://a.example/u"
        }))));
        assert!(!origin_matches(&create(json!({
            "id": "https://b.example/n/1", "type": "Note", "attributedTo": "https://a.example/u"
        }))));
        assert!(!origin_matches(&create(json!({
            "id": "https://a.example/n/1", "type": "Note", "attributedTo": "https://b.example/u"
        }))));
        assert!(!origin_matches(&create(json!("https://b.example/n/1"))));
        // Ports are part of the origin.
        assert!(!origin_matches(&create(json!(
            "https://a.example:8443/n/1"
        ))));
    }
}
