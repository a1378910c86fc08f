//! What a received activity asks of Chorus.

use serde_json::Value;

use super::InboundError;
use super::activity::{ActivityKind, InboundActivity, ObjectRef};
use super::actor::{ActorKind, RemoteActor, read_actor};
use super::note::{NoteKind, RemoteNote, note_kind, read_note_by};
use super::reaction::is_single_emoji;
use super::vocab::{host_of, http_id, ids, known_types, lang_text, prop};

/// An activity embedded in (or named by) an `Accept`, `Reject` or `Undo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InnerActivity {
    /// Its id, when it is an absolute http(s) URL (the interpreter finds
    /// the stored activity by it).
    pub id: Option<String>,
    /// Its kind, when embedded with a type; `None` when only named by id.
    pub kind: Option<ActivityKind>,
    /// Its actor, when embedded.
    pub actor: Option<String>,
    /// Its object's id, when embedded (what was followed, liked, blocked…).
    pub object: Option<String>,
}

impl InnerActivity {
    fn read(object: &ObjectRef) -> Self {
        match object {
            ObjectRef::Id(id) => Self {
                id: http_id(id),
                kind: None,
                actor: None,
                object: None,
            },
            ObjectRef::Inline(value) => Self {
                id: object.id().and_then(http_id),
                kind: known_types(value)
                    .first()
                    .map(|t| ActivityKind::from_name(t)),
                actor: first_http_id(prop(value, "actor")),
                object: first_http_id(prop(value, "object")),
            },
            ObjectRef::None => Self {
                id: None,
                kind: None,
                actor: None,
                object: None,
            },
        }
    }
}

fn first_http_id(value: Option<&Value>) -> Option<String> {
    ids(value).into_iter().find_map(|i| http_id(&i))
}

/// What a received activity asks of Chorus, with the ids the interpreter
/// needs. Every variant names the activity and its actor.
#[derive(Clone, Debug, PartialEq)]
pub enum Interpretation {
    /// A post was published, embedded in the activity. Unless
    /// [`super::origin_matches`], it must not be trusted (the interpreter
    /// refuses a post whose id or author is not on the actor's server).
    CreateNote {
        activity_id: String,
        actor: String,
        note: RemoteNote,
    },
    /// A post was edited (the same origin rule as for `CreateNote`).
    UpdateNote {
        activity_id: String,
        actor: String,
        note: RemoteNote,
    },
    /// A Create or Update named its object only by id: the object must be
    /// fetched (and then read with [`super::read_note`]).
    NeedsFetch {
        activity_id: String,
        actor: String,
        kind: ActivityKind,
        object_id: String,
    },
    /// An actor's profile changed. `profile.id` may differ from `actor`
    /// (a Lemmy moderator updates a community): only an actor's own update,
    /// or one [`super::origin_matches`] vouches for, should be trusted.
    UpdateActor {
        activity_id: String,
        actor: String,
        profile: RemoteActor,
    },
    /// An object (a post, usually as a `Tombstone`) was deleted. Only its
    /// author (or its server, see [`super::origin_matches`]) may delete it.
    DeleteObject {
        activity_id: String,
        actor: String,
        object_id: String,
    },
    /// The actor deleted itself (the object is the actor).
    DeleteActor { activity_id: String, actor: String },
    Follow {
        activity_id: String,
        actor: String,
        object_id: String,
    },
    /// The actor accepted a follow of it.
    AcceptFollow {
        activity_id: String,
        actor: String,
        follow: InnerActivity,
    },
    /// The actor rejected (or removed) a follower.
    RejectFollow {
        activity_id: String,
        actor: String,
        follow: InnerActivity,
    },
    Like {
        activity_id: String,
        actor: String,
        object_id: String,
        /// The emoji of a Misskey reaction sent as a `Like`.
        reaction: Option<String>,
    },
    /// A boost.
    Announce {
        activity_id: String,
        actor: String,
        object_id: String,
        /// The object's type when embedded (Lemmy groups announce whole
        /// activities: `Create`, `Update`, …).
        object_type: Option<String>,
        /// The object was embedded rather than named by id.
        inline: bool,
        /// The object's id is on another host than the actor's: an embedded
        /// copy cannot be trusted and must be fetched from its origin.
        cross_origin: bool,
    },
    /// The actor took back an earlier Follow, Like, Announce or Block
    /// (`inner.kind` says which, or is `None` when only its id was sent).
    Undo {
        activity_id: String,
        actor: String,
        inner: InnerActivity,
    },
    Block {
        activity_id: String,
        actor: String,
        object_id: String,
    },
    /// Understood but not acted on (yet). The caller stores it all the same.
    Unsupported {
        activity_id: String,
        actor: String,
        /// The activity's type (`Move`, `Flag`, `EmojiReact`, `Create`…).
        kind: String,
        object_id: Option<String>,
        /// Why, in a sentence for logs.
        reason: String,
    },
}

