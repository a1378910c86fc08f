//! Remote posts: `Note` and the other objects shown as posts (`Article`,
//! `Page`, `Question`, `Video`, `Audio`, `Image`, `Event`, `ChatMessage`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::InboundError;
use super::sanitize::{html_to_text, sanitize_html, text_to_html};
use super::vocab::{
    addresses, boolean, datetime, http_id, http_url, id_of, ids, known_types, lang_text, link,
    one_or_many, own_id, prop, raw_types, text,
};
use crate::activitypub::PUBLIC;
use crate::posts::Visibility;

/// The kinds of object Chorus shows as a post. Mastodon shows the same set
/// (converting all but `Note` and `Question`); `ChatMessage` is Pleroma's
/// direct message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NoteKind {
    Note,
    Article,
    Page,
    Question,
    Video,
    Audio,
    Image,
    Event,
    ChatMessage,
}

impl NoteKind {
    /// The kind a type name stands for, if it is one shown as a post.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "Note" => Self::Note,
            "Article" => Self::Article,
            "Page" => Self::Page,
            "Question" => Self::Question,
            "Video" => Self::Video,
            "Audio" => Self::Audio,
            "Image" => Self::Image,
            "Event" => Self::Event,
            "ChatMessage" => Self::ChatMessage,
            _ => return None,
        })
    }

    /// The ActivityStreams type name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Note => "Note",
            Self::Article => "Article",
            Self::Page => "Page",
            Self::Question => "Question",
            Self::Video => "Video",
            Self::Audio => "Audio",
            Self::Image => "Image",
            Self::Event => "Event",
            Self::ChatMessage => "ChatMessage",
        }
    }

    /// Whether `summary` is a content warning (for short posts) rather than
    /// an abstract (for articles, videos, events).
    fn summary_is_warning(self) -> bool {
        matches!(self, Self::Note | Self::Question | Self::ChatMessage)
    }

    /// The media type prefix of the file an object of this kind is.
    fn media_prefix(self) -> Option<&'static str> {
        match self {
            Self::Video => Some("video/"),
            Self::Audio => Some("audio/"),
            Self::Image => Some("image/"),
            _ => None,
        }
    }
}

/// The kind of the first type of `object` that is shown as a post.
pub(crate) fn note_kind(object: &Value) -> Option<NoteKind> {
    known_types(object)
        .iter()
        .find_map(|t| NoteKind::from_name(t))
}

/// A file attached to a remote post.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Always an http(s) URL.
    pub url: String,
    pub media_type: Option<String>,
    /// The description (alt text).
    pub name: Option<String>,
}

/// The choices of a poll (`Question`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Poll {
    /// Several choices may be voted for (`anyOf` rather than `oneOf`).
    pub multiple: bool,
    /// The choices' texts, in order.
    pub options: Vec<String>,
    /// When voting closes (`endTime`, or `closed` once it has).
    pub ends_at: Option<DateTime<Utc>>,
}

/// A remote post as read from its object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoteNote {
    pub id: String,
    pub kind: NoteKind,
    /// The author: the first `attributedTo` (PeerTube names the account,
    /// then the channel), or the activity's actor when the object names none.
    pub attributed_to: String,
    pub in_reply_to: Option<String>,
    /// Sanitised HTML; empty for objects with only a title or a link.
    pub content_html: String,
    /// Plain text: the content warning of a note, the abstract of an article.
    pub summary: Option<String>,
    pub sensitive: bool,
    pub published: Option<DateTime<Utc>>,
    pub updated: Option<DateTime<Utc>>,
    /// The page to link to (an http(s) URL).
    pub url: Option<String>,
    /// Plain text `name` of articles, pages, videos, events and polls.
    pub title: Option<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    /// Derived from `to` and `cc` with a guess at the followers collection
    /// (see [`derive_visibility`]).
    pub visibility: Visibility,
    /// The hrefs of `Mention` tags.
    pub mentions: Vec<String>,
    /// The names of `Hashtag` tags, lower-cased, without `#`.
    pub hashtags: Vec<String>,
    pub attachments: Vec<Attachment>,
    /// The quoted post (`quoteUrl`, `quoteUri`, `_misskey_quote`, `quote`,
    /// or a FEP-e232 object link).
    pub quote: Option<String>,
    pub poll: Option<Poll>,
    /// The `Group` it is posted in (`audience`, FEP-1b12).
    #[serde(default)]
    pub audience: Option<String>,
    /// The conversation or collection it belongs to (`context`): a
    /// server's channel, for messages posted in one.
    #[serde(default)]
    pub context: Option<String>,
}

