//! Posts: creating, editing and deleting notes, and who may see them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::StreamId;
use crate::activitypub::{self, PUBLIC};
use crate::events::DomainEvent;

/// Who a post is for, mapped to `to`/`cc` the way Mastodon does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Everyone, listed on public timelines.
    Public,
    /// Everyone, but kept off public timelines.
    Unlisted,
    /// The author's followers and the mentioned.
    FollowersOnly,
    /// Only the mentioned.
    Direct,
}

impl Visibility {
    /// The addressing of a post with this visibility.
    pub fn audience(self, followers: &str, mentions: &[String]) -> (Vec<String>, Vec<String>) {
        let mut to = Vec::new();
        let mut cc = Vec::new();
        match self {
            Self::Public => {
                to.push(PUBLIC.to_owned());
                cc.push(followers.to_owned());
                cc.extend(mentions.iter().cloned());
            }
            Self::Unlisted => {
                to.push(followers.to_owned());
                cc.push(PUBLIC.to_owned());
                cc.extend(mentions.iter().cloned());
            }
            Self::FollowersOnly => {
                to.push(followers.to_owned());
                cc.extend(mentions.iter().cloned());
            }
            Self::Direct => to.extend(mentions.iter().cloned()),
        }
        (to, cc)
    }

    /// Whether it may be shown to people who are not addressed.
    pub fn is_public(self) -> bool {
        matches!(self, Self::Public | Self::Unlisted)
    }
}

/// A mention in a post's text resolved to an actor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mention {
    /// As written, without the `@`: `bob` or `bob@remote.example`.
    pub acct: String,
    /// The actor's ActivityPub id.
    pub uri: String,
    /// The actor's profile page, which the text links to; its id when
    /// `None` (local actors, and remote ones that publish no `url`).
    #[serde(default)]
    pub url: Option<String>,
}

/// The longest post accepted, in characters of source text.
pub const MAX_POST_LEN: usize = 5000;
/// The longest content warning accepted.
pub const MAX_SUMMARY_LEN: usize = 500;

/// The `acct`s written as mentions in `text` (`@bob`, `@bob@remote.example`).
pub fn mentioned_accts(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for token in tokens(text) {
        if let Token::Mention(acct) = token
            && !out.contains(&acct.to_ascii_lowercase())
        {
            out.push(acct.to_ascii_lowercase());
        }
    }
    out
}

/// Source text rendered to HTML.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub html: String,
    /// Lower-cased, without `#`, in order of first use.
    pub hashtags: Vec<String>,
    /// The ids of mentioned actors, in order of first use.
    pub mentions: Vec<String>,
}

/// Renders plain text as HTML: paragraphs, line breaks, links for URLs,
/// resolved mentions and hashtags; everything else is escaped, so the result
/// is safe by construction.
pub fn render(text: &str, mentions: &[Mention], base: &str) -> Rendered {
    let base = base.trim_end_matches('/');
    let mut hashtags: Vec<String> = Vec::new();
    let mut mentioned: Vec<String> = Vec::new();
    let paragraphs: Vec<String> = text
        .trim()
        .replace("\r\n", "\n")
        .split("\n\n")
        .filter(|p| !p.trim().is_empty())
        .map(|paragraph| {
            let lines: Vec<String> = paragraph
                .trim()
                .lines()
                .map(|line| {
                    tokens(line)
                        .into_iter()
                        .map(|token| match token {
                            Token::Text(t) => escape(&t),
                            Token::Url(url) => format!(
                                "<a href=\"{0}\" rel=\"nofollow noopener noreferrer\" target=\"_blank\">{0}</a>",
                                escape(&url)
                            ),
                            Token::Mention(acct) => {
                                match mentions.iter().find(|m| m.acct.eq_ignore_ascii_case(&acct)) {
                                    Some(m) => {
                                        if !mentioned.contains(&m.uri) {
                                            mentioned.push(m.uri.clone());
                                        }
                                        let name = acct.split('@').next().unwrap_or(&acct);
                                        format!(
                                            "<span class=\"h-card\"><a href=\"{}\" class=\"u-url mention\">@<span>{}</span></a></span>",
                                            escape(link_of(m)),
                                            escape(name)
                                        )
                                    }
                                    None => escape(&format!("@{acct}")),
                                }
                            }
                            Token::Hashtag(tag) => {
                                let lower = tag.to_lowercase();
                                if !hashtags.contains(&lower) {
                                    hashtags.push(lower.clone());
                                }
                                format!(
                                    "<a href=\"{base}/tags/{}\" class=\"mention hashtag\" rel=\"tag\">#<span>{}</span></a>",
                                    escape(&lower),
                                    escape(&tag)
                                )
                            }
                        })
                        .collect()
                })
                .collect();
            format!("<p>{}</p>", lines.join("<br>"))
        })
        .collect();
    Rendered {
        html: paragraphs.concat(),
        hashtags,
        mentions: mentioned,
    }
}

