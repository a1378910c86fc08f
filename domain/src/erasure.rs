//! Erasure of deleted content: which deletions erase what, which events
//! carry the content of a post or an actor, and how their payloads are
//! redacted.
//!
//! Events are never rewritten, with this one documented exception: once a
//! post or an actor is deleted, the erasure subscriber rewrites the
//! payloads of the events that carry its content, keeping their ids, types,
//! streams, versions and positions, marks them in their metadata
//! ([`REDACTED`]) and records what it did as a [`ContentErased`] event. A
//! redacted payload keeps its schema (every field is still there, the text
//! emptied), so every reader decodes it as before, and a read model rebuilt
//! from the redacted log equals the live one: the deletion that follows
//! the redacted events clears the same fields.

use crate::actors::actor_key;
use crate::{DomainEvent, EventId, Metadata, StreamId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

/// The metadata key of a redacted event: a [`Redaction`].
pub const REDACTED: &str = "redacted";

/// Why a redacted received activity is not interpreted again.
pub const ERASED_REASON: &str = "erased: the content of this activity was erased after a deletion";

/// What a deletion erases: a post, or an actor with every post of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErasedKind {
    Post,
    Actor,
}

/// The metadata of a redacted event (under [`REDACTED`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redaction {
    /// The [`ContentErased`] event that recorded the redaction.
    pub by: EventId,
    pub at: DateTime<Utc>,
}

/// The content of a deleted post or actor was erased from the log and from
/// the tables that held copies of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentErased {
    /// The deleted post's or actor's ActivityPub id.
    pub subject: String,
    pub kind: ErasedKind,
    /// The event that deleted it (`PostDeleted`, `RemotePostDeleted`,
    /// `RemoteActorDeleted` or `ActorDeleted`).
    pub deletion: EventId,
    /// For an actor: the posts of it whose content was erased with it.
    pub posts: Vec<String>,
    /// The events whose payloads were redacted.
    pub redacted: Vec<EventId>,
    pub erased_at: DateTime<Utc>,
}

/// The stream of the erasures of a post or an actor.
pub fn erased_stream(subject: &str) -> StreamId {
    StreamId::composed(format!("erased-{}", actor_key(subject)))
}

/// The id of the [`ContentErased`] caused by `cause` (a deletion, or an
/// event that arrived after it carrying erased content): erasing again
/// appends nothing twice.
pub fn erased_event_id(cause: EventId) -> EventId {
    EventId::derived(cause, "erased")
}

/// What `event` deletes, if it is a deletion whose content must be erased.
pub fn deletion(event: &DomainEvent) -> Option<(ErasedKind, &str)> {
    match event {
        DomainEvent::PostDeleted(e) => Some((ErasedKind::Post, &e.uri)),
        DomainEvent::RemotePostDeleted(e) => Some((ErasedKind::Post, &e.uri)),
        DomainEvent::RemoteActorDeleted(e) => Some((ErasedKind::Actor, &e.uri)),
        DomainEvent::ActorDeleted(e) => Some((ErasedKind::Actor, &e.uri)),
        _ => None,
    }
}