impl Interpretation {
    /// The id of the activity interpreted.
    pub fn activity_id(&self) -> &str {
        match self {
            Self::CreateNote { activity_id, .. }
            | Self::UpdateNote { activity_id, .. }
            | Self::NeedsFetch { activity_id, .. }
            | Self::UpdateActor { activity_id, .. }
            | Self::DeleteObject { activity_id, .. }
            | Self::DeleteActor { activity_id, .. }
            | Self::Follow { activity_id, .. }
            | Self::AcceptFollow { activity_id, .. }
            | Self::RejectFollow { activity_id, .. }
            | Self::Like { activity_id, .. }
            | Self::Announce { activity_id, .. }
            | Self::Undo { activity_id, .. }
            | Self::Block { activity_id, .. }
            | Self::Unsupported { activity_id, .. } => activity_id,
        }
    }

    /// A stable name of the variant, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::CreateNote { .. } => "CreateNote",
            Self::UpdateNote { .. } => "UpdateNote",
            Self::NeedsFetch { .. } => "NeedsFetch",
            Self::UpdateActor { .. } => "UpdateActor",
            Self::DeleteObject { .. } => "DeleteObject",
            Self::DeleteActor { .. } => "DeleteActor",
            Self::Follow { .. } => "Follow",
            Self::AcceptFollow { .. } => "AcceptFollow",
            Self::RejectFollow { .. } => "RejectFollow",
            Self::Like { .. } => "Like",
            Self::Announce { .. } => "Announce",
            Self::Undo { .. } => "Undo",
            Self::Block { .. } => "Block",
            Self::Unsupported { .. } => "Unsupported",
        }
    }
}

/// The activities an `Undo` can take back that Chorus acts on.
fn undoable(kind: &ActivityKind) -> bool {
    matches!(
        kind,
        ActivityKind::Follow | ActivityKind::Like | ActivityKind::Announce | ActivityKind::Block
    )
}

/// Says what a read activity asks of Chorus.
///
/// Refused (as [`InboundError`]): an activity that needs an object and has
/// none, or whose object id is not an http(s) URL; an embedded post that
/// cannot be read; an `Undo` of someone else's activity; an `Accept` or
/// `Reject` of a follow of someone else; an `EmojiReact` that is not one
/// emoji. Everything else that is understood but not acted on is
/// [`Interpretation::Unsupported`], never an error, so that it is stored.
///
/// Origin is not judged here: see [`super::origin_matches`].
pub fn interpret(activity: &InboundActivity) -> Result<Interpretation, InboundError> {
    let activity_id = activity.id.clone();
    let actor = activity.actor.clone();
    let kind = &activity.kind;
    let unsupported = |reason: String| Interpretation::Unsupported {
        activity_id: activity.id.clone(),
        actor: activity.actor.clone(),
        kind: activity.kind.to_string(),
        object_id: activity.object.id().map(str::to_owned),
        reason,
    };
    match kind {
        ActivityKind::Create | ActivityKind::Update => create_or_update(activity, unsupported),
        ActivityKind::Delete => {
            let object_id = object_id(activity)?;
            Ok(if object_id == actor {
                Interpretation::DeleteActor { activity_id, actor }
            } else {
                Interpretation::DeleteObject {
                    activity_id,
                    actor,
                    object_id,
                }
            })
        }
        ActivityKind::Follow => Ok(Interpretation::Follow {
            object_id: object_id(activity)?,
            activity_id,
            actor,
        }),
        ActivityKind::Accept | ActivityKind::Reject => {
            let follow = inner(activity)?;
            if follow
                .kind
                .as_ref()
                .is_some_and(|k| *k != ActivityKind::Follow)
            {
                let inner_kind = follow
                    .kind
                    .as_ref()
                    .map(ActivityKind::as_str)
                    .unwrap_or("?");
                return Ok(unsupported(format!(
                    "{kind} of a {inner_kind} is not supported"
                )));
            }
            // A Follow is accepted by whom it asked to follow; anyone else
            // answering it speaks for another actor.
            if let Some(followed) = &follow.object
                && *followed != actor
            {
                return Err(InboundError::ForeignFollow {
                    kind: kind.to_string(),
                    followed: followed.clone(),
                });
            }
            Ok(if *kind == ActivityKind::Accept {
                Interpretation::AcceptFollow {
                    activity_id,
                    actor,
                    follow,
                }
            } else {
                Interpretation::RejectFollow {
                    activity_id,
                    actor,
                    follow,
                }
            })
        }
        ActivityKind::Like => Ok(Interpretation::Like {
            object_id: object_id(activity)?,
            reaction: activity.content.clone().filter(|c| is_single_emoji(c)),
            activity_id,
            actor,
        }),
        ActivityKind::Announce => {
            let object_id = object_id(activity)?;
            let cross_origin = host_of(&object_id) != host_of(&actor);
            Ok(Interpretation::Announce {
                object_type: activity.object.types().into_iter().next(),
                inline: activity.object.inline().is_some(),
                cross_origin,
                object_id,
                activity_id,
                actor,
            })
        }
        ActivityKind::Undo => {
            let undone = inner(activity)?;
            if let Some(k) = &undone.kind
                && !undoable(k)
            {
                return Ok(unsupported(format!("Undo of a {k} is not supported")));
            }
            if let Some(by) = &undone.actor
                && *by != actor
            {
                return Err(InboundError::ForeignUndo { by: by.clone() });
            }
            Ok(Interpretation::Undo {
                activity_id,
                actor,
                inner: undone,
            })
        }
        ActivityKind::Block => Ok(Interpretation::Block {
            object_id: object_id(activity)?,
            activity_id,
            actor,
        }),
        ActivityKind::EmojiReact => {
            let content = activity.content.clone().unwrap_or_default();
            if !is_single_emoji(&content) {
                return Err(InboundError::InvalidReaction(content));
            }
            Ok(unsupported("emoji reactions are not supported".to_owned()))
        }
        ActivityKind::Other(name) => Ok(unsupported(format!("{name} is not supported"))),
    }
}