/// Where the text links a mention to: the actor's profile page when it is
/// an http(s) URL, its id otherwise.
fn link_of(mention: &Mention) -> &str {
    mention
        .url
        .as_deref()
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        .unwrap_or(&mention.uri)
}

enum Token {
    Text(String),
    Url(String),
    Mention(String),
    Hashtag(String),
}

/// Splits one line into text, URLs, `@mentions` and `#hashtags`. A mention or
/// hashtag must start the line or follow a character that cannot be part of
/// a word (so `mail@example.com` is text).
fn tokens(line: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut text = String::new();
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    let word_char = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        let at_boundary =
            i == 0 || !(word_char(chars[i - 1]) || chars[i - 1] == '@' || chars[i - 1] == '/');
        let rest: String = chars[i..].iter().collect();
        if at_boundary && (rest.starts_with("https://") || rest.starts_with("http://")) {
            let len = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let mut url: String = rest[..len].to_owned();
            // Trailing punctuation belongs to the sentence, not the link.
            while url.ends_with(['.', ',', ';', ':', '!', '?', ')', '"', '\'']) {
                url.pop();
            }
            if url.len() > "https://".len() {
                flush(&mut text, &mut out);
                i += url.chars().count();
                out.push(Token::Url(url));
                continue;
            }
        }
        if at_boundary && c == '@' {
            let name: String = chars[i + 1..]
                .iter()
                .take_while(|c| word_char(**c))
                .collect();
            if !name.is_empty() {
                let mut len = 1 + name.chars().count();
                let mut acct = name;
                // An optional @domain.
                if chars.get(len + i) == Some(&'@') {
                    let domain: String = chars[i + len + 1..]
                        .iter()
                        .take_while(|c| c.is_alphanumeric() || **c == '.' || **c == '-')
                        .collect();
                    let mut domain = domain.trim_end_matches(['.', '-']).to_owned();
                    if domain.contains('.') || domain == "localhost" {
                        // A server on a non-default port: `@alice@127.0.0.1:3000`.
                        let after = i + len + 1 + domain.chars().count();
                        if chars.get(after) == Some(&':') {
                            let port: String = chars[after + 1..]
                                .iter()
                                .take_while(|c| c.is_ascii_digit())
                                .collect();
                            if !port.is_empty() {
                                domain = format!("{domain}:{port}");
                            }
                        }
                        len += 1 + domain.chars().count();
                        acct = format!("{acct}@{domain}");
                    }
                }
                flush(&mut text, &mut out);
                out.push(Token::Mention(acct));
                i += len;
                continue;
            }
        }
        if at_boundary && c == '#' {
            let tag: String = chars[i + 1..]
                .iter()
                .take_while(|c| word_char(**c))
                .collect();
            if !tag.is_empty() && !tag.chars().all(|c| c.is_ascii_digit()) {
                flush(&mut text, &mut out);
                i += 1 + tag.chars().count();
                out.push(Token::Hashtag(tag));
                continue;
            }
        }
        text.push(c);
        i += 1;
    }
    flush(&mut text, &mut out);
    out
}