/// The visibility of a post addressed to `to` and `cc`, the way Mastodon
/// derives it: public when addressed to the public collection, unlisted when
/// it is only copied, followers-only when the author's followers collection
/// is addressed, else direct.
///
/// `followers` is the author's followers collection when known (from the
/// stored actor). Without it, an address whose path has a `followers`
/// segment is taken for it: that is how Mastodon, Pleroma, Misskey, Lemmy,
/// Friendica and Hubzilla all name theirs.
pub fn derive_visibility(to: &[String], cc: &[String], followers: Option<&str>) -> Visibility {
    let all = || to.iter().chain(cc);
    if to.iter().any(|a| a == PUBLIC) {
        return Visibility::Public;
    }
    if cc.iter().any(|a| a == PUBLIC) {
        return Visibility::Unlisted;
    }
    let addresses_followers = match followers {
        Some(f) => all().any(|a| a == f),
        None => all().any(|a| looks_like_followers(a)),
    };
    if addresses_followers {
        Visibility::FollowersOnly
    } else {
        Visibility::Direct
    }
}

fn looks_like_followers(address: &str) -> bool {
    http_url(address).is_some_and(|u| {
        u.path_segments()
            .is_some_and(|mut segments| segments.any(|s| s == "followers"))
    })
}

/// Reads a fetched object (or one embedded in an activity) as a post.
///
/// Refuses objects of other types, without an http(s) `id`, or naming no
/// author.
pub fn read_note(value: &Value) -> Result<RemoteNote, InboundError> {
    read_note_by(value, None)
}

/// Like [`read_note`], with the author to assume when the object names none
/// (the actor of the activity that carried it).
pub(crate) fn read_note_by(value: &Value, actor: Option<&str>) -> Result<RemoteNote, InboundError> {
    if !value.is_object() {
        return Err(InboundError::NotAnObject);
    }
    let Some(kind) = note_kind(value) else {
        return Err(InboundError::NotANote(raw_types(value).join(", ")));
    };
    let raw_id = own_id(value).ok_or(InboundError::MissingObjectId(kind.as_str().to_owned()))?;
    let id = http_id(&raw_id).ok_or(InboundError::InvalidObjectId(raw_id))?;
    let attributed_to = ids(prop(value, "attributedTo"))
        .into_iter()
        .chain(ids(prop(value, "actor")))
        .find_map(|a| http_id(&a))
        .or_else(|| actor.map(str::to_owned))
        .ok_or(InboundError::MissingAuthor)?;

    // Content is HTML unless `mediaType` says it is text (PeerTube's markdown).
    let is_text = text(prop(value, "mediaType"))
        .is_some_and(|m| m.starts_with("text/markdown") || m.starts_with("text/plain"));
    let content_html = lang_text(value, "content")
        .map(|c| {
            if is_text {
                text_to_html(&c)
            } else {
                sanitize_html(&c)
            }
        })
        .unwrap_or_default();
    let summary = lang_text(value, "summary")
        .map(|s| html_to_text(&s))
        .filter(|s| !s.is_empty());
    let sensitive = boolean(prop(value, "sensitive")).unwrap_or(false)
        || (kind.summary_is_warning() && summary.is_some());
    let title = match kind {
        NoteKind::Note | NoteKind::ChatMessage => None,
        _ => lang_text(value, "name")
            .map(|n| html_to_text(&n))
            .filter(|n| !n.is_empty()),
    };
    let to = addresses(prop(value, "to"));
    let cc = addresses(prop(value, "cc"));
    let visibility = derive_visibility(&to, &cc, None);
    let (mentions, hashtags, tag_quote) = read_tags(value);
    let quote = ["quoteUrl", "quoteUri", "_misskey_quote", "quote"]
        .iter()
        .find_map(|p| prop(value, p).and_then(id_of))
        .and_then(|q| http_id(&q))
        .or(tag_quote);

    Ok(RemoteNote {
        kind,
        in_reply_to: prop(value, "inReplyTo")
            .and_then(id_of)
            .and_then(|r| http_id(&r)),
        content_html,
        summary,
        sensitive,
        published: datetime(prop(value, "published")),
        updated: datetime(prop(value, "updated")),
        url: link(prop(value, "url"), None).map(|(href, _)| href),
        title,
        to,
        cc,
        visibility,
        mentions,
        hashtags,
        attachments: read_attachments(value, kind),
        quote,
        poll: read_poll(value, kind),
        audience: prop(value, "audience")
            .and_then(id_of)
            .and_then(|a| http_id(&a)),
        context: prop(value, "context")
            .and_then(id_of)
            .and_then(|c| http_id(&c)),
        id,
        attributed_to,
    })
}

