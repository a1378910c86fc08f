//! Tolerant readers of ActivityStreams properties.
//!
//! Servers disagree on the shape of almost every property: a value or an
//! array of values, an id or an embedded object or a `Link`, compacted
//! (`as:sensitive`) or not, a type as a short term or a full IRI. These
//! readers accept all the shapes seen in the wild and turn them into one, so
//! the readers of notes, actors and activities never look at raw JSON shapes.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;
use url::Url;

use crate::activitypub::PUBLIC;

/// The ActivityStreams namespace, which a type or property may be spelled in.
const AS_NAMESPACE: &str = "https://www.w3.org/ns/activitystreams#";

/// Namespaces of well-known extensions (prefix as servers compact it, IRI),
/// whose types are accepted when spelled as a compact or full IRI.
const KNOWN_NAMESPACES: &[(&str, &str)] = &[
    ("as", AS_NAMESPACE),
    // Some JSON-LD processors write the vocabulary with `http`.
    ("as", "http://www.w3.org/ns/activitystreams#"),
    ("toot", "http://joinmastodon.org/ns#"),
    ("litepub", "http://litepub.social/ns#"),
    ("misskey", "https://misskey-hub.net/ns#"),
    ("lemmy", "https://join-lemmy.org/ns#"),
    ("schema", "http://schema.org#"),
    ("ostatus", "http://ostatus.org#"),
    ("sec", "https://w3id.org/security#"),
    ("pt", "https://joinpeertube.org/ns#"),
    ("mz", "https://joinmobilizon.org/ns#"),
    ("fedibird", "http://fedibird.com/ns#"),
    ("funkwhale", "https://funkwhale.audio/ns#"),
    ("geojson", "https://purl.org/geojson/vocab#"),
    ("kroeg", "https://puckipedia.com/kroeg/ns#"),
    ("vcard", "http://www.w3.org/2006/vcard/ns#"),
];

/// The actor types of the ActivityStreams vocabulary.
pub(crate) const ACTOR_TYPES: &[&str] =
    &["Person", "Service", "Group", "Application", "Organization"];

/// Object types of the ActivityStreams vocabulary and of well-known
/// extensions: things that are not activities, so cannot be an inbox
/// delivery's envelope. `Question` is an activity in the vocabulary but is
/// used as a poll object by every server, so it is read as one.
pub(crate) const OBJECT_TYPES: &[&str] = &[
    "Object",
    "Article",
    "Audio",
    "Document",
    "Event",
    "Image",
    "Note",
    "Page",
    "Place",
    "Profile",
    "Relationship",
    "Tombstone",
    "Video",
    "Question",
    "Link",
    "Mention",
    "Collection",
    "OrderedCollection",
    "CollectionPage",
    "OrderedCollectionPage",
    // Extensions.
    "ChatMessage",
    "Hashtag",
    "Emoji",
    "PropertyValue",
    "IdentityProof",
    "CryptographicKey",
    "Key",
    "Multikey",
    "Endpoints",
];

/// The property `name` of `object`, also when compacted as `as:name`; JSON
/// `null` counts as absent.
pub(crate) fn prop<'a>(object: &'a Value, name: &str) -> Option<&'a Value> {
    let map = object.as_object()?;
    map.get(name)
        .or_else(|| map.get(&format!("as:{name}")))
        .filter(|v| !v.is_null())
}

/// The values of a property that may be one value or an array.
pub(crate) fn one_or_many(value: Option<&Value>) -> Vec<&Value> {
    match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().filter(|v| !v.is_null()).collect(),
        Some(v) => vec![v],
    }
}

/// The id a value stands for: a string, an embedded object's `id`, or a
/// `Link`'s `href`. The first one of an array.
pub(crate) fn id_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
        Value::Object(map) => map
            .get("id")
            .or_else(|| map.get("@id"))
            .or_else(|| map.get("href"))
            .and_then(Value::as_str)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty()),
        Value::Array(items) => items.iter().find_map(id_of),
        _ => None,
    }
}