fn flush(text: &mut String, out: &mut Vec<Token>) {
    if !text.is_empty() {
        out.push(Token::Text(std::mem::take(text)));
    }
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The stream of a post.
pub fn post_stream(post_id: Uuid) -> StreamId {
    StreamId::composed(format!("post-{post_id}"))
}

/// The ActivityPub id of a local post.
pub fn post_uri(base: &str, post_id: Uuid) -> String {
    format!("{}/posts/{post_id}", base.trim_end_matches('/'))
}

/// A post was published.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PostCreated {
    pub post_id: Uuid,
    pub uri: String,
    /// The author's ActivityPub id.
    pub author: String,
    /// Sanitised HTML.
    pub content: String,
    /// The text it was rendered from.
    pub source: String,
    /// Content warning.
    pub summary: Option<String>,
    pub sensitive: bool,
    pub visibility: Visibility,
    /// The post this one replies to, and its author.
    pub in_reply_to: Option<String>,
    pub in_reply_to_author: Option<String>,
    /// The first post of the thread (itself, for a post that replies to none).
    pub thread_root: String,
    /// Mentioned actors' ids.
    pub mentions: Vec<String>,
    pub hashtags: Vec<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub published: DateTime<Utc>,
    /// The Create{Note} to deliver.
    pub activity: Value,
}

/// A post's text or content warning changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PostEdited {
    pub post_id: Uuid,
    pub uri: String,
    pub author: String,
    pub content: String,
    pub source: String,
    pub summary: Option<String>,
    pub sensitive: bool,
    pub mentions: Vec<String>,
    pub hashtags: Vec<String>,
    pub updated: DateTime<Utc>,
    /// The Update{Note} to deliver.
    pub activity: Value,
}

/// A post was deleted; it now answers as a Tombstone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PostDeleted {
    pub post_id: Uuid,
    pub uri: String,
    pub author: String,
    pub deleted_at: DateTime<Utc>,
    /// The Delete{Tombstone} to deliver.
    pub activity: Value,
}

/// What a post's stream says so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PostState {
    pub created: Option<PostCreated>,
    /// The current content, after edits.
    pub current: Option<PostEdited>,
    pub deleted: bool,
}

impl PostState {
    pub fn apply(&mut self, event: &DomainEvent) {
        match event {
            DomainEvent::PostCreated(e) => self.created = Some(e.clone()),
            DomainEvent::PostEdited(e) => self.current = Some(e.clone()),
            DomainEvent::PostDeleted(_) => self.deleted = true,
            _ => {}
        }
    }

    /// The post, if it exists and is not deleted.
    pub fn live(&self) -> Option<&PostCreated> {
        self.created.as_ref().filter(|_| !self.deleted)
    }

    /// The mentions in force (after edits).
    pub fn mentions(&self) -> &[String] {
        match (&self.current, &self.created) {
            (Some(edit), _) => &edit.mentions,
            (None, Some(created)) => &created.mentions,
            (None, None) => &[],
        }
    }
}

/// How the acting actor stands towards someone else's post.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Standing {
    /// The acting actor follows the post's author (accepted).
    pub follows_author: bool,
    /// Either of them blocks the other.
    pub blocked: bool,
}

/// What decisions about a post read of it, whether it was written here
/// ([`PostCreated`]) or arrived from another server
/// ([`RemotePostCreated`](crate::remote::RemotePostCreated)).
pub trait PostFacts: std::fmt::Debug {
    /// Its ActivityPub id.
    fn uri(&self) -> &str;
    /// Its author's ActivityPub id.
    fn author(&self) -> &str;
    fn visibility(&self) -> Visibility;
}

