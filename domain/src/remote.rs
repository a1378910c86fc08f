//! What other servers tell us: every received activity, verbatim, and the
//! remote actors and posts it is interpreted into.
//!
//! A received activity is stored as [`ActivityReceived`] before anything
//! reads it. An interpreter, a subscriber of the log, later turns it into
//! the facts below (or into the relationship and interaction events local
//! actions use too), each caused by the received event and with an id
//! derived from it, so interpreting an activity again appends nothing new.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::actors::actor_key;
use crate::posts::{PostFacts, ReplyParent, Visibility};
use crate::{EventId, StreamId};

/// The namespace of ids derived from ActivityPub ids: the same activity,
/// received again (at another inbox, or retried), maps to the same event.
const RECEIVED_NAMESPACE: Uuid = Uuid::from_u128(0x6d1c_0b4e_52a3_4f0e_9c35_2b7a_8e41_d0a7);

/// The stream of a received activity: one per activity id.
pub fn received_stream(activity_id: &str) -> StreamId {
    StreamId::composed(format!("received-{}", received_key(activity_id)))
}

/// The event id a received activity is stored under. Deterministic, so a
/// second delivery of the same activity is stored once.
pub fn received_event_id(activity_id: &str) -> EventId {
    EventId(received_key(activity_id))
}

fn received_key(activity_id: &str) -> Uuid {
    Uuid::new_v5(&RECEIVED_NAMESPACE, activity_id.as_bytes())
}

/// The stream of a remote actor's profile.
pub fn remote_actor_stream(uri: &str) -> StreamId {
    StreamId::composed(format!("remote-actor-{}", actor_key(uri)))
}

/// The stream of a remote post.
pub fn remote_post_stream(uri: &str) -> StreamId {
    StreamId::composed(format!("remote-post-{}", actor_key(uri)))
}

/// An activity reached an inbox and passed its checks (signature, instance
/// blocks, shape). `raw` is the request body exactly as it arrived; the
/// signature verdict, remote host and arrival time are in the metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityReceived {
    pub activity_id: String,
    /// The first ActivityStreams type named by `type`.
    pub activity_type: String,
    pub actor: String,
    /// The id of `object`, when it has one.
    pub object: Option<String>,
    /// The inbox it was posted to (the shared inbox or an actor's).
    pub inbox: String,
    /// The body as received (UTF-8 JSON text).
    pub raw: String,
}

/// Why a received activity changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotApplied {
    /// A type Chorus does not act on (yet): kept for reprocessing.
    Unsupported,
    /// Understood, but refused: a spoofed origin, a forbidden change.
    Refused,
    /// Understood, but about nothing Chorus knows or holds, or already done.
    Ignored,
}

impl NotApplied {
    /// Its stored name (`unsupported`, `refused`, `ignored`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unsupported => "unsupported",
            Self::Refused => "refused",
            Self::Ignored => "ignored",
        }
    }
}

/// The interpreter read a received activity and changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityNotApplied {
    pub activity_id: String,
    pub activity_type: String,
    pub outcome: NotApplied,
    pub reason: String,
}

/// An admin's reprocessing read a stored activity again with newer code,
/// and what it means changed: it is applied now (its events follow, caused
/// by the received activity), or it is still not applied, for another
/// reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityReprocessed {
    pub activity_id: String,
    pub activity_type: String,
    /// The reprocessing run (`InboundReprocessingRequested`).
    pub run_id: Uuid,
    /// `None` when it is applied now.
    pub outcome: Option<NotApplied>,
    pub reason: Option<String>,
}

/// A remote actor's profile, as fetched or as sent in an Update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteActorUpdated {
    pub uri: String,
    /// `Person`, `Service`, `Group`, `Application` or `Organization`.
    pub kind: String,
    /// `preferredUsername`.
    pub handle: String,
    /// The host of `uri`, with a non-default port.
    pub domain: String,
    pub display_name: Option<String>,
    /// Sanitised HTML.
    pub summary: Option<String>,
    pub inbox: String,
    pub shared_inbox: Option<String>,
    pub outbox: Option<String>,
    pub followers: Option<String>,
    pub following: Option<String>,
    pub url: Option<String>,
    pub icon: Option<String>,
    /// `manuallyApprovesFollowers`.
    pub locked: bool,
    pub key_id: Option<String>,
    pub public_key_pem: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// A remote actor deleted itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteActorDeleted {
    pub uri: String,
    pub deleted_at: DateTime<Utc>,
}

/// A remote post's attachment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteAttachment {
    pub url: String,
    pub media_type: Option<String>,
    pub name: Option<String>,
}

