//! The one HTTP client Chorus uses to talk to other servers: fetching actors,
//! keys and objects, and posting deliveries.
//!
//! Every URL it is handed comes, one way or another, from a stranger, so the
//! client is defensive by default: it refuses loopback, private and other
//! non-public addresses (see [`address`]), follows only a few redirects and
//! checks every hop again, gives up after a timeout, and stops reading a body
//! past a size cap. Local federation and tests on 127.0.0.1 turn the address
//! refusal off with [`FetchPolicy::allow_private_addresses`] (the
//! `CHORUS_ALLOW_PRIVATE_ADDRESSES=true` setting).
//!
//! TLS uses reqwest's rustls with the ring provider; reqwest falls back to
//! ring itself when no process-wide provider is installed, so nothing needs
//! installing at start-up.

mod address;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Response, StatusCode};
use url::{Host, Url};

use address::{Classifier, GuardedResolver, check_address, non_public_reason};

/// What `Accept` asks for: ActivityStreams, in both spellings servers know.
const ACCEPT_ACTIVITY: &str = r#"application/activity+json, application/ld+json; profile="https://www.w3.org/ns/activitystreams""#;

/// The content types an ActivityStreams document may be served as.
const ACTIVITY_TYPES: &[&str] = &[
    "application/activity+json",
    "application/ld+json",
    "application/json",
];

/// What `Accept` asks for from WebFinger, and what it may answer with.
const ACCEPT_JRD: &str = "application/jrd+json, application/json";
const JRD_TYPES: &[&str] = &["application/jrd+json", "application/json"];

/// The content type deliveries are posted with.
const ACTIVITY_CONTENT_TYPE: &str = "application/activity+json";

/// How much of an error answer to a delivery is kept for logs.
const EXCERPT_BYTES: usize = 512;

/// Limits that apply to every remote request.
#[derive(Clone, Debug)]
pub struct FetchPolicy {
    /// Lets requests reach loopback, private and other non-public addresses.
    /// Only for tests and local federation; off in production, because
    /// otherwise any remote actor could make Chorus probe its own network.
    pub allow_private_addresses: bool,
    /// Applies to each request (each redirect hop) as a whole: connecting,
    /// sending, and reading the answer to its end.
    pub timeout: Duration,
    /// How many redirects a fetch follows before giving up.
    pub max_redirects: usize,
    /// The largest answer body read; bigger ones are refused (fetches) or cut
    /// off (deliveries).
    pub max_body_bytes: usize,
    /// Sent with every request, so that remote admins can tell who is calling.
    pub user_agent: String,
    /// Host names answered with these addresses instead of asking DNS (the
    /// port still comes from the URL). For servers running under several
    /// names on one machine, as tests run them; empty otherwise. The
    /// addresses are checked like resolved ones.
    pub resolve: Vec<(String, IpAddr)>,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        Self {
            allow_private_addresses: false,
            timeout: Duration::from_secs(10),
            max_redirects: 3,
            max_body_bytes: 1024 * 1024,
            user_agent: format!("Chorus/{}", env!("CARGO_PKG_VERSION")),
            resolve: Vec::new(),
        }
    }
}

/// Signs outgoing requests (implemented elsewhere with HTTP Signatures); the
/// fetcher calls it for every request, including each redirect hop, because
/// a signature covers the target path and host and so cannot be reused.
pub trait RequestSigner: Send + Sync + std::fmt::Debug {
    /// Returns the headers to add to the request (such as `Date`, `Digest`
    /// and `Signature`); each replaces any header of the same name.
    fn sign(
        &self,
        method: &str,
        url: &Url,
        body: Option<&[u8]>,
        content_type: Option<&str>,
    ) -> Vec<(String, String)>;
}

/// Signs a request with draft-cavage HTTP Signatures (rsa-sha256, over
/// `(request-target) host date`, plus `digest content-type` with a body),
/// as [`RequestSigner::sign`] implementations do. A request that cannot be
/// signed (a URL without a host) goes unsigned, with a warning: the remote
/// server's refusal then says why.
pub fn sign_cavage_request(
    method: &str,
    url: &Url,
    body: Option<&[u8]>,
    content_type: Option<&str>,
    key_id: &str,
    key: &chorus_domain::signatures::PrivateKey,
) -> Vec<(String, String)> {
    let body = body.map(|bytes| chorus_domain::signatures::OutboundBody {
        content_type: content_type.unwrap_or(ACTIVITY_CONTENT_TYPE),
        bytes,
    });
    chorus_domain::signatures::sign_cavage(method, url, body, key_id, key, chrono::Utc::now())
        .unwrap_or_else(|error| {
            tracing::warn!(%error, "could not sign a request; sending it unsigned");
            Vec::new()
        })
}

