//! What both signers need to know about the request they sign.

use url::Url;

use super::{RequestParts, SigningError};

/// The parts of an outbound URL that signatures cover.
pub(super) struct Target {
    pub(super) method: String,
    pub(super) scheme: String,
    /// `host[:port]`, the port only when it is not the scheme's default,
    /// exactly as the `Host` header will carry it.
    pub(super) authority: String,
    pub(super) path_and_query: String,
}

impl Target {
    pub(super) fn new(method: &str, url: &Url) -> Result<Self, SigningError> {
        let host = url.host_str().ok_or(SigningError::UrlWithoutHost)?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let path_and_query = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        Ok(Self {
            method: method.to_ascii_uppercase(),
            scheme: url.scheme().to_owned(),
            authority,
            path_and_query,
        })
    }

    /// A request view over this target, so that signing builds its string
    /// with the very code that verification uses.
    pub(super) fn parts<'a>(
        &'a self,
        headers: &'a [(String, String)],
        body: &'a [u8],
    ) -> RequestParts<'a> {
        RequestParts {
            method: &self.method,
            scheme: &self.scheme,
            authority: &self.authority,
            path_and_query: &self.path_and_query,
            headers,
            body,
        }
    }
}