/// Mentions, hashtags and the quote link (FEP-e232) among `tag`.
fn read_tags(value: &Value) -> (Vec<String>, Vec<String>, Option<String>) {
    let mut mentions: Vec<String> = Vec::new();
    let mut hashtags: Vec<String> = Vec::new();
    let mut quote = None;
    for tag in one_or_many(prop(value, "tag")) {
        let types = known_types(tag);
        let is = |name: &str| types.iter().any(|t| t == name);
        if is("Mention") {
            if let Some(href) = prop(tag, "href").and_then(id_of).and_then(|h| http_id(&h))
                && !mentions.contains(&href)
            {
                mentions.push(href);
            }
        } else if is("Hashtag") {
            if let Some(name) = text(prop(tag, "name")) {
                let name = name.trim().trim_start_matches('#').to_lowercase();
                if !name.is_empty() && !hashtags.contains(&name) {
                    hashtags.push(name);
                }
            }
        } else if is("Link") && quote.is_none() {
            let media = text(prop(tag, "mediaType")).unwrap_or_default();
            let is_object_link = media.starts_with("application/activity+json")
                || (media.starts_with("application/ld+json")
                    && media.contains("https://www.w3.org/ns/activitystreams"));
            if is_object_link {
                quote = prop(tag, "href").and_then(id_of).and_then(|h| http_id(&h));
            }
        }
    }
    (mentions, hashtags, quote)
}

/// The files of `attachment`; for videos, audio and images, also the file
/// the object itself is (its `url` of the matching media type).
fn read_attachments(value: &Value, kind: NoteKind) -> Vec<Attachment> {
    let mut out: Vec<Attachment> = Vec::new();
    for item in one_or_many(prop(value, "attachment")) {
        let types = known_types(item);
        let is = |names: &[&str]| types.iter().any(|t| names.contains(&t.as_str()));
        // PropertyValue (profile fields) and plain links are not files.
        let is_file = types.is_empty() || is(&["Document", "Image", "Video", "Audio"]);
        let media_type = text(prop(item, "mediaType"));
        let is_media_link = is(&["Link"])
            && media_type.as_deref().is_some_and(|m| {
                ["image/", "video/", "audio/"]
                    .iter()
                    .any(|p| m.starts_with(p))
            });
        if !(is_file || is_media_link) {
            continue;
        }
        let url = match item {
            Value::String(s) => http_id(s),
            _ => link(prop(item, "url").or_else(|| prop(item, "href")), None).map(|(u, _)| u),
        };
        let Some(url) = url else { continue };
        let name = lang_text(item, "name")
            .or_else(|| lang_text(item, "summary"))
            .map(|n| html_to_text(&n))
            .filter(|n| !n.is_empty());
        out.push(Attachment {
            url,
            media_type,
            name,
        });
    }
    if let Some(prefix) = kind.media_prefix()
        && let Some((url, media_type)) = link(prop(value, "url"), Some(prefix))
        && !out.iter().any(|a| a.url == url)
    {
        out.push(Attachment {
            url,
            media_type,
            name: lang_text(value, "name").map(|n| html_to_text(&n)),
        });
    }
    out
}