/// The object's id, required and an http(s) URL.
fn object_id(activity: &InboundActivity) -> Result<String, InboundError> {
    match activity.object.id() {
        Some(id) => http_id(id).ok_or_else(|| InboundError::InvalidObjectId(id.to_owned())),
        None if activity.object == ObjectRef::None => {
            Err(InboundError::MissingObject(activity.kind.to_string()))
        }
        None => Err(InboundError::MissingObjectId(activity.kind.to_string())),
    }
}

/// The inner activity of an Accept, Reject or Undo; it must be findable,
/// by its id or by what it was about.
fn inner(activity: &InboundActivity) -> Result<InnerActivity, InboundError> {
    if activity.object == ObjectRef::None {
        return Err(InboundError::MissingObject(activity.kind.to_string()));
    }
    let inner = InnerActivity::read(&activity.object);
    if inner.id.is_none() && inner.object.is_none() {
        return Err(match activity.object.id() {
            Some(id) => InboundError::InvalidObjectId(id.to_owned()),
            None => InboundError::MissingObjectId(activity.kind.to_string()),
        });
    }
    Ok(inner)
}

fn create_or_update(
    activity: &InboundActivity,
    unsupported: impl Fn(String) -> Interpretation,
) -> Result<Interpretation, InboundError> {
    let activity_id = activity.id.clone();
    let actor = activity.actor.clone();
    let kind = &activity.kind;
    let object = match &activity.object {
        ObjectRef::None => return Err(InboundError::MissingObject(kind.to_string())),
        ObjectRef::Id(id) => {
            let object_id = http_id(id).ok_or_else(|| InboundError::InvalidObjectId(id.clone()))?;
            return Ok(Interpretation::NeedsFetch {
                activity_id,
                actor,
                kind: kind.clone(),
                object_id,
            });
        }
        ObjectRef::Inline(object) => object,
    };
    let types = known_types(object);
    if let Some(note_kind) = note_kind(object) {
        if is_bare(object) {
            let object_id = object_id(activity)?;
            return Ok(Interpretation::NeedsFetch {
                activity_id,
                actor,
                kind: kind.clone(),
                object_id,
            });
        }
        if *kind == ActivityKind::Create && is_poll_vote(object, note_kind) {
            return Ok(unsupported("poll votes are not supported".to_owned()));
        }
        let note = read_note_by(object, Some(&actor))?;
        return Ok(if *kind == ActivityKind::Create {
            Interpretation::CreateNote {
                activity_id,
                actor,
                note,
            }
        } else {
            Interpretation::UpdateNote {
                activity_id,
                actor,
                note,
            }
        });
    }
    let is_actor = types.iter().any(|t| ActorKind::from_name(t).is_some());
    if is_actor && *kind == ActivityKind::Update {
        let profile = read_actor(object)?;
        return Ok(Interpretation::UpdateActor {
            activity_id,
            actor,
            profile,
        });
    }
    let object_type = types
        .first()
        .map(String::as_str)
        .unwrap_or("untyped object");
    Ok(unsupported(format!(
        "{kind} of a {object_type} is not supported"
    )))
}