/// The posts and actors (by ActivityPub id) whose content `event` carries:
/// a post's text is in its creation and edits (held by the post and by its
/// author), an actor's profile in its registration or updates, and a
/// received activity carries whatever its actor sent, and the content of
/// its object when the object is inline (a Create, an Update, an Announce
/// with the post embedded). A remote actor's follow, block, favorite or
/// reblog keeps the activity it received, which may embed its object too
/// (an Announce with the post inline).
pub fn subjects(event: &DomainEvent) -> Vec<&str> {
    let mut subjects: Vec<&str> = match event {
        DomainEvent::ActorRegistered(e) => vec![&e.uris.id],
        DomainEvent::PostCreated(e) => vec![&e.uri, &e.author],
        DomainEvent::PostEdited(e) => vec![&e.uri, &e.author],
        DomainEvent::RemotePostCreated(e) => vec![&e.uri, &e.author],
        DomainEvent::RemotePostEdited(e) => vec![&e.uri, &e.author],
        DomainEvent::RemoteActorUpdated(e) => vec![&e.uri],
        DomainEvent::FollowRequested(e) => embedded(&e.activity),
        DomainEvent::Unfollowed(e) => embedded(&e.activity),
        DomainEvent::Blocked(e) => embedded(&e.activity),
        DomainEvent::Unblocked(e) => embedded(&e.activity),
        DomainEvent::Favorited(e) => embedded(&e.activity),
        DomainEvent::Unfavorited(e) => embedded(&e.activity),
        DomainEvent::Reblogged(e) => embedded(&e.activity),
        DomainEvent::Unreblogged(e) => embedded(&e.activity),
        DomainEvent::ActivityReceived(e) => {
            let mut subjects = vec![e.actor.as_str()];
            if let Some(object) = &e.object
                && object_inline(&e.raw)
            {
                subjects.push(object);
            }
            subjects
        }
        _ => Vec::new(),
    };
    subjects.dedup();
    subjects
}

/// The types whose `activity` may be a received one, embedding its object.
const EMBEDDING: &[&str] = &[
    "FollowRequested",
    "Unfollowed",
    "Blocked",
    "Unblocked",
    "Favorited",
    "Unfavorited",
    "Reblogged",
    "Unreblogged",
];

/// The ids of the objects an activity embeds (not activities: the object
/// of an embedded activity, as in Undo{Announce{Note}}).
fn embedded(activity: &Value) -> Vec<&str> {
    match activity.get("object") {
        Some(object @ Value::Object(fields)) if fields.contains_key("object") => embedded(object),
        Some(Value::Object(fields)) => fields
            .get("id")
            .and_then(Value::as_str)
            .into_iter()
            .collect(),
        _ => Vec::new(),
    }
}

/// Replaces the objects an activity embeds (see [`embedded`]) by their ids.
fn unembed(activity: &mut Value) {
    let Some(object) = activity.get_mut("object") else {
        return;
    };
    if object.get("object").is_some() {
        return unembed(object);
    }
    if let Some(id) = object.get("id").filter(|_| object.is_object()).cloned() {
        *object = id;
    }
}

/// Whether an activity's `object` is embedded (anything but a bare id).
fn object_inline(raw: &str) -> bool {
    #[derive(Deserialize)]
    struct Object<'a> {
        #[serde(borrow, default)]
        object: Option<&'a RawValue>,
    }
    serde_json::from_str::<Object<'_>>(raw)
        .ok()
        .and_then(|o| o.object)
        .is_some_and(|object| !object.get().trim_start().starts_with('"'))
}

/// Whether an event's payload was redacted.
pub fn is_redacted(metadata: &Metadata) -> bool {
    metadata.extra.contains_key(REDACTED)
}

/// The payload of an event of `event_type` with its content erased, or
/// `None` for types that carry no content. Fields are kept (emptied), so
/// the result decodes as the type's schema says; redacting twice gives the
/// same payload.
pub fn redact(event_type: &str, payload: &Value) -> Option<Value> {
    let mut payload = payload.clone();
    let fields = payload.as_object_mut()?;
    match event_type {
        "ActorRegistered" => {
            fields.insert("display_name".into(), Value::Null);
        }
        "PostCreated" | "PostEdited" => {
            fields.insert("content".into(), json!(""));
            fields.insert("source".into(), json!(""));
            fields.insert("summary".into(), Value::Null);
            fields.insert("hashtags".into(), json!([]));
            if let Some(activity) = fields.get_mut("activity") {
                redact_activity(activity);
            }
        }
        "RemotePostCreated" | "RemotePostEdited" => {
            fields.insert("content".into(), json!(""));
            fields.insert("summary".into(), Value::Null);
            fields.insert("hashtags".into(), json!([]));
            fields.insert("attachments".into(), json!([]));
        }
        "RemoteActorUpdated" => {
            for field in ["display_name", "summary", "icon"] {
                fields.insert(field.into(), Value::Null);
            }
        }
        "ActivityReceived" => {
            let raw = redacted_raw(fields);
            fields.insert("raw".into(), Value::String(raw));
        }
        _ if EMBEDDING.contains(&event_type) => {
            if let Some(activity) = fields.get_mut("activity") {
                unembed(activity);
            }
        }
        _ => return None,
    }
    Some(payload)
}