/// A remote document, with the URL it was finally served from after
/// redirects (callers check that the document's `id` belongs to that origin).
#[derive(Clone, Debug)]
pub struct Fetched {
    pub url: Url,
    pub document: serde_json::Value,
}

/// How a remote inbox answered a delivery. Any answer is reported here, even
/// an error status, so that the delivery worker sees `Retry-After`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub status: u16,
    /// From a `Retry-After` header, in seconds or as a date.
    pub retry_after: Option<Duration>,
    /// The answer carried `Accept-Signature` (RFC 9421): the inbox says
    /// which kind of signature it wants, so a refused draft-cavage
    /// signature is worth one retry with an RFC 9421 one.
    pub accept_signature: bool,
    /// The start of the answer's body when the status is not a success, for
    /// logs; empty otherwise.
    pub body_excerpt: String,
}

impl Delivered {
    /// Whether the inbox accepted the activity (any 2xx).
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Whether retrying the same delivery cannot succeed; the same rule as
    /// [`FetchError::is_permanent`] applies to statuses.
    pub fn is_permanent_failure(&self) -> bool {
        is_permanent_status(self.status)
    }
}

/// Why a remote request failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid URL {url:?}")]
    InvalidUrl {
        url: String,
        #[source]
        source: url::ParseError,
    },
    #[error("unsupported URL scheme {0:?}: only http and https are fetched")]
    UnsupportedScheme(String),
    #[error("{host} resolves to the non-public address {addr}")]
    PrivateAddress { host: String, addr: IpAddr },
    #[error("the remote server did not answer in time")]
    Timeout,
    #[error("the answer is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("too many redirects (more than {limit})")]
    TooManyRedirects { limit: usize },
    #[error("not found (404)")]
    NotFound,
    #[error("gone (410)")]
    Gone,
    #[error("the remote server answered {0}")]
    Status(u16),
    #[error("expected an ActivityStreams JSON document, got content type {0:?}")]
    NotActivityJson(String),
    #[error("the signer produced an invalid header {0:?}")]
    InvalidSignatureHeader(String),
    #[error("the document is not valid JSON")]
    Json(#[source] serde_json::Error),
    #[error("network error")]
    Network(#[source] reqwest::Error),
}

impl FetchError {
    /// Whether retrying the same request later cannot help, so a delivery
    /// should be dropped and a fetch not repeated soon. Network trouble,
    /// timeouts, 5xx, 408 and 429 are transient; refusals of the request
    /// itself (4xx, a bad URL, a private address, an unusable answer) are not.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::InvalidUrl { .. }
            | Self::UnsupportedScheme(_)
            | Self::PrivateAddress { .. }
            | Self::TooLarge { .. }
            | Self::TooManyRedirects { .. }
            | Self::NotFound
            | Self::Gone
            | Self::NotActivityJson(_)
            | Self::InvalidSignatureHeader(_)
            | Self::Json(_) => true,
            Self::Status(status) => is_permanent_status(*status),
            Self::Timeout | Self::Network(_) => false,
        }
    }

    /// Sorts a reqwest error into a timeout, an address refused by the
    /// resolver (which reaches us wrapped in the connector's error), or
    /// other network trouble.
    fn from_reqwest(error: reqwest::Error) -> Self {
        if error.is_timeout() {
            return Self::Timeout;
        }
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            if let Some(Self::PrivateAddress { host, addr }) = cause.downcast_ref::<Self>() {
                return Self::PrivateAddress {
                    host: host.clone(),
                    addr: *addr,
                };
            }
            source = cause.source();
        }
        Self::Network(error)
    }
}

fn is_permanent_status(status: u16) -> bool {
    (400..500).contains(&status) && status != 408 && status != 429
}

/// The HTTP client for remote ActivityPub documents; cheap to clone.
#[derive(Clone, Debug)]
pub struct Fetcher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: reqwest::Client,
    policy: FetchPolicy,
    signer: Option<Arc<dyn RequestSigner>>,
    /// `None` when private addresses are allowed.
    classify: Option<Classifier>,
}

impl Fetcher {
    /// Builds the client; `signer` signs every request when set.
    pub fn new(
        policy: FetchPolicy,
        signer: Option<Arc<dyn RequestSigner>>,
    ) -> Result<Self, FetchError> {
        Self::with_classifier(policy, signer, non_public_reason)
    }