/// An embedded object with nothing but its id and type: a reference that
/// must be fetched before it can be shown.
fn is_bare(object: &Value) -> bool {
    object.as_object().is_some_and(|map| {
        map.keys()
            .all(|k| matches!(k.as_str(), "id" | "@id" | "type" | "@type" | "@context"))
    })
}

/// Mastodon sends a vote on a poll as a `Create` of a `Note` with the
/// chosen option as `name`, no content, in reply to the poll.
fn is_poll_vote(object: &Value, kind: NoteKind) -> bool {
    kind == NoteKind::Note
        && lang_text(object, "name").is_some()
        && lang_text(object, "content").is_none()
        && prop(object, "inReplyTo").is_some()
}

#[cfg(test)]
mod tests {
    use super::super::read_activity;
    use super::*;
    use serde_json::json;

    const ALICE: &str = "https://a.example/users/alice";
    const BOB: &str = "https://b.example/users/bob";

    fn interpretation(value: Value) -> Result<Interpretation, InboundError> {
        interpret(&read_activity(&value)?)
    }

    fn ok(value: Value) -> Interpretation {
        interpretation(value).unwrap_or_else(|e| panic!("{e}"))
    }

    fn activity(kind: &str, object: Value) -> Value {
        json!({"id": "https://a.example/activities/1", "type": kind, "actor": ALICE, "object": object})
    }

    #[test]
    fn create_of_a_note_or_of_a_reference() {
        let note = json!({"id": "https://a.example/notes/1", "type": "Note", "content": "hi"});
        match ok(activity("Create", note)) {
            Interpretation::CreateNote { note, .. } => {
                assert_eq!(
                    note.attributed_to, ALICE,
                    "the actor stands in for a missing author"
                );
            }
            other => panic!("{other:?}"),
        }
        for object in [
            json!("https://a.example/notes/1"),
            json!({"id": "https://a.example/notes/1", "type": "Note"}),
        ] {
            assert_eq!(
                ok(activity("Create", object)),
                Interpretation::NeedsFetch {
                    activity_id: "https://a.example/activities/1".into(),
                    actor: ALICE.into(),
                    kind: ActivityKind::Create,
                    object_id: "https://a.example/notes/1".into(),
                }
            );
        }
        assert_eq!(
            interpretation(activity(
                "Create",
                json!({"type": "Note", "content": "no id"})
            )),
            Err(InboundError::MissingObjectId("Note".into()))
        );
        assert_eq!(
            interpretation(json!({"id": "https://a.example/1", "type": "Create", "actor": ALICE})),
            Err(InboundError::MissingObject("Create".into()))
        );
    }

    #[test]
    fn update_of_a_note_or_of_an_actor() {
        let note = json!({"id": "https://a.example/notes/1", "type": "Article", "content": "x", "attributedTo": ALICE});
        assert_eq!(ok(activity("Update", note)).name(), "UpdateNote");
        let person = json!({"id": ALICE, "type": "Person", "inbox": "https://a.example/inbox"});
        assert_eq!(ok(activity("Update", person)).name(), "UpdateActor");
        let tombstone = json!({"id": "https://a.example/notes/1", "type": "Tombstone"});
        assert_eq!(ok(activity("Update", tombstone)).name(), "Unsupported");
    }

    #[test]
    fn delete_of_an_object_or_of_the_actor() {
        assert_eq!(
            ok(activity(
                "Delete",
                json!({"id": "https://a.example/n/1", "type": "Tombstone"})
            )),
            Interpretation::DeleteObject {
                activity_id: "https://a.example/activities/1".into(),
                actor: ALICE.into(),
                object_id: "https://a.example/n/1".into(),
            }
        );
        assert_eq!(ok(activity("Delete", json!(ALICE))).name(), "DeleteActor");
        assert_eq!(
            interpretation(activity("Delete", json!("not a url"))),
            Err(InboundError::InvalidObjectId("not a url".into()))
        );
    }

