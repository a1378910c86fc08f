//! Every payload of `shared/fixtures/activitypub/MANIFEST.tsv`, captured
//! from Mastodon, Pleroma, Misskey, Lemmy, PeerTube, Fedify, Mobilizon,
//! Bonfire and others, delivered to a real Chorus inbox and followed to the
//! end: accept rows are stored and then applied or recorded as not applied
//! (unsupported, ignored, refused), reject rows are refused at the door or
//! by the interpreter, and leave nothing in the read models.
//!
//! How a payload is replayed:
//! - Each host a payload names (in ids, actors, links; not vocabulary hosts
//!   such as www.w3.org) is served by a server of its own on 127.0.0.1, and
//!   the payload is rewritten so (`https://mastodon.example.org` becomes
//!   `http://127.0.0.1:PORT` everywhere in its strings). Every row gets fresh
//!   servers, so rows never share an origin (several fixtures reuse one
//!   activity id) and hosts stay apart within a row (a forged origin stays
//!   forged). `@context` and `type` values are left as they are, as is
//!   everything else: extensions, embedded signatures, proofs. Nothing on the
//!   internet is ever contacted.
//! - The activity's actor is served there with a test key and signs the
//!   delivery. Bare objects are wrapped in a `Create` by their author.
//! - Embedded posts (`Note`, `Article`, …) are also served at their ids, as
//!   their origin would; objects named only by id are not, so activities that
//!   need them fetched end `ignored`.
//! - What the source server's tests aim at their own users and posts is
//!   aimed at ours: the object of a `Follow` or `Block` is a local account,
//!   that of a `Like` or `EmojiReact` a local post. An `Undo` with its
//!   activity embedded gets that activity delivered first, so there is
//!   something to undo.
//! - Actor documents are served (with the test key in place of theirs) as
//!   the author of a `Follow` of a local account. A `CryptographicKey` is
//!   served as the key such a `Follow` is signed with.
//! - Collections and JSON-LD contexts are no inbox payloads: skipped, counted.
//!
//! Where Chorus ends differently from what the row's kind and types suggest,
//! [`exception`] says so and why. Every mismatch is collected and the test
//! fails once, at the end, with the whole list.

use std::fs;

use chorus_tests::app::{Account, TestApp, spawn_app};
use chorus_tests::remote::{
    DocumentServer, RemoteActor, TestKey, deliver, signer, signer_document,
};
use serde_json::{Value, json};

const DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/fixtures/activitypub/"
);

/// Hosts of vocabularies, not of servers: their IRIs (the public
/// collection, namespace terms) are never rewritten.
const VOCABULARY_HOSTS: &[&str] = &[
    "www.w3.org",
    "w3id.org",
    "purl.org",
    "purl.archive.org",
    "schema.org",
    "ostatus.org",
    "litepub.social",
    "join-lemmy.org",
    "joinmastodon.org",
    "joinpeertube.org",
    "joinmobilizon.org",
    "misskey-hub.net",
    "webfinger.net",
    "diasporafoundation.org",
    "gotosocial.org",
    "jsonld.mitra.social",
    "smithereen.software",
];

/// Properties left exactly as captured: contexts and type names.
const KEPT: &[&str] = &["@context", "type", "@type"];

/// The object types Chorus shows as posts.
const POST_TYPES: &[&str] = &[
    "Note",
    "Article",
    "Page",
    "Question",
    "Video",
    "Audio",
    "Image",
    "Event",
    "ChatMessage",
];

const ACTOR_TYPES: &[&str] = &["Person", "Service", "Group", "Application", "Organization"];

struct Row {
    path: String,
    kind: String,
    activity_type: String,
    expectation: String,
    object_type: String,
}

fn rows() -> Vec<Row> {
    let manifest = fs::read_to_string(format!("{DIR}MANIFEST.tsv"))
        .unwrap_or_else(|e| panic!("reading {DIR}MANIFEST.tsv: {e}"));
    let mut lines = manifest.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no column {name} in the manifest"))
    };
    let (path, kind, activity_type, expectation, object_type) = (
        column("path"),
        column("kind"),
        column("activity_type"),
        column("expectation"),
        column("object_type"),
    );
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let cells: Vec<&str> = line.split('\t').collect();
            let cell = |i: usize| cells.get(i).copied().unwrap_or_default().to_owned();
            Row {
                path: cell(path),
                kind: cell(kind),
                activity_type: cell(activity_type),
                expectation: cell(expectation),
                object_type: cell(object_type),
            }
        })
        .collect()
}

fn load(path: &str) -> Value {
    let text = fs::read_to_string(format!("{DIR}{path}")).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The body of a captured HTTP response.
fn http_body(path: &str) -> Value {
    let text = fs::read_to_string(format!("{DIR}{path}")).unwrap_or_else(|e| panic!("{path}: {e}"));
    let body = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))
        .map(|(_, body)| body)
        .unwrap_or_else(|| panic!("{path}: no body"));
    serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ---------------------------------------------------------------------------
// Reading payloads

