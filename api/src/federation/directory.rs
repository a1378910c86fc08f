//! The directory: finds remote actors that local actions name (a follow, a
//! mention), by their ActivityPub id or their address `user@host`.
//!
//! An address is looked up with WebFinger (RFC 7033) on its host; the
//! `self` link of ActivityStreams type names the actor. The actor document
//! is fetched with the federation's fetcher (signed by the instance actor,
//! address-guarded) and recorded as `RemoteActorUpdated`, exactly as the
//! interpreter records an author it meets for the first time, so the actors
//! read model (and any rebuild of it) learns it from the log.
//!
//! WebFinger itself goes through the same fetcher (`Fetcher::get_jrd`):
//! signed, address-guarded, redirects checked, time and size capped.

use std::sync::Arc;

use chorus_domain::inbound::{InboundError, RemoteActor, read_actor};
use serde_json::Value;
use sqlx::PgPool;
use url::{Host, Url};

use super::Federation;
use super::fetch::FetchError;
use super::remote_keys::{KeyLookupError, domain_of};

/// Why a remote actor could not be found.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error(
        "`{0}` names no remote actor: give its ActivityPub id (a URL) or its address (user@host)"
    )]
    Unrecognised(String),
    #[error("{0} is this server: its actors are not looked up remotely")]
    Local(String),
    #[error("the instance {0} is blocked")]
    Blocked(String),
    #[error("no account {acct}: {host} does not know it")]
    NoSuchAccount { acct: String, host: String },
    #[error("the WebFinger lookup of {acct} on {host} failed: {source}")]
    WebFinger {
        acct: String,
        host: String,
        #[source]
        source: WebFingerError,
    },
    #[error("the actor {uri} could not be fetched: {source}")]
    Fetch {
        uri: String,
        #[source]
        source: FetchError,
    },
    #[error("{uri} is not a usable actor: {source}")]
    NotAnActor {
        uri: String,
        #[source]
        source: InboundError,
    },
    #[error("{uri} was served as the actor {id} by {served_from}: not the actor's own server")]
    WrongOrigin {
        uri: String,
        id: String,
        served_from: String,
    },
    #[error("the fetched actor could not be recorded")]
    Record(#[source] KeyLookupError),
    #[error("database failure")]
    Database(#[from] sqlx::Error),
}

impl DirectoryError {
    /// A stable code for clients.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unrecognised(_) | Self::Local(_) => "INVALID_INPUT",
            Self::Blocked(_) => "INSTANCE_BLOCKED",
            Self::NoSuchAccount { .. }
            | Self::Fetch {
                source: FetchError::NotFound | FetchError::Gone,
                ..
            } => "NOT_FOUND",
            Self::WebFinger { .. }
            | Self::Fetch { .. }
            | Self::NotAnActor { .. }
            | Self::WrongOrigin { .. } => "REMOTE_LOOKUP_FAILED",
            Self::Record(_) | Self::Database(_) => "INTERNAL",
        }
    }
}

/// Why a WebFinger request failed.
#[derive(Debug, thiserror::Error)]
pub enum WebFingerError {
    #[error("`{0}` is not a host name")]
    InvalidHost(String),
    #[error(transparent)]
    Fetch(FetchError),
    #[error("its answer links no ActivityPub actor")]
    NoActorLink,
}

/// Finds remote actors; cheap to clone.
#[derive(Clone, Debug)]
pub struct Directory {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    federation: Arc<Federation>,
    pool: PgPool,
    /// This server's host (with port), whose actors are never looked up.
    own_host: String,
}