impl PostFacts for PostCreated {
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

/// Whether `viewer` may see `post`; `mentions` are the ones in force.
pub fn can_see<P: PostFacts + ?Sized>(
    post: &P,
    mentions: &[String],
    viewer: Option<&str>,
    standing: Standing,
) -> bool {
    if viewer == Some(post.author()) {
        return true;
    }
    if standing.blocked {
        return false;
    }
    let mentioned = viewer.is_some_and(|v| mentions.iter().any(|m| m == v));
    match post.visibility() {
        Visibility::Public | Visibility::Unlisted => true,
        Visibility::FollowersOnly => mentioned || (viewer.is_some() && standing.follows_author),
        Visibility::Direct => mentioned,
    }
}

/// Why a post command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    #[error("a post needs some text")]
    Empty,
    #[error("a post is at most {MAX_POST_LEN} characters")]
    TooLong,
    #[error("a content warning is at most {MAX_SUMMARY_LEN} characters")]
    SummaryTooLong,
    #[error("no such post")]
    NotFound,
    #[error("the post was deleted")]
    Deleted,
    #[error("only its author can change a post")]
    NotAuthor,
    #[error("you cannot interact with this actor: one of you blocks the other")]
    Blocked,
    #[error("a direct post must mention someone")]
    DirectWithoutRecipients,
}

impl PostError {
    /// A stable code for clients.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "CONTENT_EMPTY",
            Self::TooLong => "CONTENT_TOO_LONG",
            Self::SummaryTooLong => "SUMMARY_TOO_LONG",
            Self::NotFound => "NOT_FOUND",
            Self::Deleted => "DELETED",
            Self::NotAuthor => "NOT_AUTHOR",
            Self::Blocked => "BLOCKED",
            Self::DirectWithoutRecipients => "NO_RECIPIENTS",
        }
    }
}

/// The author of a new post, as the command needs them.
#[derive(Clone, Debug)]
pub struct Author {
    pub uri: String,
    pub followers: String,
}

/// Publish a post (or a reply).
#[derive(Clone, Debug)]
pub struct CreatePost {
    pub post_id: Uuid,
    pub text: String,
    pub summary: Option<String>,
    pub sensitive: bool,
    pub visibility: Visibility,
    /// The mentions in `text` that resolved to actors, and the author of
    /// the post replied to: how tags name them.
    pub mentions: Vec<Mention>,
    /// A message in a server's channel: addressed to the server, which
    /// announces it to its members.
    pub audience: Option<Audience>,
}

/// Where a message in a server goes (FEP-1b12): the server (a `Group`),
/// named as `audience` and addressed, and its channel (if the server has
/// channels), named as `context`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audience {
    pub server: String,
    pub channel: Option<String>,
}

/// The post being replied to, and how the author stands towards its author.
#[derive(Clone, Copy, Debug)]
pub struct ReplyTarget<'a> {
    /// A local post's [`PostState`], or a remote post's
    /// [`RemoteParent`](crate::remote::RemoteParent).
    pub parent: &'a dyn ReplyParent,
    pub standing: Standing,
}

/// What a reply needs of the post it answers, local or remote.
pub trait ReplyParent: std::fmt::Debug {
    /// The post as created; `None` when it is unknown.
    fn post(&self) -> Option<&dyn PostFacts>;
    fn deleted(&self) -> bool;
    /// The actors it mentions now (after edits).
    fn mentioned(&self) -> &[String];
    /// The first post of its thread (the post itself when it starts one).
    fn thread_root(&self) -> Option<&str>;
}

impl ReplyParent for PostState {
    fn post(&self) -> Option<&dyn PostFacts> {
        self.created.as_ref().map(|p| p as &dyn PostFacts)
    }

    fn deleted(&self) -> bool {
        self.deleted
    }

    fn mentioned(&self) -> &[String] {
        self.mentions()
    }

    fn thread_root(&self) -> Option<&str> {
        self.created.as_ref().map(|p| p.thread_root.as_str())
    }
}

fn check_text(text: &str, summary: &Option<String>) -> Result<(String, Option<String>), PostError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(PostError::Empty);
    }
    if text.chars().count() > MAX_POST_LEN {
        return Err(PostError::TooLong);
    }
    let summary = summary
        .as_ref()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    if summary
        .as_ref()
        .is_some_and(|s| s.chars().count() > MAX_SUMMARY_LEN)
    {
        return Err(PostError::SummaryTooLong);
    }
    Ok((text.to_owned(), summary))
}