/// The id of a value that is an id, an object with one, or an array of those.
fn first_id(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Object(map) => map
            .get("id")
            .or_else(|| map.get("@id"))
            .or_else(|| map.get("href"))
            .and_then(Value::as_str)
            .map(|s| s.trim().to_owned()),
        Value::Array(items) => items.iter().find_map(|i| first_id(Some(i))),
        _ => None,
    }
}

fn own_id(value: &Value) -> Option<String> {
    value
        .get("id")
        .or_else(|| value.get("@id"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The first type name, without an `as:` prefix.
fn type_of(value: &Value) -> String {
    let raw = match value.get("type").or_else(|| value.get("@type")) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .find_map(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        _ => String::new(),
    };
    raw.trim_start_matches("as:").to_owned()
}

/// `scheme://authority` of an absolute http(s) URL, and the authority.
fn origin_of(url: &str) -> Option<(String, String)> {
    let url = url.trim();
    let scheme = ["https://", "http://"].into_iter().find(|s| {
        url.get(..s.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(s))
    })?;
    let rest = &url[scheme.len()..];
    let end = rest
        .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    (!authority.is_empty()).then(|| (format!("{scheme}{authority}"), authority.to_owned()))
}

/// Every authority the payload names in a whole-URL string, outside kept
/// properties, except vocabulary hosts.
fn authorities(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::String(s) => {
            if let Some((_, authority)) = origin_of(s)
                && !VOCABULARY_HOSTS.contains(&authority.to_ascii_lowercase().as_str())
                && !found.contains(&authority)
            {
                found.push(authority);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| authorities(i, found)),
        Value::Object(map) => map
            .iter()
            .filter(|(k, _)| !KEPT.contains(&k.as_str()))
            .for_each(|(_, v)| authorities(v, found)),
        _ => {}
    }
}

/// Whole-URL strings outside kept properties that are neither on 127.0.0.1
/// nor of a vocabulary: what Chorus could fetch from the internet.
fn internet_urls(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::String(s) => {
            if let Some((_, authority)) = origin_of(s) {
                let host = authority.to_ascii_lowercase();
                if !host.starts_with("127.0.0.1:") && !VOCABULARY_HOSTS.contains(&host.as_str()) {
                    found.push(s.clone());
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| internet_urls(i, found)),
        Value::Object(map) => map
            .iter()
            .filter(|(k, _)| !KEPT.contains(&k.as_str()))
            .for_each(|(_, v)| internet_urls(v, found)),
        _ => {}
    }
}

/// `text` with every `origin` that is not the start of a longer authority
/// replaced by `base`.
fn replace_origin(text: &str, origin: &str, base: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(origin) {
        let after = &rest[at + origin.len()..];
        let whole = after.chars().next().is_none_or(|c| {
            !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_' | '{' | '}' | '@'))
        });
        out.push_str(&rest[..at]);
        out.push_str(if whole { base } else { origin });
        rest = after;
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------
// The remote side

/// The servers standing in for the hosts one row names.
struct Hosts {
    /// (authority as captured, its server).
    servers: Vec<(String, DocumentServer)>,
}

impl Hosts {
    /// Servers for every host `value` names, and for `extra` authorities.
    async fn for_payload(value: &Value, extra: &[&str]) -> Self {
        let mut found = Vec::new();
        authorities(value, &mut found);
        for authority in extra {
            if !found.iter().any(|f| f == authority) {
                found.push((*authority).to_owned());
            }
        }
        let mut servers = Vec::with_capacity(found.len());
        for authority in found {
            servers.push((authority, DocumentServer::start().await));
        }
        Self { servers }
    }

    /// `value` with every captured host moved to its server.
    fn rewrite(&self, value: &Value) -> Value {
        match value {
            Value::String(s) => {
                let mut text = s.clone();
                for (authority, server) in &self.servers {
                    for scheme in ["https://", "http://"] {
                        text = replace_origin(
                            &text,
                            &format!("{scheme}{authority}"),
                            &server.base_url,
                        );
                    }
                }
                Value::String(text)
            }
            Value::Array(items) => Value::Array(items.iter().map(|i| self.rewrite(i)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let v = if KEPT.contains(&k.as_str()) {
                            v.clone()
                        } else {
                            self.rewrite(v)
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    fn rewrite_url(&self, url: &str) -> String {
        self.rewrite(&json!(url)).as_str().unwrap_or(url).to_owned()
    }

    /// The server `url` (rewritten) lives on.
    fn server_of(&self, url: &str) -> Option<&DocumentServer> {
        let (origin, _) = origin_of(url)?;
        self.servers
            .iter()
            .map(|(_, s)| s)
            .find(|s| s.base_url == origin)
    }

    /// Serves `document` at `url`, which must be on one of the servers.
    fn serve(&self, url: &str, document: Value) {
        self.server_of(url)
            .unwrap_or_else(|| panic!("{url} is on none of the row's servers"))
            .serve(url, document);
    }

    /// `LIKE` patterns matching every URL of these servers.
    fn patterns(&self) -> Vec<String> {
        self.servers
            .iter()
            .flat_map(|(_, s)| {
                let b = &s.base_url;
                [
                    b.clone(),
                    format!("{b}/%"),
                    format!("{b}?%"),
                    format!("{b}#%"),
                ]
            })
            .collect()
    }

    /// A signer for `actor` (rewritten), its document served with the test key.
    fn actor(&self, actor: &str) -> RemoteActor {
        let uri = actor.split('#').next().unwrap_or(actor);
        let signer = signer(uri, &format!("{uri}#main-key"), TestKey::shared(0));
        self.serve(uri, signer_document(&signer));
        signer
    }

    /// Serves every post embedded in `value` at its id, as its origin would
    /// (ids with a fragment name part of a document, and are left out).
    fn serve_embedded_posts(&self, value: &Value, depth: usize) {
        match value {
            Value::Array(items) => items
                .iter()
                .for_each(|i| self.serve_embedded_posts(i, depth)),
            Value::Object(map) => {
                if depth > 0
                    && POST_TYPES.contains(&type_of(value).as_str())
                    && let Some(id) = own_id(value).filter(|id| !id.contains('#'))
                    && self.server_of(&id).is_some()
                {
                    let mut document = value.clone();
                    if document.get("@context").is_none()
                        && let Some(map) = document.as_object_mut()
                    {
                        map.insert(
                            "@context".into(),
                            json!("https://www.w3.org/ns/activitystreams"),
                        );
                    }
                    self.serve(&id, document);
                }
                map.iter()
                    .filter(|(k, _)| !KEPT.contains(&k.as_str()))
                    .for_each(|(_, v)| self.serve_embedded_posts(v, depth + 1));
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------
// Expectations

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Effect {
    Post,
    Follow,
    Favorite,
    Reblog,
    Block,
}

const EFFECTS: [Effect; 5] = [
    Effect::Post,
    Effect::Follow,
    Effect::Favorite,
    Effect::Reblog,
    Effect::Block,
];

impl Effect {
    /// Rows of the read model this effect lands in, made by the row's hosts.
    fn sql(self) -> &'static str {
        match self {
            Self::Post => {
                "SELECT count(*) FROM posts WHERE uri LIKE ANY($1) OR author LIKE ANY($1)"
            }
            Self::Follow => "SELECT count(*) FROM follows WHERE follower LIKE ANY($1)",
            Self::Favorite => "SELECT count(*) FROM favorites WHERE actor LIKE ANY($1)",
            Self::Reblog => "SELECT count(*) FROM reblogs WHERE actor LIKE ANY($1)",
            Self::Block => "SELECT count(*) FROM blocks WHERE blocker LIKE ANY($1)",
        }
    }
}

/// How a row must end.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expected {
    /// Refused at the door with this status: nothing stored.
    Door(u16),
    /// Stored (202), then applied (`None`) or not with this outcome, leaving
    /// rows in exactly these read models.
    Stored(Option<&'static str>, Vec<Effect>),
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Door(status) => write!(f, "{status} at the door"),
            Self::Stored(outcome, effects) => {
                write!(f, "202, {}, {effects:?}", outcome.unwrap_or("applied"))
            }
        }
    }
}

fn applied(effects: &[Effect]) -> Expected {
    Expected::Stored(None, effects.to_vec())
}

fn not_applied(outcome: &'static str) -> Expected {
    Expected::Stored(Some(outcome), vec![])
}

/// Rows that end otherwise than their kind and types suggest: how, why, and
/// what the refusal or the recorded reason says.
/// The first six are the rows `domain/src/inbound/fixtures.rs` documents as
/// deliberate divergences from their source servers.
fn exception(path: &str) -> Option<(Expected, &'static str, &'static str)> {
    Some(match path {
        "rebased/activitypub-client-post-activity.json" => (
            Expected::Door(400),
            "no id: a client-to-server outbox submission, not a delivery (domain divergence)",
            "has no `id`",
        ),
        "rebased/fep-e232.json" => (
            Expected::Door(400),
            "no id: Pleroma invents one, Chorus keys deliveries by id (domain divergence)",
            "has no `id`",
        ),
        "fedify/example.com/person2.json"
        | "fedify/example.com/users/handle.json"
        | "fedify/remote.domain/users/bob.json" => (
            Expected::Door(401),
            "a Person without inbox cannot be read, so neither can its key (domain divergence)",
            "has no `inbox`",
        ),
        "fedify/example.com/key2.json" => (
            Expected::Door(401),
            "a key without owner speaks for nobody: its signature is refused (domain divergence)",
            "names no `owner`",
        ),
        "lemmy/gnusocial/objects/group.json" => (
            Expected::Door(401),
            "the group publishes actor/2's key; a key owned by another actor is not the group's",
            "does not list the key",
        ),
        "rebased/mastodon-vote.json" => (
            not_applied("unsupported"),
            "a poll vote (Create of a Note with only a name)",
            "poll votes are not supported",
        ),
        "mobilizon/mobilizon-post-activity-group.json" => (
            not_applied("refused"),
            "the event is attributedTo the group but created by a member: Chorus takes posts from their author only",
            "is attributed to",
        ),
        "bonfire-activity_pub/peertube/video.json" => (
            not_applied("refused"),
            "Bonfire's mock: delivered by mocked.local, attributedTo peertube.local",
            "is attributed to",
        ),
        "lemmy/lemmy/activities/community/update_community.json" => (
            not_applied("refused"),
            "a moderator updating a community on another server: an actor may only update itself",
            "may only update itself",
        ),
        "rebased/mastodon-announce-private.json" => (
            Expected::Stored(Some("refused"), vec![Effect::Post]),
            "the post is kept, but a followers-only post cannot be reblogged",
            "only public and unlisted",
        ),
        "rebased/mastodon-announce.json" | "lemmy/peertube/activities/announce_video.json" => (
            not_applied("ignored"),
            "the announced post is named by id only and not served: it cannot be fetched",
            "could not be fetched",
        ),
        "rebased/mastodon-undo-announce.json" => (
            not_applied("ignored"),
            "the undone Announce names its post by id only: nothing was reblogged",
            "not reblogged",
        ),
        "rebased/mastodon-undo-like-compact-object.json" => (
            not_applied("ignored"),
            "the Like is named by id only and was never received here",
            "undone activity is unknown",
        ),
        // Activities are stored once per id, so Chorus refuses an id on
        // another host than the actor's (FEDERATION.md, 400).
        "rebased/misskey-like.json" => (
            Expected::Door(400),
            "Pleroma's fixture gives its mastodon.example.org test actor a misskey.xyz id",
            "not on its actor's server",
        ),
        "rebased/tesla_mock/mobilizon-event-join-accept.json" => (
            Expected::Door(400),
            "the Accept's id is on mobilizon.mkljczk.pl, its actor on mobilizon.org",
            "not on its actor's server",
        ),
        "rebased/emoji-reaction-too-long.json" => (
            Expected::Door(400),
            "two emoji: a reaction is judged at the door, from the body alone",
            "exactly one emoji",
        ),
        "rebased/tesla_mock/https__info.pleroma.site_activity.json" => (
            not_applied("refused"),
            "a note on info.pleroma.site claiming an author on mastodon.example.org: refused by the interpreter",
            "not on the actor's server",
        ),
        "fedify/example.com/wrong-type.json" => (
            Expected::Door(400),
            "`@type: https://example.com/` is no ActivityStreams type",
            "not an ActivityStreams type",
        ),
        _ => return None,
    })
}

/// What a row's kind and types suggest.
fn expected(row: &Row) -> Expected {
    let object = row.object_type.as_str();
    let post = POST_TYPES.contains(&object);
    match row.kind.as_str() {
        "actor" | "raw-http" => applied(&[Effect::Follow]),
        "object" => {
            let first = row.activity_type.split(',').next().unwrap_or_default();
            if first == "CryptographicKey" {
                applied(&[Effect::Follow])
            } else if POST_TYPES.contains(&first) {
                applied(&[Effect::Post])
            } else {
                not_applied("unsupported")
            }
        }
        _ => match row.activity_type.as_str() {
            "Create" if post => applied(&[Effect::Post]),
            "Update" | "Delete" if ACTOR_TYPES.contains(&object) => applied(&[]),
            // A post never received here: nothing to delete.
            "Delete" => not_applied("ignored"),
            "Follow" => applied(&[Effect::Follow]),
            "Like" => applied(&[Effect::Favorite]),
            "Block" => applied(&[Effect::Block]),
            // The post is kept (fetched from its origin if need be) and reblogged.
            "Announce" => applied(&[Effect::Post, Effect::Reblog]),
            // A Follow of someone else than a local actor: nothing pending.
            "Accept" | "Reject" if object == "Follow" => not_applied("ignored"),
            // The undone activity was delivered first: the Undo removes it.
            "Undo" if matches!(object, "Follow" | "Like" | "Block") => applied(&[]),
            _ => not_applied("unsupported"),
        },
    }
}

// ---------------------------------------------------------------------------
// The local side and what became of a delivery

struct Local {
    account: Account,
    /// A public post of the account.
    post: String,
}

/// Aims what the source server's tests aim at their own users and posts at
/// ours (see the module comment).
fn aim_at_local(activity: &mut Value, local: &Local) {
    let Some(map) = activity.as_object_mut() else {
        return;
    };
    match type_of(&Value::Object(map.clone())).as_str() {
        "Follow" | "Block" => {
            map.insert("object".into(), json!(local.account.uri));
        }
        "Like" | "EmojiReact" | "EmojiReaction" => {
            map.insert("object".into(), json!(local.post));
        }
        "Undo" => {
            if let Some(inner) = map.get_mut("object").filter(|o| o.is_object()) {
                aim_at_local(inner, local);
            }
        }
        _ => {}
    }
}

/// What became of one delivery.
#[derive(Debug, Default)]
struct Ended {
    status: u16,
    body: String,
    /// `Some` when the inbox stored it: (outcome, reason).
    received: Option<(Option<String>, Option<String>)>,
    effects: Vec<Effect>,
    /// Notifications of local accounts caused by the row's hosts.
    notified: i64,
    /// URLs of the payload still on the internet (there must be none).
    leaks: Vec<String>,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.status)?;
        if self.notified > 0 {
            write!(f, ", {} notifications", self.notified)?;
        }
        if !self.leaks.is_empty() {
            write!(f, ", internet URLs left: {:?}", self.leaks)?;
        }
        match &self.received {
            Some((outcome, reason)) => write!(
                f,
                ", {} ({}), {:?}",
                outcome.as_deref().unwrap_or("applied"),
                reason.as_deref().unwrap_or("-"),
                self.effects
            ),
            None => write!(
                f,
                " not stored: {}, {:?}",
                self.body.chars().take(160).collect::<String>(),
                self.effects
            ),
        }
    }
}

impl Ended {
    /// Whether it ended as expected; whatever is not applied notifies nobody.
    fn matches(&self, expected: &Expected) -> bool {
        self.leaks.is_empty()
            && match expected {
                Expected::Door(status) => {
                    self.status == *status
                        && self.received.is_none()
                        && self.effects.is_empty()
                        && self.notified == 0
                }
                Expected::Stored(outcome, effects) => {
                    self.status == 202
                        && self
                            .received
                            .as_ref()
                            .is_some_and(|(o, _)| o.as_deref() == *outcome)
                        && self.effects == *effects
                        && (outcome.is_none() || self.notified == 0)
                }
            }
    }

    fn short(&self) -> String {
        match &self.received {
            Some((outcome, _)) => format!(
                "{} {:<11} {:?}",
                self.status,
                outcome.as_deref().unwrap_or("applied"),
                self.effects
            ),
            None => format!("{} {:<11} {:?}", self.status, "-", self.effects),
        }
    }

    /// Why it was not applied: the interpreter's reason, or the door's answer.
    fn reason(&self) -> String {
        match &self.received {
            Some((_, reason)) => reason.clone().unwrap_or_default(),
            None if self.status == 202 => String::new(),
            None => self.body.clone(),
        }
    }
}

/// Delivers `activity` to the shared inbox as `signer`, waits until it is
/// interpreted and projected, and reads what became of it.
async fn deliver_and_settle(
    app: &TestApp,
    hosts: &Hosts,
    signer: &RemoteActor,
    activity: &Value,
) -> Ended {
    let mut leaks = Vec::new();
    internet_urls(activity, &mut leaks);
    let inbox = format!("{}/inbox", app.base_url);
    let (status, body) = deliver(&app.client, signer, &inbox, activity).await;
    app.settle().await;
    let received = match own_id(activity) {
        Some(id) => sqlx::query_as::<_, (Option<String>, Option<String>)>(
            "SELECT outcome, reason FROM received_activities WHERE activity_id = $1",
        )
        .bind(id)
        .fetch_optional(&app.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}")),
        None => None,
    };
    let notified: i64 =
        sqlx::query_scalar("SELECT count(*) FROM notifications WHERE actor LIKE ANY($1)")
            .bind(hosts.patterns())
            .fetch_one(&app.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    Ended {
        status,
        body,
        received,
        effects: effects(app, hosts).await,
        notified,
        leaks,
    }
}

/// The read models holding rows made by the row's hosts.
async fn effects(app: &TestApp, hosts: &Hosts) -> Vec<Effect> {
    let patterns = hosts.patterns();
    let mut found = Vec::new();
    for effect in EFFECTS {
        let count: i64 = sqlx::query_scalar(effect.sql())
            .bind(&patterns)
            .fetch_one(&app.pool)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", effect.sql()));
        if count > 0 {
            found.push(effect);
        }
    }
    found
}

/// Sanitised HTML has no script, handler, style or unsafe link.
fn unsafe_html(html: &str) -> Option<&'static str> {
    let lower = html.to_ascii_lowercase();
    for bad in ["<script", "javascript:", "style=", "<iframe"] {
        if lower.contains(bad) {
            return Some(bad);
        }
    }
    // " on…=" only counts inside a tag ("go on" is text).
    let handler = lower.split('<').skip(1).any(|tag| {
        let tag = tag.split('>').next().unwrap_or_default();
        tag.split_whitespace()
            .skip(1)
            .any(|attribute| attribute.starts_with("on") && attribute.contains('='))
    });
    handler.then_some("an event handler")
}

/// Checks the posts the row left: the one expected is there, none unsafe.
async fn check_posts(app: &TestApp, hosts: &Hosts, uri: Option<&str>, failures: &mut Vec<String>) {
    let posts: Vec<(String, String)> = sqlx::query_as(
        "SELECT uri, content FROM posts WHERE uri LIKE ANY($1) OR author LIKE ANY($1)",
    )
    .bind(hosts.patterns())
    .fetch_all(&app.pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    if let Some(uri) = uri
        && !posts.iter().any(|(u, _)| u == uri)
    {
        failures.push(format!(
            "no post {uri} among {:?}",
            posts.iter().map(|p| &p.0).collect::<Vec<_>>()
        ));
    }
    for (uri, content) in &posts {
        if let Some(bad) = unsafe_html(content) {
            failures.push(format!("the post {uri} kept {bad}: {content}"));
        }
    }
}

/// The `actors` row of `uri`: (kind, handle, display name, deleted).
async fn actor_row(app: &TestApp, uri: &str) -> Option<(String, String, Option<String>, bool)> {
    sqlx::query_as(
        "SELECT kind, handle, display_name, deleted_at IS NOT NULL FROM actors WHERE uri = $1",
    )
    .bind(uri)
    .fetch_optional(&app.pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Checks the actors read model shows `document` as read from it.
async fn check_actor_row(app: &TestApp, document: &Value, kind: &str, failures: &mut Vec<String>) {
    let Some(uri) = own_id(document) else {
        failures.push("the actor has no id".into());
        return;
    };
    let Some((found_kind, handle, display_name, _)) = actor_row(app, &uri).await else {
        failures.push(format!("{uri} is not in the actors read model"));
        return;
    };
    if found_kind != kind {
        failures.push(format!("{uri}: kind {found_kind}, expected {kind}"));
    }
    let username = document
        .get("preferredUsername")
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or_default();
    if handle != username {
        failures.push(format!("{uri}: handle {handle:?}, expected {username:?}"));
    }
    let name = document
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty());
    if display_name.as_deref() != name {
        failures.push(format!(
            "{uri}: display name {display_name:?}, expected {name:?}"
        ));
    }
}

// ---------------------------------------------------------------------------
// Replaying one row

/// What a replayed row left, beyond [`Ended`]: failures of finer checks.
struct Replay {
    ended: Ended,
    failures: Vec<String>,
    hosts: Hosts,
}

/// An activity row: rewritten, aimed, delivered by its actor (after the
/// activity it undoes, if embedded).
async fn replay_activity(app: &TestApp, local: &Local, row: &Row, captured: &Value) -> Replay {
    let hosts = Hosts::for_payload(captured, &["fixtures.invalid"]).await;
    let mut activity = hosts.rewrite(captured);
    aim_at_local(&mut activity, local);
    hosts.serve_embedded_posts(&activity, 0);
    // Without an actor (a client-to-server submission), an actor made up.
    let actor = first_id(activity.get("actor"))
        .unwrap_or_else(|| hosts.rewrite_url("https://fixtures.invalid/synthetic-actor"));
    let signer = hosts.actor(&actor);
    let mut failures = Vec::new();

    if row.activity_type == "Undo"
        && let Some(inner) = activity.get("object").filter(|o| o.is_object())
        && matches!(
            type_of(inner).as_str(),
            "Follow" | "Like" | "Block" | "Announce"
        )
    {
        let effect = match type_of(inner).as_str() {
            "Follow" => Some(Effect::Follow),
            "Like" => Some(Effect::Favorite),
            "Block" => Some(Effect::Block),
            _ => None,
        };
        let first = deliver_and_settle(app, &hosts, &signer, inner).await;
        if let Some(effect) = effect {
            let expected = applied(&[effect]);
            if !first.matches(&expected) {
                failures.push(format!(
                    "the undone {} delivered first: expected {expected}, got {first}",
                    type_of(inner)
                ));
            }
        }
    }

    let ended = deliver_and_settle(app, &hosts, &signer, &activity).await;
    if ended.effects.contains(&Effect::Post) {
        let uri = if row.activity_type == "Create" {
            first_id(activity.get("object"))
        } else {
            None
        };
        check_posts(app, &hosts, uri.as_deref(), &mut failures).await;
    }
    // A post embedded by another server than its own is taken from its
    // origin (FEDERATION.md), which must have been asked for it.
    if row.activity_type == "Announce"
        && ended.effects.contains(&Effect::Post)
        && let Some(object) = own_id(activity.get("object").unwrap_or(&Value::Null))
        && origin_of(&object).map(|o| o.0) != origin_of(&actor).map(|o| o.0)
        && let Some(origin) = hosts.server_of(&object)
        && !origin
            .fetched()
            .iter()
            .any(|f| object.ends_with(f.as_str()))
    {
        failures.push(format!("{object} was not fetched from its origin"));
    }
    // An actor's own Update and Delete show in the actors read model.
    let applied = ended.received.as_ref().is_some_and(|r| r.0.is_none());
    let kind = row.object_type.as_str();
    if applied && ACTOR_TYPES.contains(&kind) {
        if row.activity_type == "Update" {
            let profile = activity.get("object").cloned().unwrap_or_default();
            check_actor_row(app, &profile, kind, &mut failures).await;
        } else if row.activity_type == "Delete"
            && !actor_row(app, &actor).await.is_some_and(|a| a.3)
        {
            failures.push(format!("{actor} is not marked deleted"));
        }
    }
    Replay {
        ended,
        failures,
        hosts,
    }
}

/// An object row: wrapped in a Create by its author (or by an actor made
/// up on its host), as its author's server would deliver it.
async fn replay_object(app: &TestApp, captured: &Value) -> Replay {
    let object_id = own_id(captured);
    let host = object_id.as_deref().and_then(origin_of).map(|(o, _)| o);
    let actor = first_id(captured.get("attributedTo"))
        .or_else(|| first_id(captured.get("actor")))
        .or_else(|| first_id(captured.get("owner")))
        .unwrap_or_else(|| {
            format!(
                "{}/synthetic-actor",
                host.as_deref().unwrap_or("https://fixtures.invalid")
            )
        });
    // The Create comes from the actor's server, which names it.
    let actor_origin = origin_of(&actor).map(|(o, _)| o).unwrap_or_default();
    let mut create = json!({
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": format!("{actor_origin}/synthetic-create"),
        "type": "Create",
        "actor": actor,
        "object": captured,
    });
    for audience in ["to", "cc"] {
        if let Some(value) = captured.get(audience) {
            create[audience] = value.clone();
        }
    }
    let hosts = Hosts::for_payload(&create, &[]).await;
    let create = hosts.rewrite(&create);
    hosts.serve_embedded_posts(&create, 0);
    let actor = first_id(create.get("actor")).unwrap_or_default();
    let signer = hosts.actor(&actor);
    let ended = deliver_and_settle(app, &hosts, &signer, &create).await;
    let mut failures = Vec::new();
    if ended.effects.contains(&Effect::Post) {
        let uri = first_id(create.get("object"));
        check_posts(app, &hosts, uri.as_deref(), &mut failures).await;
    }
    Replay {
        ended,
        failures,
        hosts,
    }
}

/// A `CryptographicKey` row: served as the key a Follow of a local account
/// is signed with, its owner serving an actor that lists it.
async fn replay_key(app: &TestApp, local: &Local, captured: &Value) -> Replay {
    let hosts = Hosts::for_payload(captured, &["fixtures.invalid"]).await;
    let mut key = hosts.rewrite(captured);
    let pem = TestKey::shared(0).public_pem;
    key["publicKeyPem"] = json!(pem);
    let key_id = own_id(&key).unwrap_or_default();
    hosts.serve(&key_id, key.clone());
    // Without an owner, the Follow comes from an actor made up on the key's
    // host, which publishes a key of its own (not this one).
    let owner = first_id(key.get("owner")).unwrap_or_else(|| {
        let base = origin_of(&key_id).map(|(o, _)| o).unwrap_or_default();
        let made_up = hosts.actor(&format!("{base}/synthetic-actor"));
        made_up.uri
    });
    let signer = signer(&owner, &key_id, TestKey::shared(0));
    if key.get("owner").is_some() {
        hosts.serve(&owner, signer_document(&signer));
    }
    let base = origin_of(&owner).map(|(o, _)| o).unwrap_or_default();
    let follow = json!({
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": format!("{base}/interop/follow"),
        "type": "Follow",
        "actor": owner,
        "object": local.account.uri,
    });
    let ended = deliver_and_settle(app, &hosts, &signer, &follow).await;
    Replay {
        ended,
        failures: Vec::new(),
        hosts,
    }
}

/// An actor row: its document served (with the test key in place of its
/// own) as the author of a Follow of a local account.
async fn replay_actor(app: &TestApp, local: &Local, row: &Row, captured: &Value) -> Replay {
    let hosts = Hosts::for_payload(captured, &[]).await;
    let mut document = hosts.rewrite(captured);
    let actor = own_id(&document).unwrap_or_default();
    let pem = TestKey::shared(0).public_pem;
    let mut key_ids = Vec::new();
    match document.get_mut("publicKey") {
        Some(Value::Array(keys)) => {
            for key in keys.iter_mut().filter(|k| k.is_object()) {
                key["publicKeyPem"] = json!(pem);
                key_ids.extend(own_id(key));
            }
        }
        Some(key @ Value::Object(_)) => {
            key["publicKeyPem"] = json!(pem);
            key_ids.extend(own_id(key));
        }
        // A server that signs publishes a key: one is added where none is.
        _ => {
            let id = format!("{actor}#main-key");
            document["publicKey"] = json!({ "id": id, "owner": actor, "publicKeyPem": pem });
            key_ids.push(id);
        }
    }
    // Sign with the first key named by a URL (Bridgy's key id is a bare
    // host: Chorus then takes the actor's key for `#main-key`).
    let key_id = key_ids
        .iter()
        .find(|k| origin_of(k).is_some())
        .cloned()
        .unwrap_or_else(|| format!("{actor}#main-key"));
    hosts.serve(&actor, document.clone());
    for key in &key_ids {
        if origin_of(key).is_some() && key.split('#').next() != Some(actor.as_str()) {
            hosts.serve(key, document.clone());
        }
    }
    let mut failures = Vec::new();
    let mut leaks = Vec::new();
    internet_urls(&document, &mut leaks);
    if !leaks.is_empty() {
        failures.push(format!("internet URLs left in the actor: {leaks:?}"));
    }
    let signer = signer(&actor, &key_id, TestKey::shared(0));
    let base = origin_of(&actor).map(|(o, _)| o).unwrap_or_default();
    let follow = json!({
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": format!("{base}/interop/follow"),
        "type": "Follow",
        "actor": actor,
        "object": local.account.uri,
    });
    let ended = deliver_and_settle(app, &hosts, &signer, &follow).await;
    if ended.received.as_ref().is_some_and(|r| r.0.is_none()) {
        check_actor_row(app, &document, &row.activity_type, &mut failures).await;
    }
    Replay {
        ended,
        failures,
        hosts,
    }
}

/// Checks how a row ended against what it should have; returns the
/// problems and, for an exception, why it is one.
fn judge(row: &Row, ended: &Ended) -> (Vec<String>, Option<&'static str>) {
    let mut problems = Vec::new();
    let (expected, why) = match exception(&row.path) {
        Some((expected, why, says)) => {
            // The exception must hold for its own reason, not another.
            if !ended.reason().contains(says) {
                problems.push(format!(
                    "expected a reason saying {says:?}, got {:?}",
                    ended.reason()
                ));
            }
            (expected, Some(why))
        }
        None => (expected(row), None),
    };
    match row.expectation.as_str() {
        "accept" => {}
        // A reject row may end at the door or refused by the interpreter,
        // but never applied and never in a read model.
        "reject" => {
            let refused = match &expected {
                Expected::Door(status) => *status >= 400,
                Expected::Stored(outcome, effects) => {
                    *outcome == Some("refused") && effects.is_empty()
                }
            };
            if !refused {
                problems.push(format!("a reject row is expected to pass ({expected})"));
            }
        }
        other => problems.push(format!("unknown expectation {other}")),
    }
    if !ended.matches(&expected) {
        problems.push(format!("expected {expected}, got {ended}"));
    }
    (problems, why)
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn every_manifest_payload_ends_in_the_inbox_as_the_manifest_says() {
    let rows = rows();
    assert!(rows.len() > 200, "the manifest lists {} rows", rows.len());
    let app = spawn_app().await;
    let account = app.account("alice", false).await;
    let created = app
        .ok(
            Some(&account.token),
            "mutation { createPost(input: { text: \"hello fediverse\", visibility: PUBLIC }) { uri } }",
            json!({}),
        )
        .await;
    let post = created["createPost"]["uri"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let local = Local { account, post };

    let mut failures: Vec<String> = Vec::new();
    let mut summary: Vec<String> = Vec::new();
    let (mut passed, mut skipped) = (0, 0);
    // Every row's servers stay up to the end: a port used again by a later
    // row would make its ids collide with an earlier row's.
    let mut all_hosts: Vec<Hosts> = Vec::new();

    for row in &rows {
        let path = row.path.as_str();
        let replay = match row.kind.as_str() {
            "collection" | "context" => {
                skipped += 1;
                summary.push(format!(
                    "skip {:<10} {:<6} {:<22} {:<32} {path}: not an inbox payload",
                    row.kind, row.expectation, row.activity_type, "-"
                ));
                continue;
            }
            "activity" => replay_activity(&app, &local, row, &load(path)).await,
            "object" if row.activity_type == "CryptographicKey" => {
                replay_key(&app, &local, &load(path)).await
            }
            "object" => replay_object(&app, &load(path)).await,
            "actor" => replay_actor(&app, &local, row, &load(path)).await,
            "raw-http" => replay_actor(&app, &local, row, &http_body(path)).await,
            other => {
                failures.push(format!("{path}: unknown kind {other}"));
                continue;
            }
        };
        let (mut problems, why) = judge(row, &replay.ended);
        problems.extend(replay.failures);
        let ok = problems.is_empty();
        if ok {
            passed += 1;
        }
        failures.extend(problems.iter().map(|p| format!("{path}: {p}")));
        let reason = replay.ended.reason();
        summary.push(format!(
            "{} {:<10} {:<6} {:<22} {:<32} {path}{}{}",
            if ok { "ok  " } else { "FAIL" },
            row.kind,
            row.expectation,
            row.activity_type,
            replay.ended.short(),
            if reason.is_empty() {
                String::new()
            } else {
                format!("  ({})", reason.chars().take(140).collect::<String>())
            },
            why.map(|w| format!("  [{w}]")).unwrap_or_default()
        ));
        all_hosts.push(replay.hosts);
    }

    println!("{}", summary.join("\n"));
    println!(
        "{} rows: {passed} as expected, {skipped} skipped (collections and contexts), {} failures",
        rows.len(),
        failures.len()
    );
    drop(all_hosts);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}\n\nsummary:\n{}",
        failures.len(),
        failures.join("\n"),
        summary.join("\n")
    );
}
