//! A remote inbox on 127.0.0.1 that records every delivery it gets, checks
//! its HTTP signature against the keys it is told about, and can be told to
//! fail for a while.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use chorus_domain::signatures::{self, PublicKey, RequestParts};
use serde_json::Value;

/// One delivery as the sink got it.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    /// The key id of a valid signature, or why it did not verify.
    pub verified: Result<String, String>,
}

/// The sink (cheap to clone).
#[derive(Clone, Debug)]
pub struct Sink {
    pub base_url: String,
    authority: String,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    keys: HashMap<String, PublicKey>,
    deliveries: Vec<Delivery>,
    /// Answer this status to the next `fail_for` requests.
    failing: Option<(u16, usize)>,
}

impl Sink {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("cannot bind: {e}"));
        let authority = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let sink = Self {
            base_url: format!("http://{authority}"),
            authority,
            inner: Arc::default(),
        };
        let app = Router::new()
            .fallback(post(receive))
            .with_state(sink.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        sink
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Trusts `public_pem` for signatures by `key_id`.
    pub fn trust(&self, key_id: &str, public_pem: &str) {
        let key = PublicKey::from_pem(public_pem).unwrap_or_else(|e| panic!("{e}"));
        self.lock().keys.insert(key_id.to_owned(), key);
    }

    /// Answers `status` to the next `requests` requests (recording them).
    pub fn fail(&self, status: u16, requests: usize) {
        self.lock().failing = Some((status, requests));
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.lock().deliveries.clone()
    }
}

async fn receive(
    State(sink): State<Sink>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let headers: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let mut inner = sink.lock();
    let parts = RequestParts {
        method: "POST",
        scheme: "http",
        authority: &sink.authority,
        path_and_query: &path,
        headers: &headers,
        body: &body,
    };
    let verified = signatures::parse(&parts)
        .map_err(|e| e.to_string())
        .and_then(|signature| {
            let key_id = signature.key_id().to_owned();
            let key = inner
                .keys
                .get(&key_id)
                .ok_or_else(|| format!("unknown key {key_id}"))?;
            signature
                .check_policy(&parts, chrono::Utc::now(), chrono::TimeDelta::hours(1))
                .map_err(|e| e.to_string())?;
            signature.verify(&parts, key).map_err(|e| e.to_string())?;
            Ok(key_id)
        });
    inner.deliveries.push(Delivery {
        path: uri.path().to_owned(),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        verified,
    });
    if let Some((status, left)) = inner.failing.as_mut()
        && *left > 0
    {
        *left -= 1;
        return StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    }
    StatusCode::ACCEPTED
}