/// A local post's activity (Create or Update) with its Note's text erased.
/// The delivery queue's copy of the activity is redacted the same way.
pub fn redact_activity(activity: &mut Value) {
    let Some(object) = activity.get_mut("object").and_then(Value::as_object_mut) else {
        return;
    };
    for field in ["contentMap", "summaryMap", "name", "nameMap", "source"] {
        object.remove(field);
    }
    if object.contains_key("content") {
        object.insert("content".into(), json!(""));
    }
    if object.contains_key("summary") {
        object.insert("summary".into(), Value::Null);
    }
    if object.contains_key("attachment") {
        object.insert("attachment".into(), json!([]));
    }
    // Mentions name actors; hashtags are words of the text.
    if let Some(Value::Array(tags)) = object.get_mut("tag") {
        tags.retain(|tag| tag.get("type").and_then(Value::as_str) == Some("Mention"));
    }
}

/// What is left of a received activity's body: its id, type, actor and
/// object id (all in the event's other fields too), nothing it said.
fn redacted_raw(fields: &Map<String, Value>) -> String {
    let mut raw = Map::new();
    for (from, to) in [
        ("activity_id", "id"),
        ("activity_type", "type"),
        ("actor", "actor"),
        ("object", "object"),
    ] {
        if let Some(value) = fields.get(from).filter(|v| !v.is_null()) {
            raw.insert(to.into(), value.clone());
        }
    }
    Value::Object(raw).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EVENT_TYPES;
    use crate::{NewEvent, Payload, Position, RecordedEvent};
    use uuid::Uuid;

    const SECRET: &str = "zebracadabra";

    fn recorded(event: &DomainEvent, payload: Value) -> RecordedEvent {
        RecordedEvent {
            id: EventId::new(),
            stream_id: StreamId::composed("s-1".into()),
            stream_version: 1,
            event_type: event.event_type().into(),
            schema_version: event.schema_version(),
            payload: Payload::from_store(payload.to_string()),
            metadata: Metadata::default(),
            recorded_at: Utc::now(),
            position: Position::START,
        }
    }

    fn payload(event: &DomainEvent) -> Value {
        let NewEvent { payload, .. } = event.to_new_event().unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_str(payload.get()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Redacts `event`: nothing of the secret is left, the payload still
    /// decodes as its type, and redacting again changes nothing.
    fn check(event: DomainEvent) -> DomainEvent {
        let before = payload(&event);
        assert!(before.to_string().contains(SECRET), "{before}");
        let after = redact(event.event_type(), &before)
            .unwrap_or_else(|| panic!("{} carries content", event.event_type()));
        assert!(!after.to_string().contains(SECRET), "{after}");
        assert_eq!(redact(event.event_type(), &after), Some(after.clone()));
        DomainEvent::from_recorded(&recorded(&event, after))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("a known type"))
    }

    fn local_post() -> crate::posts::PostCreated {
        let author = crate::posts::Author {
            uri: "https://a.test/users/alice".into(),
            followers: "https://a.test/users/alice/followers".into(),
        };
        let command = crate::posts::CreatePost {
            post_id: Uuid::nil(),
            text: format!("#{SECRET} hello @bob {SECRET}"),
            summary: Some(format!("cw {SECRET}")),
            sensitive: false,
            visibility: crate::posts::Visibility::Public,
            mentions: vec![crate::posts::Mention {
                acct: "bob".into(),
                uri: "https://a.test/users/bob".into(),
                url: None,
            }],
            audience: None,
        };
        match crate::posts::create(&author, command, None, "https://a.test", Utc::now()).as_deref()
        {
            Ok([DomainEvent::PostCreated(post)]) => post.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_local_post_keeps_its_addressing_and_mentions_and_loses_its_text() {
        let post = local_post();
        let DomainEvent::PostCreated(redacted) = check(DomainEvent::PostCreated(post.clone()))
        else {
            panic!("same type")
        };
        assert_eq!(redacted.content, "");
        assert_eq!(redacted.source, "");
        assert_eq!(redacted.summary, None);
        assert!(redacted.hashtags.is_empty());
        assert_eq!(redacted.mentions, post.mentions);
        assert_eq!(redacted.to, post.to);
        assert_eq!(redacted.activity["object"]["content"], "");
        let tags = redacted.activity["object"]["tag"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(tags.len(), 1, "{tags:?}");
        assert_eq!(tags[0]["type"], "Mention");
        assert_eq!(redacted.activity["id"], post.activity["id"]);

        let mut state = crate::posts::PostState::default();
        state.apply(&DomainEvent::PostCreated(post));
        let edit = crate::posts::EditPost {
            text: format!("edited {SECRET}"),
            summary: None,
            sensitive: false,
            mentions: vec![],
        };
        let edited = crate::posts::edit(
            &state,
            "https://a.test/users/alice",
            edit,
            "https://a.test",
            Utc::now(),
        )
        .unwrap_or_default();
        for event in edited {
            check(event);
        }
    }

    #[test]
    fn remote_posts_actors_and_received_activities_lose_their_text() {
        let at = Utc::now();
        let attachment = crate::remote::RemoteAttachment {
            url: "https://r.test/media/1.png".into(),
            media_type: Some("image/png".into()),
            name: Some(format!("alt {SECRET}")),
        };
        check(DomainEvent::RemotePostCreated(
            crate::remote::RemotePostCreated {
                uri: "https://r.test/notes/1".into(),
                kind: "Note".into(),
                author: "https://r.test/users/bob".into(),
                content: format!("<p>{SECRET}</p>"),
                summary: Some(SECRET.into()),
                sensitive: true,
                visibility: crate::posts::Visibility::Public,
                in_reply_to: None,
                mentions: vec![],
                hashtags: vec![SECRET.into()],
                to: vec![],
                cc: vec![],
                url: None,
                attachments: vec![attachment.clone()],
                published: at,
            },
        ));
        check(DomainEvent::RemotePostEdited(
            crate::remote::RemotePostEdited {
                uri: "https://r.test/notes/1".into(),
                author: "https://r.test/users/bob".into(),
                content: format!("<p>{SECRET}</p>"),
                summary: None,
                sensitive: false,
                mentions: vec![],
                hashtags: vec![],
                attachments: vec![attachment],
                updated: at,
            },
        ));
        check(DomainEvent::RemoteActorUpdated(
            crate::remote::RemoteActorUpdated {
                uri: "https://r.test/users/bob".into(),
                kind: "Person".into(),
                handle: "bob".into(),
                domain: "r.test".into(),
                display_name: Some(format!("Bob {SECRET}")),
                summary: Some(format!("<p>{SECRET}</p>")),
                inbox: "https://r.test/users/bob/inbox".into(),
                shared_inbox: None,
                outbox: None,
                followers: None,
                following: None,
                url: None,
                icon: Some(format!("https://r.test/{SECRET}.png")),
                locked: false,
                key_id: None,
                public_key_pem: None,
                updated_at: at,
            },
        ));
        let raw = json!({
            "id": "https://r.test/notes/1/activity",
            "type": "Create",
            "actor": "https://r.test/users/bob",
            "object": { "id": "https://r.test/notes/1", "type": "Note", "content": SECRET },
        });
        let DomainEvent::ActivityReceived(received) = check(DomainEvent::ActivityReceived(
            crate::remote::ActivityReceived {
                activity_id: "https://r.test/notes/1/activity".into(),
                activity_type: "Create".into(),
                actor: "https://r.test/users/bob".into(),
                object: Some("https://r.test/notes/1".into()),
                inbox: "https://a.test/inbox".into(),
                raw: raw.to_string(),
            },
        )) else {
            panic!("same type")
        };
        let raw: Value = serde_json::from_str(&received.raw).unwrap_or_default();
        assert_eq!(
            raw,
            json!({
                "id": "https://r.test/notes/1/activity",
                "type": "Create",
                "actor": "https://r.test/users/bob",
                "object": "https://r.test/notes/1",
            })
        );
    }

    #[test]
    fn a_received_reblog_keeps_the_id_of_the_post_it_embedded() {
        let announce = |object: Value| {
            json!({
                "id": "https://r.test/announces/1",
                "type": "Announce",
                "actor": "https://r.test/users/dave",
                "object": object,
            })
        };
        let note = json!({ "id": "https://c.test/notes/9", "type": "Note", "content": SECRET });
        let reblog = |activity: Value| {
            DomainEvent::Reblogged(crate::interactions::Reblogged {
                actor: "https://r.test/users/dave".into(),
                post: "https://c.test/notes/9".into(),
                post_author: "https://c.test/users/carl".into(),
                announce_id: "https://r.test/announces/1".into(),
                published: Utc::now(),
                activity,
            })
        };
        let inline = reblog(announce(note.clone()));
        assert_eq!(subjects(&inline), ["https://c.test/notes/9"]);
        let DomainEvent::Reblogged(redacted) = check(inline) else {
            panic!("same type")
        };
        assert_eq!(redacted.activity["object"], "https://c.test/notes/9");
        // An Undo of it embeds it one level deeper.
        let undo = DomainEvent::Unreblogged(crate::interactions::Unreblogged {
            actor: "https://r.test/users/dave".into(),
            post: "https://c.test/notes/9".into(),
            post_author: "https://c.test/users/carl".into(),
            announce_id: "https://r.test/announces/1".into(),
            activity: json!({ "type": "Undo", "object": announce(note) }),
        });
        assert_eq!(subjects(&undo), ["https://c.test/notes/9"]);
        let DomainEvent::Unreblogged(redacted) = check(undo) else {
            panic!("same type")
        };
        assert_eq!(
            redacted.activity["object"]["object"],
            "https://c.test/notes/9"
        );
        let by_id = reblog(announce(json!("https://c.test/notes/9")));
        assert!(subjects(&by_id).is_empty());
    }

    #[test]
    fn events_without_content_are_not_redacted() {
        for (event_type, _) in EVENT_TYPES {
            let carries = EMBEDDING.contains(event_type)
                || matches!(
                    *event_type,
                    "ActorRegistered"
                        | "PostCreated"
                        | "PostEdited"
                        | "RemotePostCreated"
                        | "RemotePostEdited"
                        | "RemoteActorUpdated"
                        | "ActivityReceived"
                );
            assert_eq!(
                redact(event_type, &json!({})).is_some(),
                carries,
                "{event_type}"
            );
        }
    }

    #[test]
    fn posts_are_held_by_themselves_and_their_authors_and_inline_objects_by_their_ids() {
        let post = local_post();
        assert_eq!(
            subjects(&DomainEvent::PostCreated(post.clone())),
            [post.uri.as_str(), post.author.as_str()]
        );
        let received = |raw: Value| {
            DomainEvent::ActivityReceived(crate::remote::ActivityReceived {
                activity_id: "https://r.test/a/1".into(),
                activity_type: "Announce".into(),
                actor: "https://r.test/users/bob".into(),
                object: Some("https://c.test/notes/9".into()),
                inbox: "https://a.test/inbox".into(),
                raw: raw.to_string(),
            })
        };
        let by_id = received(json!({ "type": "Announce", "object": "https://c.test/notes/9" }));
        assert_eq!(subjects(&by_id), ["https://r.test/users/bob"]);
        let inline = received(json!({
            "type": "Announce",
            "object": { "id": "https://c.test/notes/9", "content": "hi" },
        }));
        assert_eq!(
            subjects(&inline),
            ["https://r.test/users/bob", "https://c.test/notes/9"]
        );
    }
}