impl Directory {
    /// A directory that fetches with `federation` and reads instance blocks
    /// from `pool` (the `blocked_instances` read model); `base_url` is this
    /// server's origin.
    pub fn new(federation: Arc<Federation>, pool: PgPool, base_url: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                federation,
                pool,
                own_host: domain_of(base_url),
            }),
        }
    }

    /// The remote actor `reference` names (its id, or `user@host` with or
    /// without a leading `@` or `acct:`), fetched from its server and
    /// recorded.
    pub async fn resolve(&self, reference: &str) -> Result<RemoteActor, DirectoryError> {
        let reference = reference.trim();
        if is_http_url(reference) {
            return self.fetch_actor(reference).await;
        }
        let Some((user, host)) = parse_acct(reference) else {
            return Err(DirectoryError::Unrecognised(reference.to_owned()));
        };
        let id = self.webfinger(user, &host).await?;
        self.fetch_actor(&id).await
    }

    /// The ActivityPub id WebFinger on `host` gives for `user@host`.
    #[tracing::instrument(skip(self), fields(remote_host = %host))]
    pub async fn webfinger(&self, user: &str, host: &str) -> Result<String, DirectoryError> {
        let acct = format!("{user}@{host}");
        let failed = |source| DirectoryError::WebFinger {
            acct: acct.clone(),
            host: host.to_owned(),
            source,
        };
        if host.eq_ignore_ascii_case(&self.inner.own_host) {
            return Err(DirectoryError::Local(acct));
        }
        self.refuse_blocked(host).await?;
        let allow_private = self.inner.federation.settings.allow_private_addresses;
        let url = webfinger_url(user, host, allow_private).map_err(failed)?;
        let jrd = match self.inner.federation.fetcher.get_jrd(url.as_str()).await {
            Ok(fetched) => fetched.document,
            Err(FetchError::NotFound | FetchError::Gone) => {
                return Err(DirectoryError::NoSuchAccount {
                    acct,
                    host: host.to_owned(),
                });
            }
            Err(error) => return Err(failed(WebFingerError::Fetch(error))),
        };
        let id = self_link(&jrd).ok_or_else(|| failed(WebFingerError::NoActorLink))?;
        tracing::debug!(%acct, actor = %id, "found an actor with WebFinger");
        Ok(id)
    }

    /// Fetches the actor `uri` from its server and records it.
    #[tracing::instrument(skip(self), fields(remote_host = %domain_of(uri)))]
    pub async fn fetch_actor(&self, uri: &str) -> Result<RemoteActor, DirectoryError> {
        let domain = domain_of(uri);
        if domain.is_empty() {
            return Err(DirectoryError::Unrecognised(uri.to_owned()));
        }
        if domain == self.inner.own_host {
            return Err(DirectoryError::Local(uri.to_owned()));
        }
        self.refuse_blocked(&domain).await?;
        let fetched = self
            .inner
            .federation
            .fetcher
            .get_activity(uri)
            .await
            .map_err(|source| DirectoryError::Fetch {
                uri: uri.to_owned(),
                source,
            })?;
        let actor = read_actor(&fetched.document).map_err(|source| DirectoryError::NotAnActor {
            uri: uri.to_owned(),
            source,
        })?;
        // Only the actor's own server is believed about it: the document
        // must come from the host of its id, which is the host asked.
        let served_from = domain_of(fetched.url.as_str());
        if domain_of(&actor.id) != served_from || served_from != domain {
            return Err(DirectoryError::WrongOrigin {
                uri: uri.to_owned(),
                id: actor.id,
                served_from,
            });
        }
        self.inner
            .federation
            .keys
            .record(&actor)
            .await
            .map_err(DirectoryError::Record)?;
        Ok(actor)
    }

    /// Refuses to contact a blocked instance (matched as the inbox matches
    /// it: host and non-default port). Read afresh, not from the inbox's
    /// copy: a lookup is rare, and a block just made must already hold.
    async fn refuse_blocked(&self, domain: &str) -> Result<(), DirectoryError> {
        let domain = domain.to_ascii_lowercase();
        let blocked: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM blocked_instances WHERE domain = $1)")
                .bind(&domain)
                .fetch_one(&self.inner.pool)
                .await?;
        if blocked {
            return Err(DirectoryError::Blocked(domain));
        }
        Ok(())
    }
}

/// Whether `reference` is an http(s) URL (an ActivityPub id) rather than
/// an address.
pub fn is_http_url(reference: &str) -> bool {
    reference.starts_with("https://") || reference.starts_with("http://")
}

/// The user and host of an address: `user@host`, `@user@host` or
/// `acct:user@host` (the host lower-cased, with its port if any). `None`
/// for anything else, a bare handle included.
pub fn parse_acct(reference: &str) -> Option<(&str, String)> {
    let reference = reference.trim();
    let acct = match reference.get(..5) {
        Some(scheme) if scheme.eq_ignore_ascii_case("acct:") => &reference[5..],
        _ => reference,
    };
    let acct = acct.strip_prefix('@').unwrap_or(acct);
    let (user, host) = acct.split_once('@')?;
    let user_ok = !user.is_empty()
        && user
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '~'));
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    (user_ok && host_ok).then(|| (user, host.to_ascii_lowercase()))
}

/// The WebFinger URL for `user@host`: https, except for an IP host or
/// `localhost` (or a name under it, RFC 6761) with a port when private
/// addresses are allowed (tests and local federation, where servers speak
/// plain http on 127.0.0.1).
pub fn webfinger_url(user: &str, host: &str, allow_private: bool) -> Result<Url, WebFingerError> {
    let invalid = || WebFingerError::InvalidHost(host.to_owned());
    let probe = Url::parse(&format!("https://{host}/")).map_err(|_| invalid())?;
    let with_port = probe.port().is_some();
    let local_style = match probe.host() {
        Some(Host::Ipv4(_) | Host::Ipv6(_)) => true,
        Some(Host::Domain(name)) => name == "localhost" || name.ends_with(".localhost"),
        None => return Err(invalid()),
    };
    let scheme = if allow_private && with_port && local_style {
        "http"
    } else {
        "https"
    };
    let mut url =
        Url::parse(&format!("{scheme}://{host}/.well-known/webfinger")).map_err(|_| invalid())?;
    // The host must be all there is: no user, path or query slipped in.
    if domain_of(url.as_str()) != host.to_ascii_lowercase()
        || url.path() != "/.well-known/webfinger"
    {
        return Err(invalid());
    }
    url.query_pairs_mut()
        .append_pair("resource", &format!("acct:{user}@{host}"));
    Ok(url)
}