fn read_poll(value: &Value, kind: NoteKind) -> Option<Poll> {
    if kind != NoteKind::Question {
        return None;
    }
    let (multiple, choices) = match prop(value, "anyOf") {
        Some(any) => (true, any),
        None => (false, prop(value, "oneOf")?),
    };
    let options = one_or_many(Some(choices))
        .into_iter()
        .filter_map(|c| lang_text(c, "name"))
        .collect();
    Some(Poll {
        multiple,
        options,
        ends_at: datetime(prop(value, "endTime")).or_else(|| datetime(prop(value, "closed"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn note(value: Value) -> RemoteNote {
        read_note(&value).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn visibility_is_derived_like_mastodon() {
        const FOLLOWERS: &str = "https://a.example/users/alice/followers";
        const BOB: &str = "https://b.example/users/bob";
        let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let check = |to: &[&str], cc: &[&str], expected| {
            let (to, cc) = (owned(to), owned(cc));
            assert_eq!(derive_visibility(&to, &cc, None), expected);
            assert_eq!(derive_visibility(&to, &cc, Some(FOLLOWERS)), expected);
        };
        check(&[PUBLIC], &[FOLLOWERS], Visibility::Public);
        check(&[FOLLOWERS], &[PUBLIC], Visibility::Unlisted);
        check(&[FOLLOWERS], &[BOB], Visibility::FollowersOnly);
        check(&[BOB], &[], Visibility::Direct);
        check(&[], &[], Visibility::Direct);
        // With the real collection known, a look-alike is not it.
        let other = owned(&["https://a.example/users/eve/followers"]);
        assert_eq!(
            derive_visibility(&other, &[], Some(FOLLOWERS)),
            Visibility::Direct
        );
    }

    #[test]
    fn a_note_is_read_tolerantly() {
        let n = note(json!({
            "id": "https://a.example/notes/1",
            "type": "Note",
            "attributedTo": {"type": "Person", "id": "https://a.example/users/alice"},
            "inReplyTo": {"type": "Note", "id": "https://b.example/notes/0"},
            "contentMap": {"en": "<p onclick=\"x()\">Hi <script>bad()</script>#Rust</p>"},
            "summary": "<b>CW</b>",
            "to": "as:Public",
            "tag": {"type": "Hashtag", "name": "#Rust"},
            "attachment": {"type": "Document", "mediaType": "image/png", "url": "https://a.example/f.png", "name": "alt"},
            "url": {"type": "Link", "href": "https://a.example/@alice/1"},
            "published": "2024-01-02T03:04:05Z",
            "_misskey_quote": "https://c.example/notes/9",
            "signature": {"type": "RsaSignature2017"}
        }));
        assert_eq!(n.kind, NoteKind::Note);
        assert_eq!(n.attributed_to, "https://a.example/users/alice");
        assert_eq!(n.in_reply_to.as_deref(), Some("https://b.example/notes/0"));
        assert_eq!(n.content_html, "<p>Hi #Rust</p>");
        assert_eq!(n.summary.as_deref(), Some("CW"));
        assert!(n.sensitive);
        assert_eq!(n.visibility, Visibility::Public);
        assert_eq!(n.hashtags, vec!["rust"]);
        assert_eq!(n.attachments.len(), 1);
        assert_eq!(n.attachments[0].name.as_deref(), Some("alt"));
        assert_eq!(n.url.as_deref(), Some("https://a.example/@alice/1"));
        assert_eq!(n.quote.as_deref(), Some("https://c.example/notes/9"));
        assert!(n.published.is_some());
    }

    #[test]
    fn an_article_keeps_its_title_and_its_summary_is_no_warning() {
        let n = note(json!({
            "id": "https://a.example/a/1", "type": "Article", "attributedTo": "https://a.example/u",
            "name": "Title &amp; more", "summary": "An abstract", "content": "<h2>Body</h2>"
        }));
        assert_eq!(n.title.as_deref(), Some("Title & more"));
        assert_eq!(n.summary.as_deref(), Some("An abstract"));
        assert!(!n.sensitive);
        assert_eq!(n.content_html, "<h2>Body</h2>");
    }

    #[test]
    fn a_poll_keeps_its_options() {
        let n = note(json!({
            "id": "https://a.example/q/1", "type": "Question", "attributedTo": "https://a.example/u",
            "content": "Which?", "anyOf": [{"type": "Note", "name": "a"}, {"type": "Note", "name": "b"}],
            "endTime": "2024-01-02T03:04:05Z"
        }));
        let poll = n.poll.unwrap_or_else(|| panic!("a poll"));
        assert!(poll.multiple);
        assert_eq!(poll.options, vec!["a", "b"]);
        assert!(poll.ends_at.is_some());
    }

    #[test]
    fn hostile_urls_are_dropped() {
        let n = note(json!({
            "id": "https://a.example/n/1", "type": "Note", "attributedTo": "https://a.example/u",
            "url": "javascript:alert(1)",
            "attachment": [{"type": "Document", "url": "javascript:alert(1)"}],
            "tag": [{"type": "Mention", "href": "javascript:alert(1)"}],
            "quoteUrl": "data:text/html,x"
        }));
        assert_eq!(n.url, None);
        assert!(n.attachments.is_empty());
        assert!(n.mentions.is_empty());
        assert_eq!(n.quote, None);
    }

    #[test]
    fn refusals() {
        let check = |value: Value, expected: InboundError| {
            assert_eq!(read_note(&value), Err(expected));
        };
        check(json!([]), InboundError::NotAnObject);
        check(
            json!({"id": "https://a.example/p", "type": "Person"}),
            InboundError::NotANote("Person".into()),
        );
        check(
            json!({"type": "Note", "attributedTo": "https://a.example/u"}),
            InboundError::MissingObjectId("Note".into()),
        );
        check(
            json!({"id": "tag:a.example,2024:1", "type": "Note", "attributedTo": "https://a.example/u"}),
            InboundError::InvalidObjectId("tag:a.example,2024:1".into()),
        );
        check(
            json!({"id": "https://a.example/n", "type": "Note"}),
            InboundError::MissingAuthor,
        );
    }
}
