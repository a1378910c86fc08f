//! Which events carry an activity to deliver, and to whom.
//!
//! Every local action's event holds the activity it decided (`activity`).
//! Delivery sends it to the activity's audience (`to`, `cc`, `bto`, `bcc`)
//! and to whoever the action concerns even when the audience leaves them out
//! (the author of a liked or reblogged post, the target of a follow or a
//! block). Events of remote activities hold the remote actor's activity and
//! are never delivered: [`outbound`] is asked only about local actors' events
//! (the caller checks the actor is local).

use serde_json::Value;

use crate::DomainEvent;
use crate::activitypub::PUBLIC;

/// An activity to deliver.
#[derive(Clone, Debug, PartialEq)]
pub struct Outbound<'a> {
    /// The activity's actor, who signs the deliveries.
    pub actor: &'a str,
    pub activity: &'a Value,
    /// Everyone it is addressed to, with the public collection left out:
    /// actors and collections (such as the actor's followers), in order,
    /// without repeats.
    pub recipients: Vec<String>,
    /// Also to every server Chorus knows: an account's deletion, which
    /// Mastodon sends to all the inboxes it knows, since the account's
    /// followers are gone from the read models by the time it is planned.
    pub everyone: bool,
}

/// The activity `event` decided, if it is one to deliver.
pub fn outbound(event: &DomainEvent) -> Option<Outbound<'_>> {
    let (activity, concerned): (&Value, Option<&str>) = match event {
        DomainEvent::PostCreated(e) => (&e.activity, e.in_reply_to_author.as_deref()),
        DomainEvent::PostEdited(e) => (&e.activity, None),
        DomainEvent::PostDeleted(e) => (&e.activity, None),
        DomainEvent::FollowRequested(e) => (&e.activity, Some(&e.followee)),
        DomainEvent::FollowAccepted(e) => (&e.activity, Some(&e.follower)),
        DomainEvent::FollowRejected(e) => (&e.activity, Some(&e.follower)),
        DomainEvent::Unfollowed(e) => (&e.activity, Some(&e.followee)),
        DomainEvent::Blocked(e) => (&e.activity, Some(&e.blocked)),
        DomainEvent::Unblocked(e) => (&e.activity, Some(&e.blocked)),
        DomainEvent::Favorited(e) => (&e.activity, Some(&e.post_author)),
        DomainEvent::Unfavorited(e) => (&e.activity, Some(&e.post_author)),
        DomainEvent::Reblogged(e) => (&e.activity, Some(&e.post_author)),
        DomainEvent::Unreblogged(e) => (&e.activity, Some(&e.post_author)),
        DomainEvent::ActorDeleted(e) => (&e.activity, None),
        DomainEvent::ChannelMessageAnnounced(e) => (&e.announce, None),
        DomainEvent::ChannelMessageShared(e) => (&e.announce, None),
        DomainEvent::ChannelMessageRemoved(e) => (&e.announce, None),
        DomainEvent::ChannelMessageUnshared(e) => (&e.undo, None),
        DomainEvent::ChannelActivityAnnounced(e) => (&e.announce, None),
        _ => return None,
    };
    let actor = activity.get("actor")?.as_str()?;
    let mut recipients: Vec<String> = Vec::new();
    let mut add = |address: &str| {
        if address != PUBLIC
            && address != "as:Public"
            && address != "Public"
            && address != actor
            && !recipients.iter().any(|r| r == address)
        {
            recipients.push(address.to_owned());
        }
    };
    for field in ["to", "cc", "bto", "bcc"] {
        for address in addresses(activity.get(field)) {
            add(address);
        }
    }
    if let Some(concerned) = concerned {
        add(concerned);
    }
    Some(Outbound {
        actor,
        activity,
        recipients,
        everyone: matches!(event, DomainEvent::ActorDeleted(_)),
    })
}