/// The Note's tags: a `Mention` for every actor in `rendered.mentions`
/// (named as written when `mentions` has it), then its hashtags.
fn tags(rendered: &Rendered, mentions: &[Mention], base: &str) -> Vec<Value> {
    let base = base.trim_end_matches('/');
    let mut tags: Vec<Value> = rendered
        .mentions
        .iter()
        .map(|uri| match mentions.iter().find(|m| m.uri == *uri) {
            Some(m) => json!({ "type": "Mention", "href": uri, "name": format!("@{}", m.acct) }),
            None => json!({ "type": "Mention", "href": uri }),
        })
        .collect();
    tags.extend(rendered.hashtags.iter().map(|t| {
        json!({ "type": "Hashtag", "href": format!("{base}/tags/{t}"), "name": format!("#{t}") })
    }));
    tags
}

/// A reply mentions the author of the post it answers (unless that is its
/// own author), as Mastodon's replies do: the replied-to author is then
/// addressed by every visibility, tagged, and may see the reply.
fn mention_replied_to(rendered: &mut Rendered, author: &str, replied_to: Option<&str>) {
    if let Some(replied_to) = replied_to
        && replied_to != author
        && !rendered.mentions.iter().any(|m| m == replied_to)
    {
        rendered.mentions.push(replied_to.to_owned());
    }
}