    /// Builds the client with another address classifier, so that tests can
    /// treat one loopback address as public and check what happens after it.
    fn with_classifier(
        policy: FetchPolicy,
        signer: Option<Arc<dyn RequestSigner>>,
        classify: Classifier,
    ) -> Result<Self, FetchError> {
        let classify = (!policy.allow_private_addresses).then_some(classify);
        let mut builder = reqwest::Client::builder()
            // Redirects are followed by hand so that each hop is checked
            // and signed again.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve names itself, out of the guard's reach.
            .no_proxy()
            .connect_timeout(policy.timeout)
            .timeout(policy.timeout)
            .user_agent(policy.user_agent.clone());
        if let Some(classify) = classify {
            builder = builder.dns_resolver(Arc::new(GuardedResolver { classify }));
        }
        for (name, addr) in &policy.resolve {
            // Port 0: the URL's port, or the scheme's.
            builder = builder.resolve(name, std::net::SocketAddr::new(*addr, 0));
        }
        let client = builder.build().map_err(FetchError::Network)?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                policy,
                signer,
                classify,
            }),
        })
    }

    /// GETs an ActivityStreams document, signed if a signer is set.
    ///
    /// Redirects are followed up to the policy's limit, each hop checked and
    /// signed again; the answer must be `application/activity+json`,
    /// `application/ld+json` or `application/json`.
    pub async fn get_activity(&self, url: &str) -> Result<Fetched, FetchError> {
        self.get_json(url, ACCEPT_ACTIVITY, ACTIVITY_TYPES).await
    }

    /// GETs a WebFinger answer (RFC 7033), with the same checks and limits
    /// as [`Fetcher::get_activity`]; the answer must be
    /// `application/jrd+json` or `application/json`.
    pub async fn get_jrd(&self, url: &str) -> Result<Fetched, FetchError> {
        self.get_json(url, ACCEPT_JRD, JRD_TYPES).await
    }

    async fn get_json(
        &self,
        url: &str,
        accept: &'static str,
        types: &[&str],
    ) -> Result<Fetched, FetchError> {
        let mut url = parse_url(url)?;
        let mut redirects = 0;
        loop {
            let response = self
                .send_signed(
                    reqwest::Method::GET,
                    &url,
                    None,
                    self.inner.signer.as_deref(),
                    accept,
                )
                .await?;
            let status = response.status();
            if status.is_redirection() {
                let Some(next) = redirect_target(&url, &response)? else {
                    return Err(FetchError::Status(status.as_u16()));
                };
                if redirects == self.inner.policy.max_redirects {
                    return Err(FetchError::TooManyRedirects {
                        limit: self.inner.policy.max_redirects,
                    });
                }
                redirects += 1;
                tracing::debug!(from = %url, to = %next, "following a redirect");
                url = next;
                continue;
            }
            match status {
                StatusCode::NOT_FOUND => return Err(FetchError::NotFound),
                StatusCode::GONE => return Err(FetchError::Gone),
                _ if !status.is_success() => return Err(FetchError::Status(status.as_u16())),
                _ => {}
            }
            check_content_type(&response, types)?;
            let body = read_capped(response, self.inner.policy.max_body_bytes).await?;
            let document = serde_json::from_slice(&body).map_err(FetchError::Json)?;
            tracing::debug!(%url, "fetched a remote document");
            return Ok(Fetched { url, document });
        }
    }

    /// POSTs an activity to an inbox, signed if a signer is set, and reports
    /// how the inbox answered, whatever the status.
    ///
    /// Redirects are not followed: the inbox URL comes from the recipient's
    /// own actor document, and re-posting a signed body to wherever a
    /// redirect points is not something a delivery should do silently.
    pub async fn post_activity(&self, url: &str, body: &[u8]) -> Result<Delivered, FetchError> {
        self.post(url, body, self.inner.signer.as_deref()).await
    }

    /// [`Fetcher::post_activity`] signed by `signer` (a delivery is signed
    /// by the actor of its activity, not by the fetcher's own signer).
    pub async fn post_activity_as(
        &self,
        url: &str,
        body: &[u8],
        signer: &dyn RequestSigner,
    ) -> Result<Delivered, FetchError> {
        self.post(url, body, Some(signer)).await
    }

    async fn post(
        &self,
        url: &str,
        body: &[u8],
        signer: Option<&dyn RequestSigner>,
    ) -> Result<Delivered, FetchError> {
        let url = parse_url(url)?;
        let response = self
            .send_signed(
                reqwest::Method::POST,
                &url,
                Some(body),
                signer,
                ACCEPT_ACTIVITY,
            )
            .await?;
        let status = response.status().as_u16();
        let accept_signature = response.headers().contains_key("accept-signature");
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(parse_retry_after);
        // The answer is read (up to the cap) so the connection can be reused.
        let answer = read_prefix(response, self.inner.policy.max_body_bytes).await?;
        let delivered = Delivered {
            status,
            retry_after,
            accept_signature,
            body_excerpt: String::new(),
        };
        if delivered.is_success() {
            tracing::debug!(%url, status, "delivered");
            return Ok(delivered);
        }
        let excerpt = &answer[..answer.len().min(EXCERPT_BYTES)];
        let body_excerpt = String::from_utf8_lossy(excerpt).into_owned();
        tracing::debug!(%url, status, body = %body_excerpt, "the inbox refused a delivery");
        Ok(Delivered {
            body_excerpt,
            ..delivered
        })
    }

    /// Sends one request to `url` after checking its scheme and, for literal
    /// IP hosts (which never reach the resolver), its address.
    async fn send_signed(
        &self,
        method: reqwest::Method,
        url: &Url,
        body: Option<&[u8]>,
        signer: Option<&dyn RequestSigner>,
        accept: &'static str,
    ) -> Result<Response, FetchError> {
        self.check_target(url)?;
        let content_type = body.map(|_| ACTIVITY_CONTENT_TYPE);
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
        if let Some(content_type) = content_type {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        }
        if let Some(signer) = signer {
            for (name, value) in signer.sign(method.as_str(), url, body, content_type) {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| FetchError::InvalidSignatureHeader(name.clone()))?;
                let value = HeaderValue::from_str(&value)
                    .map_err(|_| FetchError::InvalidSignatureHeader(name.to_string()))?;
                headers.insert(name, value);
            }
        }
        let mut request = self
            .inner
            .client
            .request(method, url.clone())
            .headers(headers);
        if let Some(body) = body {
            request = request.body(body.to_vec());
        }
        request.send().await.map_err(FetchError::from_reqwest)
    }

    fn check_target(&self, url: &Url) -> Result<(), FetchError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::UnsupportedScheme(url.scheme().to_owned()));
        }
        let Some(classify) = self.inner.classify else {
            return Ok(());
        };
        match url.host() {
            Some(Host::Ipv4(ip)) => check_address(classify, &ip.to_string(), ip.into()),
            Some(Host::Ipv6(ip)) => check_address(classify, &ip.to_string(), ip.into()),
            // Names are checked by the resolver, at connection time, except
            // those the policy resolves itself (the resolver never sees them).
            Some(Host::Domain(name)) => self
                .inner
                .policy
                .resolve
                .iter()
                .filter(|(overridden, _)| overridden.eq_ignore_ascii_case(name))
                .try_for_each(|(_, addr)| check_address(classify, name, *addr)),
            // The URL parser gives every http(s) URL a host.
            None => Err(FetchError::InvalidUrl {
                url: url.to_string(),
                source: url::ParseError::EmptyHost,
            }),
        }
    }
}