/// The activity as sent: without `bto` and `bcc`, which name hidden
/// recipients and must not reach anyone.
pub fn body(activity: &Value) -> Value {
    let mut body = activity.clone();
    if let Some(map) = body.as_object_mut() {
        map.remove("bto");
        map.remove("bcc");
        if let Some(object) = map.get_mut("object").and_then(Value::as_object_mut) {
            object.remove("bto");
            object.remove("bcc");
        }
    }
    body
}

/// The ids in an audience field: a string, an object with an `id`, or an
/// array of either.
fn addresses(field: Option<&Value>) -> Vec<&str> {
    match field {
        Some(Value::String(id)) => vec![id.as_str()],
        Some(Value::Object(object)) => object
            .get("id")
            .and_then(Value::as_str)
            .into_iter()
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .flat_map(|item| addresses(Some(item)))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::interactions::Favorited;
    use crate::remote::RemoteActorDeleted;

    #[test]
    fn a_favorite_goes_to_its_audience_and_the_posts_author() {
        let event = DomainEvent::Favorited(Favorited {
            actor: "https://a.test/users/alice".into(),
            post: "https://b.test/notes/1".into(),
            post_author: "https://b.test/users/bob".into(),
            like_id: "https://a.test/likes/1".into(),
            activity: json!({
                "id": "https://a.test/likes/1",
                "type": "Like",
                "actor": "https://a.test/users/alice",
                "object": "https://b.test/notes/1",
                "to": [PUBLIC, "https://a.test/users/alice/followers"],
                "bcc": "https://c.test/users/carol",
            }),
        });
        let out = outbound(&event).unwrap_or_else(|| panic!("a favorite is delivered"));
        assert_eq!(out.actor, "https://a.test/users/alice");
        assert_eq!(
            out.recipients,
            [
                "https://a.test/users/alice/followers",
                "https://c.test/users/carol",
                "https://b.test/users/bob",
            ]
        );
        let sent = body(out.activity);
        assert!(sent.get("bcc").is_none());
        assert_eq!(sent["to"], out.activity["to"]);
    }

    #[test]
    fn events_without_an_activity_of_their_own_are_not_delivered() {
        let event = DomainEvent::RemoteActorDeleted(RemoteActorDeleted {
            uri: "https://b.test/users/bob".into(),
            deleted_at: chrono::Utc::now(),
        });
        assert_eq!(outbound(&event), None);
    }

    #[test]
    fn an_accounts_deletion_goes_to_every_server_known() {
        let mut state = crate::actors::ActorState::default();
        state.apply(&DomainEvent::ActorRegistered(
            crate::actors::ActorRegistered {
                actor_id: uuid::Uuid::nil(),
                handle: crate::actors::Handle::parse("alice").unwrap_or_else(|e| panic!("{e}")),
                uris: crate::actors::ActorUris::local(
                    "https://a.test",
                    &crate::actors::Handle::parse("alice").unwrap_or_else(|e| panic!("{e}")),
                ),
                display_name: None,
                locked: false,
                admin: false,
                public_key_pem: "PEM".into(),
                registered_at: chrono::Utc::now(),
            },
        ));
        let events = crate::actors::delete(&state, chrono::Utc::now()).unwrap_or_default();
        let out = outbound(&events[0]).unwrap_or_else(|| panic!("a deletion is delivered"));
        assert_eq!(out.actor, "https://a.test/users/alice");
        assert!(out.everyone);
        assert!(out.recipients.is_empty(), "{:?}", out.recipients);
        assert_eq!(out.activity["type"], "Delete");
    }

    #[test]
    fn audiences_may_be_strings_objects_or_arrays() {
        let field = json!(["https://x.test/a", { "id": "https://x.test/b" }, 3]);
        assert_eq!(
            addresses(Some(&field)),
            ["https://x.test/a", "https://x.test/b"]
        );
        assert_eq!(
            addresses(Some(&json!("https://x.test/c"))),
            ["https://x.test/c"]
        );
        assert!(addresses(None).is_empty());
    }
}