    #[test]
    fn accept_and_reject_of_a_follow_inline_or_by_id() {
        let follow = json!({"id": "https://b.example/follows/1", "type": "Follow", "actor": BOB, "object": ALICE});
        match ok(activity("Accept", follow.clone())) {
            Interpretation::AcceptFollow { follow, .. } => {
                assert_eq!(follow.id.as_deref(), Some("https://b.example/follows/1"));
                assert_eq!(follow.kind, Some(ActivityKind::Follow));
                assert_eq!(follow.actor.as_deref(), Some(BOB));
                assert_eq!(follow.object.as_deref(), Some(ALICE));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(ok(activity("Reject", follow)).name(), "RejectFollow");
        match ok(activity("Accept", json!("https://b.example/follows/1"))) {
            Interpretation::AcceptFollow { follow, .. } => {
                assert_eq!(follow.id.as_deref(), Some("https://b.example/follows/1"));
                assert_eq!(follow.kind, None);
            }
            other => panic!("{other:?}"),
        }
        let foreign = json!({"id": "https://b.example/follows/2", "type": "Follow", "actor": BOB, "object": "https://c.example/u"});
        assert_eq!(
            interpretation(activity("Accept", foreign)),
            Err(InboundError::ForeignFollow {
                kind: "Accept".into(),
                followed: "https://c.example/u".into()
            })
        );
        let join = json!({"id": "https://b.example/joins/1", "type": "Join", "actor": BOB, "object": "https://a.example/e/1"});
        assert_eq!(ok(activity("Accept", join)).name(), "Unsupported");
    }

    #[test]
    fn undo_of_follow_like_announce_block_or_an_id() {
        for kind in ["Follow", "Like", "Announce", "Block"] {
            let undone =
                json!({"id": "https://a.example/x/1", "type": kind, "actor": ALICE, "object": BOB});
            match ok(activity("Undo", undone)) {
                Interpretation::Undo { inner, .. } => {
                    assert_eq!(inner.kind, Some(ActivityKind::from_name(kind)));
                    assert_eq!(inner.object.as_deref(), Some(BOB));
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            ok(activity("Undo", json!("https://a.example/likes/1"))).name(),
            "Undo"
        );
        let foreign =
            json!({"id": "https://b.example/f/1", "type": "Follow", "actor": BOB, "object": ALICE});
        assert_eq!(
            interpretation(activity("Undo", foreign)),
            Err(InboundError::ForeignUndo { by: BOB.into() })
        );
        let dislike = json!({"id": "https://a.example/d/1", "type": "Dislike", "actor": ALICE, "object": BOB});
        assert_eq!(ok(activity("Undo", dislike)).name(), "Unsupported");
    }

    #[test]
    fn announce_says_whether_inline_and_cross_origin() {
        match ok(activity(
            "Announce",
            json!({"id": "https://b.example/n/1", "type": "Note", "content": "x"}),
        )) {
            Interpretation::Announce {
                inline,
                cross_origin,
                object_type,
                ..
            } => {
                assert!(inline);
                assert!(cross_origin);
                assert_eq!(object_type.as_deref(), Some("Note"));
            }
            other => panic!("{other:?}"),
        }
        match ok(activity("Announce", json!("https://a.example/n/1"))) {
            Interpretation::Announce {
                inline,
                cross_origin,
                ..
            } => {
                assert!(!inline);
                assert!(!cross_origin);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn follow_like_block_need_an_object_id() {
        assert_eq!(ok(activity("Follow", json!(BOB))).name(), "Follow");
        assert_eq!(ok(activity("Block", json!(BOB))).name(), "Block");
        let mut like = activity("Like", json!("https://b.example/n/1"));
        like["content"] = json!("⭐");
        match ok(like) {
            Interpretation::Like { reaction, .. } => assert_eq!(reaction.as_deref(), Some("⭐")),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            interpretation(json!({"id": "https://a.example/1", "type": "Follow", "actor": ALICE})),
            Err(InboundError::MissingObject("Follow".into()))
        );
    }

    #[test]
    fn emoji_reactions_must_be_one_emoji() {
        let mut react = activity("EmojiReact", json!("https://b.example/n/1"));
        react["content"] = json!("👌");
        assert_eq!(ok(react.clone()).name(), "Unsupported");
        react["content"] = json!("👌👌");
        assert_eq!(
            interpretation(react),
            Err(InboundError::InvalidReaction("👌👌".into()))
        );
    }

    #[test]
    fn other_activities_are_unsupported_not_refused() {
        for kind in [
            "Move", "Flag", "Add", "Remove", "Lock", "Invite", "Join", "Leave", "Bite",
        ] {
            match ok(activity(kind, json!(BOB))) {
                Interpretation::Unsupported {
                    kind: k, object_id, ..
                } => {
                    assert_eq!(k, kind);
                    assert_eq!(object_id.as_deref(), Some(BOB));
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