/// The ids of every value of a property.
pub(crate) fn ids(value: Option<&Value>) -> Vec<String> {
    one_or_many(value).into_iter().filter_map(id_of).collect()
}

/// The own id of an object (`id`, or JSON-LD's `@id`).
pub(crate) fn own_id(object: &Value) -> Option<String> {
    let map = object.as_object()?;
    map.get("id")
        .or_else(|| map.get("@id"))
        .and_then(Value::as_str)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// A text value: a string, a JSON-LD value object (`{"@value": …}`), or the
/// first of an array. Empty text counts as absent.
pub(crate) fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()).filter(|s| !s.trim().is_empty()),
        Value::Object(map) => text(map.get("@value")),
        Value::Array(items) => items.iter().find_map(|v| text(Some(v))),
        _ => None,
    }
}

/// A natural-language property: `name`, or when absent the first entry of
/// its language map `nameMap` (Friendica and WordPress may send only that).
pub(crate) fn lang_text(object: &Value, name: &str) -> Option<String> {
    text(prop(object, name)).or_else(|| {
        prop(object, &format!("{name}Map"))
            .and_then(Value::as_object)
            .and_then(|map| map.values().find_map(|v| text(Some(v))))
    })
}

/// A boolean: JSON `true`/`false`, the strings `"true"`/`"false"` in any
/// case, or a JSON-LD value object (Kroeg sends `{"@value": "False"}`).
pub(crate) fn boolean(value: Option<&Value>) -> Option<bool> {
    match value? {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        Value::Object(map) => boolean(map.get("@value")),
        Value::Array(items) => items.iter().find_map(|v| boolean(Some(v))),
        _ => None,
    }
}