/// A remote post arrived (in a Create, or fetched for an Announce or a reply).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemotePostCreated {
    pub uri: String,
    /// `Note`, `Article`, `Page`, `Question`, `Video`, …
    pub kind: String,
    pub author: String,
    /// Sanitised HTML.
    pub content: String,
    pub summary: Option<String>,
    pub sensitive: bool,
    pub visibility: Visibility,
    pub in_reply_to: Option<String>,
    pub mentions: Vec<String>,
    pub hashtags: Vec<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub url: Option<String>,
    pub attachments: Vec<RemoteAttachment>,
    pub published: DateTime<Utc>,
}

/// A remote post was edited by its author.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemotePostEdited {
    pub uri: String,
    pub author: String,
    pub content: String,
    pub summary: Option<String>,
    pub sensitive: bool,
    pub mentions: Vec<String>,
    pub hashtags: Vec<String>,
    pub attachments: Vec<RemoteAttachment>,
    pub updated: DateTime<Utc>,
}

/// A remote post was deleted by its author.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemotePostDeleted {
    pub uri: String,
    pub author: String,
    pub deleted_at: DateTime<Utc>,
}

/// A remote post's state, folded from its stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RemotePostState {
    pub created: Option<RemotePostCreated>,
    pub deleted: bool,
    /// When it was last changed (creation or last edit).
    pub updated: Option<DateTime<Utc>>,
    /// Whether `updated` is an edit's (not the creation's).
    pub edited: bool,
    /// The actors it mentions now (after edits).
    pub mentions: Vec<String>,
}

impl RemotePostState {
    pub fn apply(&mut self, event: &crate::DomainEvent) {
        match event {
            crate::DomainEvent::RemotePostCreated(e) => {
                self.updated = Some(e.published);
                self.mentions = e.mentions.clone();
                self.created = Some(e.clone());
            }
            crate::DomainEvent::RemotePostEdited(e) => {
                self.updated = Some(e.updated);
                self.edited = true;
                self.mentions = e.mentions.clone();
            }
            crate::DomainEvent::RemotePostDeleted(_) => self.deleted = true,
            _ => {}
        }
    }

    /// The post, if it is known and not deleted.
    pub fn live(&self) -> Option<&RemotePostCreated> {
        self.created.as_ref().filter(|_| !self.deleted)
    }
}

impl PostFacts for RemotePostCreated {
    fn uri(&self) -> &str {
        &self.uri
    }

    fn author(&self) -> &str {
        &self.author
    }

    fn visibility(&self) -> Visibility {
        self.visibility
    }
}

/// A remote post a local reply answers: its state, and the first post of
/// its thread, which its stream cannot tell (the thread may have started
/// anywhere; the posts read model has followed it).
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteParent {
    pub state: RemotePostState,
    pub thread_root: String,
}

impl ReplyParent for RemoteParent {
    fn post(&self) -> Option<&dyn PostFacts> {
        self.state.created.as_ref().map(|p| p as &dyn PostFacts)
    }

    fn deleted(&self) -> bool {
        self.state.deleted
    }

    fn mentioned(&self) -> &[String] {
        &self.state.mentions
    }

    fn thread_root(&self) -> Option<&str> {
        Some(&self.thread_root)
    }
}

/// Why a remote change to a post was not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RemotePostError {
    #[error("the post is already known")]
    Known,
    #[error("the post was deleted")]
    Deleted,
    #[error("the post is unknown")]
    Unknown,
    #[error("{actor} is not the author of the post ({author})")]
    NotAuthor { actor: String, author: String },
    #[error("the edit is not newer than the post")]
    Stale,
}

/// Decides taking in a new remote post.
pub fn create_post(
    state: &RemotePostState,
    post: RemotePostCreated,
) -> Result<Vec<crate::DomainEvent>, RemotePostError> {
    if state.deleted {
        return Err(RemotePostError::Deleted);
    }
    if state.created.is_some() {
        return Err(RemotePostError::Known);
    }
    Ok(vec![crate::DomainEvent::RemotePostCreated(post)])
}

/// Decides an edit of a remote post by `actor`.
pub fn edit_post(
    state: &RemotePostState,
    actor: &str,
    edit: RemotePostEdited,
) -> Result<Vec<crate::DomainEvent>, RemotePostError> {
    let created = authored(state, actor)?;
    debug_assert_eq!(created.uri, edit.uri);
    // Timestamps often have whole seconds only: a first edit in the
    // second the post was published is still an edit. A later edit must
    // be strictly newer than the last one.
    let stale = match state.updated {
        Some(at) if state.edited => edit.updated <= at,
        Some(at) => edit.updated < at,
        None => false,
    };
    if stale {
        return Err(RemotePostError::Stale);
    }
    Ok(vec![crate::DomainEvent::RemotePostEdited(edit)])
}