/// The Note of a post, as served and delivered.
#[allow(clippy::too_many_arguments)]
fn note(
    post: &PostCreated,
    content: &str,
    summary: &Option<String>,
    sensitive: bool,
    tags: Vec<Value>,
    updated: Option<DateTime<Utc>>,
) -> Value {
    let mut note = json!({
        "id": post.uri,
        "type": "Note",
        "attributedTo": post.author,
        "content": content,
        // Milliseconds, as `updated`: peers order a conversation by
        // `published`, and a reply often comes within the second of the
        // post it answers.
        "published": post.published.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "to": post.to,
        "cc": post.cc,
        "sensitive": sensitive,
        "summary": summary,
        "inReplyTo": post.in_reply_to,
        "url": post.uri,
        "tag": tags,
    });
    if let Some(updated) = updated {
        // Milliseconds: a peer keeps an edit only if it is newer than the
        // last one it has, and edits can come within a second.
        note["updated"] = json!(updated.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    }
    note
}

/// Decides a new post or reply by `author`.
pub fn create(
    author: &Author,
    command: CreatePost,
    reply_to: Option<ReplyTarget<'_>>,
    base: &str,
    now: DateTime<Utc>,
) -> Result<Vec<DomainEvent>, PostError> {
    let (source, summary) = check_text(&command.text, &command.summary)?;
    let (in_reply_to, in_reply_to_author, thread_root) = match &reply_to {
        Some(target) => {
            let Some(parent) = target.parent.post() else {
                return Err(PostError::NotFound);
            };
            if target.parent.deleted() {
                return Err(PostError::Deleted);
            }
            if target.standing.blocked {
                return Err(PostError::Blocked);
            }
            if !can_see(
                parent,
                target.parent.mentioned(),
                Some(&author.uri),
                target.standing,
            ) {
                return Err(PostError::NotFound);
            }
            (
                Some(parent.uri().to_owned()),
                Some(parent.author().to_owned()),
                target
                    .parent
                    .thread_root()
                    .unwrap_or(parent.uri())
                    .to_owned(),
            )
        }
        None => (None, None, post_uri(base, command.post_id)),
    };
    let mut rendered = render(&source, &command.mentions, base);
    mention_replied_to(&mut rendered, &author.uri, in_reply_to_author.as_deref());
    if command.visibility == Visibility::Direct && rendered.mentions.is_empty() {
        return Err(PostError::DirectWithoutRecipients);
    }
    let uri = post_uri(base, command.post_id);
    let (mut to, cc) = command
        .visibility
        .audience(&author.followers, &rendered.mentions);
    if let Some(audience) = &command.audience
        && !to.contains(&audience.server)
    {
        to.insert(0, audience.server.clone());
    }
    let mut post = PostCreated {
        post_id: command.post_id,
        uri: uri.clone(),
        author: author.uri.clone(),
        content: rendered.html.clone(),
        source,
        sensitive: command.sensitive || summary.is_some(),
        summary,
        visibility: command.visibility,
        in_reply_to,
        in_reply_to_author,
        thread_root,
        mentions: rendered.mentions.clone(),
        hashtags: rendered.hashtags.clone(),
        to,
        cc,
        published: now,
        activity: Value::Null,
    };
    let mut object = note(
        &post,
        &post.content,
        &post.summary,
        post.sensitive,
        tags(&rendered, &command.mentions, base),
        None,
    );
    if let Some(audience) = &command.audience {
        object["audience"] = json!(audience.server);
        if let Some(channel) = &audience.channel {
            object["context"] = json!(channel);
        }
    }
    post.activity = activitypub::activity(
        &format!("{uri}/activity"),
        "Create",
        &author.uri,
        object,
        &post.to,
        &post.cc,
    );
    post.activity["published"] = json!(now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    if let Some(audience) = &command.audience {
        post.activity["audience"] = json!(audience.server);
    }
    Ok(vec![DomainEvent::PostCreated(post)])
}

/// Change the text or content warning of a post.
#[derive(Clone, Debug)]
pub struct EditPost {
    pub text: String,
    pub summary: Option<String>,
    pub sensitive: bool,
    /// As in [`CreatePost::mentions`].
    pub mentions: Vec<Mention>,
}

/// Decides an edit by `editor`.
pub fn edit(
    state: &PostState,
    editor: &str,
    command: EditPost,
    base: &str,
    now: DateTime<Utc>,
) -> Result<Vec<DomainEvent>, PostError> {
    let post = state.created.as_ref().ok_or(PostError::NotFound)?;
    if state.deleted {
        return Err(PostError::Deleted);
    }
    if post.author != editor {
        return Err(PostError::NotAuthor);
    }
    let (source, summary) = check_text(&command.text, &command.summary)?;
    let mut rendered = render(&source, &command.mentions, base);
    mention_replied_to(&mut rendered, editor, post.in_reply_to_author.as_deref());
    let sensitive = command.sensitive || summary.is_some();
    let object = note(
        post,
        &rendered.html,
        &summary,
        sensitive,
        tags(&rendered, &command.mentions, base),
        Some(now),
    );
    let activity_id = format!("{}#updates/{}", post.uri, now.timestamp_micros());
    let activity =
        activitypub::activity(&activity_id, "Update", editor, object, &post.to, &post.cc);
    Ok(vec![DomainEvent::PostEdited(PostEdited {
        post_id: post.post_id,
        uri: post.uri.clone(),
        author: post.author.clone(),
        content: rendered.html,
        source,
        summary,
        sensitive,
        mentions: rendered.mentions,
        hashtags: rendered.hashtags,
        updated: now,
        activity,
    })])
}

/// Decides a deletion by `actor`.
pub fn delete(
    state: &PostState,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Vec<DomainEvent>, PostError> {
    let post = state.created.as_ref().ok_or(PostError::NotFound)?;
    if state.deleted {
        return Err(PostError::Deleted);
    }
    if post.author != actor {
        return Err(PostError::NotAuthor);
    }
    let tombstone = json!({ "id": post.uri, "type": "Tombstone" });
    let activity = activitypub::activity(
        &format!("{}#delete", post.uri),
        "Delete",
        actor,
        tombstone,
        &post.to,
        &post.cc,
    );
    Ok(vec![DomainEvent::PostDeleted(PostDeleted {
        post_id: post.post_id,
        uri: post.uri.clone(),
        author: post.author.clone(),
        deleted_at: now,
        activity,
    })])
}