fn parse_url(url: &str) -> Result<Url, FetchError> {
    Url::parse(url).map_err(|source| FetchError::InvalidUrl {
        url: url.to_owned(),
        source,
    })
}

/// The next URL of a redirect, resolved against the current one; `None` when
/// the status is not one that carries a `Location`.
fn redirect_target(current: &Url, response: &Response) -> Result<Option<Url>, FetchError> {
    let followed = [
        StatusCode::MOVED_PERMANENTLY,
        StatusCode::FOUND,
        StatusCode::SEE_OTHER,
        StatusCode::TEMPORARY_REDIRECT,
        StatusCode::PERMANENT_REDIRECT,
    ];
    if !followed.contains(&response.status()) {
        return Ok(None);
    }
    let Some(location) = response.headers().get(header::LOCATION) else {
        return Ok(None);
    };
    let location = String::from_utf8_lossy(location.as_bytes());
    current
        .join(&location)
        .map(Some)
        .map_err(|source| FetchError::InvalidUrl {
            url: location.into_owned(),
            source,
        })
}

/// Accepts the JSON media types ActivityPub documents are served with,
/// ignoring parameters such as `profile` and `charset`.
fn check_content_type(response: &Response, accepted: &[&str]) -> Result<(), FetchError> {
    let raw = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .unwrap_or_default();
    let essence = raw.split(';').next().unwrap_or_default().trim();
    if accepted.iter().any(|t| essence.eq_ignore_ascii_case(t)) {
        Ok(())
    } else {
        Err(FetchError::NotActivityJson(raw))
    }
}

/// Reads the whole body, refusing it as soon as it exceeds `limit`: up
/// front when `Content-Length` says so, otherwise while streaming, so that a
/// hostile server cannot make us buffer more than the cap.
async fn read_capped(mut response: Response, limit: usize) -> Result<Vec<u8>, FetchError> {
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(FetchError::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(FetchError::from_reqwest)? {
        if body.len() + chunk.len() > limit {
            return Err(FetchError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads the body up to `limit` bytes and drops the rest, for answers whose
/// content barely matters.
async fn read_prefix(mut response: Response, limit: usize) -> Result<Vec<u8>, FetchError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(FetchError::from_reqwest)? {
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == limit {
            break;
        }
    }
    Ok(body)
}

/// Parses `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delay = date.with_timezone(&chrono::Utc) - chrono::Utc::now();
    // A date in the past means "now".
    Some(delay.to_std().unwrap_or(Duration::ZERO))
}
