//! Reading what other servers send: received activities, the posts and
//! actors they carry or that are fetched for them, and their HTML.
//!
//! The inbox stores every received activity's body verbatim before anything
//! interprets it. The inbox checks the envelope with [`read_activity`]
//! (refusals become HTTP 400 bodies); the interpreter, reading the stored
//! log later, turns the same body into an [`Interpretation`] with
//! [`interpret`]. Both are pure functions of the JSON: this module does no
//! IO, and fetching a referenced object or actor is the caller's job
//! ([`Interpretation::NeedsFetch`], [`origin_matches`]).
//!
//! Reading is tolerant of the shapes real servers send (a value or an
//! array, an id or an embedded object or a `Link`, extended or missing
//! `@context`, compacted `as:` names, `contentMap` without `content`) and
//! strict about what could mislead: ids must be absolute http(s) URLs,
//! types must be ActivityStreams or known extensions, HTML is sanitised,
//! and a key or an undo cannot speak for another actor.

mod activity;
mod actor;
mod interpret;
mod note;
mod reaction;
mod sanitize;
mod vocab;

#[cfg(test)]
mod fixtures;

pub use activity::{ActivityKind, InboundActivity, ObjectRef, origin_matches, read_activity};
pub use actor::{ActorKind, RemoteActor, RemoteKey, read_actor, read_key};
pub use interpret::{InnerActivity, Interpretation, interpret};
pub use note::{Attachment, NoteKind, Poll, RemoteNote, derive_visibility, read_note};
pub use reaction::is_single_emoji;
pub use sanitize::{LINK_REL, html_to_text, sanitize_html};
pub use vocab::{host_of, is_public};

/// The longest piece of received input quoted back in an error message.
const QUOTE_LEN: usize = 120;

/// Received input quoted in an error message, cut short: messages go back
/// to the sender and into logs, and must stay readable whatever was sent.
fn quote(s: &str) -> String {
    if s.chars().count() <= QUOTE_LEN {
        s.to_owned()
    } else {
        let cut: String = s.chars().take(QUOTE_LEN).collect();
        format!("{cut}…")
    }
}

/// Why a received document was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    #[error("the document is not a JSON object")]
    NotAnObject,
    #[error("the document has no `id`")]
    MissingId,
    #[error("`id` must be an absolute http(s) URL, not `{}`", quote(.0))]
    InvalidId(String),
    #[error("the document has no `type`")]
    MissingType,
    #[error("`{}` is not an ActivityStreams type", quote(.0))]
    UnknownType(String),
    #[error("a `{}` is not an activity", quote(.0))]
    NotAnActivity(String),
    #[error("the activity has no `actor`")]
    MissingActor,
    #[error("`actor` must be an absolute http(s) URL, not `{}`", quote(.0))]
    InvalidActor(String),
    #[error("a {} needs an `object`", quote(.0))]
    MissingObject(String),
    #[error("the object of a {} needs an `id`", quote(.0))]
    MissingObjectId(String),
    #[error("the object id must be an absolute http(s) URL, not `{}`", quote(.0))]
    InvalidObjectId(String),
    #[error("the embedded object's type `{}` is not an ActivityStreams type", quote(.0))]
    UnknownObjectType(String),
    #[error("a `{}` is not a post (Note, Article, Page, Question, Video, Audio, Image, Event)", quote(.0))]
    NotANote(String),
    #[error("the object names no author (`attributedTo`)")]
    MissingAuthor,
    #[error(
        "the {kind} answers a Follow of `{}`, not of its actor",
        quote(followed)
    )]
    ForeignFollow { kind: String, followed: String },
    #[error(
        "the undone activity was performed by `{}`, not by the actor undoing it",
        quote(by)
    )]
    ForeignUndo { by: String },
    #[error("an EmojiReact's content must be exactly one emoji, not `{}`", quote(.0))]
    InvalidReaction(String),
    #[error("a `{}` is not an actor (Person, Service, Group, Application, Organization)", quote(.0))]
    NotAnActor(String),
    #[error("the actor has no `inbox`")]
    MissingInbox,
    #[error("`inbox` must be an absolute http(s) URL, not `{}`", quote(.0))]
    InvalidInbox(String),
    #[error("the document has no `publicKeyPem`")]
    NotAKey,
    #[error("`publicKeyPem` is not a PEM document")]
    InvalidKeyPem,
    #[error("the key names no `owner`")]
    MissingKeyOwner,
    #[error("the actor publishes no public key of its own")]
    MissingPublicKey,
}

impl InboundError {
    /// A stable code for clients and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotAnObject => "NOT_AN_OBJECT",
            Self::MissingId => "MISSING_ID",
            Self::InvalidId(_) => "INVALID_ID",
            Self::MissingType => "MISSING_TYPE",
            Self::UnknownType(_) => "UNKNOWN_TYPE",
            Self::NotAnActivity(_) => "NOT_AN_ACTIVITY",
            Self::MissingActor => "MISSING_ACTOR",
            Self::InvalidActor(_) => "INVALID_ACTOR",
            Self::MissingObject(_) => "MISSING_OBJECT",
            Self::MissingObjectId(_) => "MISSING_OBJECT_ID",
            Self::InvalidObjectId(_) => "INVALID_OBJECT_ID",
            Self::UnknownObjectType(_) => "UNKNOWN_OBJECT_TYPE",
            Self::NotANote(_) => "NOT_A_NOTE",
            Self::MissingAuthor => "MISSING_AUTHOR",
            Self::ForeignFollow { .. } => "FOREIGN_FOLLOW",
            Self::ForeignUndo { .. } => "FOREIGN_UNDO",
            Self::InvalidReaction(_) => "INVALID_REACTION",
            Self::NotAnActor(_) => "NOT_AN_ACTOR",
            Self::MissingInbox => "MISSING_INBOX",
            Self::InvalidInbox(_) => "INVALID_INBOX",
            Self::NotAKey => "NOT_A_KEY",
            Self::InvalidKeyPem => "INVALID_KEY_PEM",
            Self::MissingKeyOwner => "MISSING_KEY_OWNER",
            Self::MissingPublicKey => "MISSING_PUBLIC_KEY",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_quote_input_briefly() {
        let long = "x".repeat(1000);
        let message = InboundError::InvalidId(long).to_string();
        assert!(message.chars().count() < 200, "{message}");
        assert_eq!(
            InboundError::UnknownType("https://example.com/".into()).to_string(),
            "`https://example.com/` is not an ActivityStreams type"
        );
    }
}