/// The actor a WebFinger answer (JRD) links as `self` with an
/// ActivityStreams type.
pub fn self_link(jrd: &Value) -> Option<String> {
    jrd.get("links")?
        .as_array()?
        .iter()
        .filter(|link| link.get("rel").and_then(Value::as_str) == Some("self"))
        .filter(|link| {
            link.get("type")
                .and_then(Value::as_str)
                .is_some_and(is_activity_type)
        })
        .filter_map(|link| link.get("href").and_then(Value::as_str))
        .find(|href| is_http_url(href))
        .map(str::to_owned)
}

/// `application/activity+json`, or `application/ld+json` (with the
/// ActivityStreams profile, or none).
fn is_activity_type(media_type: &str) -> bool {
    let mut parts = media_type.split(';').map(str::trim);
    let essence = parts.next().unwrap_or_default().to_ascii_lowercase();
    match essence.as_str() {
        "application/activity+json" => true,
        "application/ld+json" => parts
            .filter_map(|p| p.strip_prefix("profile="))
            .all(|profile| profile.trim_matches('"').contains("activitystreams")),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn addresses_are_recognised_in_every_spelling() {
        let check = |reference: &str, expected: Option<(&str, &str)>| {
            assert_eq!(
                parse_acct(reference),
                expected.map(|(u, h)| (u, h.to_owned())),
                "{reference}"
            );
        };
        check("bob@remote.example", Some(("bob", "remote.example")));
        check("@bob@Remote.Example", Some(("bob", "remote.example")));
        check("acct:bob@remote.example", Some(("bob", "remote.example")));
        check(" @bob@127.0.0.1:3000 ", Some(("bob", "127.0.0.1:3000")));
        check("bob", None);
        check("@bob", None);
        check("bob@", None);
        check("@@remote.example", None);
        check("bob@remote.example/path", None);
        check("bob@remote.example?x=1", None);
        check("b ob@remote.example", None);
    }

    #[test]
    fn webfinger_is_asked_over_https_except_on_local_addresses_when_allowed() {
        let check = |host: &str, allow_private: bool, expected: &str| {
            let url = webfinger_url("bob", host, allow_private)
                .map(|u| u.to_string())
                .unwrap_or_else(|e| e.to_string());
            assert_eq!(url, expected, "{host} {allow_private}");
        };
        check(
            "remote.example",
            false,
            "https://remote.example/.well-known/webfinger?resource=acct%3Abob%40remote.example",
        );
        check(
            "remote.example:8443",
            true,
            "https://remote.example:8443/.well-known/webfinger?resource=acct%3Abob%40remote.example%3A8443",
        );
        check(
            "127.0.0.1:3000",
            true,
            "http://127.0.0.1:3000/.well-known/webfinger?resource=acct%3Abob%40127.0.0.1%3A3000",
        );
        check(
            "localhost:3000",
            true,
            "http://localhost:3000/.well-known/webfinger?resource=acct%3Abob%40localhost%3A3000",
        );
        check(
            "alpha.localhost:3000",
            true,
            "http://alpha.localhost:3000/.well-known/webfinger?resource=acct%3Abob%40alpha.localhost%3A3000",
        );
        check(
            "alpha.localhost:3000",
            false,
            "https://alpha.localhost:3000/.well-known/webfinger?resource=acct%3Abob%40alpha.localhost%3A3000",
        );
        check(
            "notlocalhost:3000",
            true,
            "https://notlocalhost:3000/.well-known/webfinger?resource=acct%3Abob%40notlocalhost%3A3000",
        );
        check(
            "127.0.0.1:3000",
            false,
            "https://127.0.0.1:3000/.well-known/webfinger?resource=acct%3Abob%40127.0.0.1%3A3000",
        );
        check(
            "evil.example/x",
            true,
            "`evil.example/x` is not a host name",
        );
        check("a@b", false, "`a@b` is not a host name");
    }

    #[test]
    fn the_self_link_of_activitystreams_type_names_the_actor() {
        let check = |links: Value, expected: Option<&str>| {
            let jrd = json!({ "subject": "acct:bob@remote.example", "links": links });
            assert_eq!(self_link(&jrd).as_deref(), expected, "{jrd}");
        };
        let actor = "https://remote.example/users/bob";
        check(
            json!([
                { "rel": "http://webfinger.net/rel/profile-page", "type": "text/html", "href": "https://remote.example/@bob" },
                { "rel": "self", "type": "application/activity+json", "href": actor },
            ]),
            Some(actor),
        );
        check(
            json!([{ "rel": "self", "type": "application/ld+json; profile=\"https://www.w3.org/ns/activitystreams\"", "href": actor }]),
            Some(actor),
        );
        check(
            json!([{ "rel": "self", "type": "text/html", "href": actor }]),
            None,
        );
        check(
            json!([{ "rel": "self", "type": "application/activity+json", "href": "javascript:alert(1)" }]),
            None,
        );
        check(json!("nonsense"), None);
    }
}
