//! The ActivityStreams documents Chorus emits for its own actors' actions.

use serde_json::{Value, json};

/// The ActivityStreams context, with the extensions Mastodon-compatible
/// servers expect (`sensitive`, `Hashtag`, `manuallyApprovesFollowers`).
pub fn context() -> Value {
    json!([
        "https://www.w3.org/ns/activitystreams",
        "https://w3id.org/security/v1",
        {
            "sensitive": "as:sensitive",
            "Hashtag": "as:Hashtag",
            "manuallyApprovesFollowers": "as:manuallyApprovesFollowers"
        }
    ])
}

/// The special collection that makes an object public.
pub const PUBLIC: &str = "https://www.w3.org/ns/activitystreams#Public";

/// An activity `kind` by `actor` on `object`, addressed to `to` and `cc`.
pub fn activity(
    id: &str,
    kind: &str,
    actor: &str,
    object: Value,
    to: &[String],
    cc: &[String],
) -> Value {
    let mut activity = json!({
        "@context": context(),
        "id": id,
        "type": kind,
        "actor": actor,
        "object": object,
    });
    if !to.is_empty() {
        activity["to"] = json!(to);
    }
    if !cc.is_empty() {
        activity["cc"] = json!(cc);
    }
    activity
}

/// `Undo` of an earlier activity (embedded without its `@context`).
pub fn undo(id: &str, actor: &str, mut undone: Value, to: &[String], cc: &[String]) -> Value {
    if let Some(map) = undone.as_object_mut() {
        map.remove("@context");
    }
    activity(id, "Undo", actor, undone, to, cc)
}