/// A date-time: RFC 3339, or without a zone (then taken as UTC, the way
/// servers that omit it mean it).
pub(crate) fn datetime(value: Option<&Value>) -> Option<DateTime<Utc>> {
    let s = text(value)?;
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

/// The type names of an object as written (`type`, or JSON-LD's `@type`;
/// a string or an array of strings).
pub(crate) fn raw_types(object: &Value) -> Vec<String> {
    let Some(map) = object.as_object() else {
        return Vec::new();
    };
    one_or_many(map.get("type").or_else(|| map.get("@type")))
        .into_iter()
        .filter_map(Value::as_str)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The short name of a type, or `None` when it is not one Chorus can read.
///
/// ActivityStreams types may be spelled short (`Note`), compacted
/// (`as:Note`) or in full (`https://www.w3.org/ns/activitystreams#Note`);
/// types of well-known extension namespaces likewise. A bare term that is
/// not in the vocabulary is accepted as an extension type (Lemmy sends
/// `Lock` without any `@context`), so that such activities are stored and
/// reported as unsupported rather than refused. Any other IRI (such as
/// `https://example.com/`) names a type nobody could interpret: refused.
pub(crate) fn short_type(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.contains("://") {
        return KNOWN_NAMESPACES.iter().find_map(|(_, iri)| {
            raw.strip_prefix(iri)
                .filter(|term| is_term(term))
                .map(str::to_owned)
        });
    }
    if let Some((prefix, term)) = raw.split_once(':') {
        return KNOWN_NAMESPACES
            .iter()
            .any(|(p, _)| *p == prefix)
            .then_some(term)
            .filter(|term| is_term(term))
            .map(str::to_owned);
    }
    is_term(raw).then(|| raw.to_owned())
}

/// Whether `s` can be a JSON-LD term: a letter, then letters, digits, `_`, `-`.
fn is_term(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The short names of the types of `object` that Chorus can read, in order.
pub(crate) fn known_types(object: &Value) -> Vec<String> {
    raw_types(object)
        .iter()
        .filter_map(|t| short_type(t))
        .collect()
}

/// Whether `object` is (first of all) one of `names`.
pub(crate) fn has_type(object: &Value, names: &[&str]) -> bool {
    known_types(object)
        .iter()
        .any(|t| names.contains(&t.as_str()))
}

/// Whether an address is the public collection, in any of its spellings.
pub fn is_public(address: &str) -> bool {
    matches!(address, PUBLIC | "as:Public" | "Public")
}

/// Addressing (`to`, `cc`): ids of every value, the public collection
/// normalised to its full IRI so callers compare against one spelling.
pub(crate) fn addresses(value: Option<&Value>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for id in ids(value) {
        let id = if is_public(&id) {
            PUBLIC.to_owned()
        } else {
            id
        };
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

/// `s` parsed, when it is an absolute `http` or `https` URL with a host.
pub(crate) fn http_url(s: &str) -> Option<Url> {
    Url::parse(s)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
}

/// `s` itself, when it is an absolute `http` or `https` URL.
pub(crate) fn http_id(s: &str) -> Option<String> {
    http_url(s).map(|_| s.to_owned())
}

/// The host of an http(s) URL, lower-cased, with its port when it is not
/// the scheme's default: what "the same origin" compares.
pub fn host_of(uri: &str) -> Option<String> {
    let url = http_url(uri)?;
    let host = url.host_str()?.to_ascii_lowercase();
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

/// A link to a web page or a file: a string, a `Link` (its `href`), an
/// object with a `url`, or an array of those. With `media_prefix`, the first
/// link whose `mediaType` starts with it; otherwise the first `text/html`
/// link, else the first link. Only http(s) URLs are returned, so a
/// `javascript:` or `magnet:` URL never reaches a page.
pub(crate) fn link(
    value: Option<&Value>,
    media_prefix: Option<&str>,
) -> Option<(String, Option<String>)> {
    let mut candidates: Vec<(String, Option<String>)> = Vec::new();
    collect_links(value, &mut candidates, 0);
    candidates.retain(|(href, _)| http_url(href).is_some());
    match media_prefix {
        Some(prefix) => candidates
            .into_iter()
            .find(|(_, media)| media.as_deref().is_some_and(|m| m.starts_with(prefix))),
        None => {
            let html = candidates
                .iter()
                .position(|(_, media)| media.as_deref() == Some("text/html"));
            match html {
                Some(i) => candidates.into_iter().nth(i),
                None => candidates.into_iter().next(),
            }
        }
    }
}

fn collect_links(value: Option<&Value>, out: &mut Vec<(String, Option<String>)>, depth: usize) {
    // Links nest (an Image's `url` may be a Link); a bound keeps a hostile
    // document from recursing deeply.
    if depth > 3 {
        return;
    }
    for v in one_or_many(value) {
        match v {
            Value::String(s) => out.push((s.trim().to_owned(), None)),
            Value::Object(map) => {
                let media = map
                    .get("mediaType")
                    .or_else(|| map.get("mimeType"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                if let Some(href) = map.get("href").and_then(Value::as_str) {
                    out.push((href.trim().to_owned(), media));
                    // PeerTube lists a stream's files as Links in its `tag`.
                    collect_links(map.get("tag"), out, depth + 1);
                } else if map.contains_key("url") {
                    let start = out.len();
                    collect_links(map.get("url"), out, depth + 1);
                    // An object's own mediaType describes its plain urls.
                    for entry in &mut out[start..] {
                        if entry.1.is_none() {
                            entry.1.clone_from(&media);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types_are_read_in_every_spelling() {
        assert_eq!(short_type("Note").as_deref(), Some("Note"));
        assert_eq!(short_type("as:Note").as_deref(), Some("Note"));
        assert_eq!(
            short_type("https://www.w3.org/ns/activitystreams#Note").as_deref(),
            Some("Note")
        );
        assert_eq!(short_type("toot:Emoji").as_deref(), Some("Emoji"));
        assert_eq!(short_type("Lock").as_deref(), Some("Lock"));
        assert_eq!(short_type("https://example.com/"), None);
        assert_eq!(short_type("https://example.com/ns#Note"), None);
        assert_eq!(short_type("unknown:Thing"), None);
        assert_eq!(short_type(""), None);
        assert_eq!(short_type("<script>"), None);
    }

    #[test]
    fn type_may_be_an_array_or_at_type() {
        let v = json!({"type": ["https://example.com/Thing", "Place", "geojson:Feature"]});
        assert_eq!(known_types(&v), vec!["Place", "Feature"]);
        let v = json!({"@type": "Note"});
        assert_eq!(known_types(&v), vec!["Note"]);
    }

    #[test]
    fn ids_come_from_strings_objects_and_links() {
        assert_eq!(
            id_of(&json!("https://a.example/1")).as_deref(),
            Some("https://a.example/1")
        );
        assert_eq!(
            id_of(&json!({"type": "Person", "id": "https://a.example/u"})).as_deref(),
            Some("https://a.example/u")
        );
        assert_eq!(
            id_of(&json!({"type": "Link", "href": "https://a.example/l"})).as_deref(),
            Some("https://a.example/l")
        );
        assert_eq!(
            id_of(&json!([{"type": "Person", "id": "https://a.example/u"}])).as_deref(),
            Some("https://a.example/u")
        );
        assert_eq!(id_of(&json!("  ")), None);
        assert_eq!(id_of(&json!(3)), None);
    }

    #[test]
    fn public_is_normalised_in_every_spelling() {
        let to = addresses(Some(&json!([
            "as:Public",
            "Public",
            PUBLIC,
            "https://b.example/u"
        ])));
        assert_eq!(
            to,
            vec![PUBLIC.to_owned(), "https://b.example/u".to_owned()]
        );
        assert_eq!(
            addresses(Some(&json!("as:Public"))),
            vec![PUBLIC.to_owned()]
        );
    }

    #[test]
    fn compacted_properties_and_value_objects_are_read() {
        let v = json!({"as:sensitive": true, "manuallyApprovesFollowers": {"@value": "False"}});
        assert_eq!(boolean(prop(&v, "sensitive")), Some(true));
        assert_eq!(boolean(prop(&v, "manuallyApprovesFollowers")), Some(false));
    }

    #[test]
    fn dates_without_a_zone_are_utc() {
        let t = datetime(Some(&json!("2018-02-12T14:08:20"))).map(|t| t.to_rfc3339());
        assert_eq!(t.as_deref(), Some("2018-02-12T14:08:20+00:00"));
        assert!(datetime(Some(&json!("yesterday"))).is_none());
    }

    #[test]
    fn hosts_keep_non_default_ports() {
        assert_eq!(
            host_of("http://lemmy-alpha:8541/u/a").as_deref(),
            Some("lemmy-alpha:8541")
        );
        assert_eq!(
            host_of("https://Example.COM:443/x").as_deref(),
            Some("example.com")
        );
        assert_eq!(host_of("javascript:alert(1)"), None);
    }

    #[test]
    fn links_prefer_html_and_refuse_other_schemes() {
        let url = json!([
            {"type": "Link", "mediaType": "video/mp4", "href": "https://v.example/1.mp4"},
            {"type": "Link", "mediaType": "text/html", "href": "https://v.example/watch/1"},
            "magnet:?xt=urn:btih:abc"
        ]);
        assert_eq!(
            link(Some(&url), None).map(|l| l.0).as_deref(),
            Some("https://v.example/watch/1")
        );
        assert_eq!(
            link(Some(&url), Some("video/")).map(|l| l.0).as_deref(),
            Some("https://v.example/1.mp4")
        );
        assert_eq!(link(Some(&json!("javascript:alert(1)")), None), None);
    }
}