/// Decides the deletion of a remote post by `actor`.
pub fn delete_post(
    state: &RemotePostState,
    actor: &str,
    at: DateTime<Utc>,
) -> Result<Vec<crate::DomainEvent>, RemotePostError> {
    let created = authored(state, actor)?;
    Ok(vec![crate::DomainEvent::RemotePostDeleted(
        RemotePostDeleted {
            uri: created.uri.clone(),
            author: created.author.clone(),
            deleted_at: at,
        },
    )])
}

fn authored<'a>(
    state: &'a RemotePostState,
    actor: &str,
) -> Result<&'a RemotePostCreated, RemotePostError> {
    if state.deleted {
        return Err(RemotePostError::Deleted);
    }
    let created = state.created.as_ref().ok_or(RemotePostError::Unknown)?;
    if created.author != actor {
        return Err(RemotePostError::NotAuthor {
            actor: actor.to_owned(),
            author: created.author.clone(),
        });
    }
    Ok(created)
}

/// A remote actor's state, folded from its stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteActorState {
    pub known: bool,
    pub deleted: bool,
}

impl RemoteActorState {
    pub fn apply(&mut self, event: &crate::DomainEvent) {
        match event {
            crate::DomainEvent::RemoteActorUpdated(_) => self.known = true,
            crate::DomainEvent::RemoteActorDeleted(_) => self.deleted = true,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_activity_maps_to_the_same_event_and_stream() {
        let a = "https://mastodon.example/users/a/statuses/1/activity";
        assert_eq!(received_event_id(a), received_event_id(a));
        assert_eq!(received_stream(a), received_stream(a));
        assert_ne!(
            received_event_id(a),
            received_event_id("https://x.example/1")
        );
        assert!(received_stream(a).as_str().starts_with("received-"));
    }

    fn post(author: &str) -> RemotePostCreated {
        RemotePostCreated {
            uri: "https://r.example/notes/1".into(),
            kind: "Note".into(),
            author: author.into(),
            content: "<p>hi</p>".into(),
            summary: None,
            sensitive: false,
            visibility: Visibility::Public,
            in_reply_to: None,
            mentions: vec![],
            hashtags: vec![],
            to: vec![],
            cc: vec![],
            url: None,
            attachments: vec![],
            published: DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
        }
    }

    #[test]
    fn a_first_edit_in_the_second_of_publication_counts_later_ones_must_be_newer() {
        let author = "https://r.example/users/a";
        let mut state = RemotePostState::default();
        let created = post(author);
        let published = created.published;
        for e in create_post(&state, created).unwrap_or_else(|e| panic!("{e}")) {
            state.apply(&e);
        }
        let edit = |updated| RemotePostEdited {
            uri: "https://r.example/notes/1".into(),
            author: author.into(),
            content: "<p>edited</p>".into(),
            summary: None,
            sensitive: false,
            mentions: vec![],
            hashtags: vec![],
            attachments: vec![],
            updated,
        };
        let earlier = published - chrono::Duration::seconds(1);
        assert_eq!(
            edit_post(&state, author, edit(earlier)),
            Err(RemotePostError::Stale)
        );
        for e in edit_post(&state, author, edit(published)).unwrap_or_else(|e| panic!("{e}")) {
            state.apply(&e);
        }
        assert_eq!(
            edit_post(&state, author, edit(published)),
            Err(RemotePostError::Stale)
        );
        let later = published + chrono::Duration::milliseconds(1);
        assert!(edit_post(&state, author, edit(later)).is_ok());
    }

    #[test]
    fn only_the_author_edits_or_deletes_and_a_deleted_post_stays_deleted() {
        let author = "https://r.example/users/a";
        let mut state = RemotePostState::default();
        for e in create_post(&state, post(author)).unwrap_or_else(|e| panic!("{e}")) {
            state.apply(&e);
        }
        assert_eq!(
            create_post(&state, post(author)),
            Err(RemotePostError::Known)
        );
        let at = DateTime::from_timestamp(1_700_000_100, 0).unwrap_or_default();
        assert!(matches!(
            delete_post(&state, "https://r.example/users/b", at),
            Err(RemotePostError::NotAuthor { .. })
        ));
        let edit = RemotePostEdited {
            uri: "https://r.example/notes/1".into(),
            author: author.into(),
            content: "<p>edited</p>".into(),
            summary: None,
            sensitive: false,
            mentions: vec![],
            hashtags: vec![],
            attachments: vec![],
            updated: at,
        };
        for e in edit_post(&state, author, edit.clone()).unwrap_or_else(|e| panic!("{e}")) {
            state.apply(&e);
        }
        assert_eq!(edit_post(&state, author, edit), Err(RemotePostError::Stale));
        for e in delete_post(&state, author, at).unwrap_or_else(|e| panic!("{e}")) {
            state.apply(&e);
        }
        assert_eq!(
            create_post(&state, post(author)),
            Err(RemotePostError::Deleted)
        );
    }
}
