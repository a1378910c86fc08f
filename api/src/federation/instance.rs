//! The instance actor (`/actor`): the server itself, as an `Application`.
//! It signs the GETs Chorus makes (servers in "secure mode" refuse unsigned
//! fetches) and answers for the server where no user is involved.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chorus_domain::signatures::PrivateKey;
use serde_json::json;
use sqlx::PgPool;

use super::fetch::{RequestSigner, sign_cavage_request};
use crate::activitypub::negotiation::activity_json;
use crate::http::AppState;

/// The name of the instance actor's key in `server_keys`.
const KEY_NAME: &str = "instance-actor";

/// The server's own actor and its key pair.
pub struct InstanceActor {
    pub uri: String,
    pub key_id: String,
    pub public_key_pem: String,
    base_url: String,
    key: PrivateKey,
}

impl std::fmt::Debug for InstanceActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceActor")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

impl InstanceActor {
    /// The instance actor, with the key pair made on first start.
    pub async fn load_or_create(pool: &PgPool, base_url: &str) -> anyhow::Result<Self> {
        let existing: Option<(String, String)> = sqlx::query_as(
            "SELECT private_key_pem, public_key_pem FROM server_keys WHERE name = $1",
        )
        .bind(KEY_NAME)
        .fetch_optional(pool)
        .await?;
        let (private_pem, public_pem) = match existing {
            Some(pair) => pair,
            None => {
                let keys = crate::keys::generate()?;
                // Two processes starting at once: the first insert wins and
                // both read it back.
                sqlx::query(
                    "INSERT INTO server_keys (name, private_key_pem, public_key_pem)
                     VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
                )
                .bind(KEY_NAME)
                .bind(&keys.private_pem)
                .bind(&keys.public_pem)
                .execute(pool)
                .await?;
                sqlx::query_as(
                    "SELECT private_key_pem, public_key_pem FROM server_keys WHERE name = $1",
                )
                .bind(KEY_NAME)
                .fetch_one(pool)
                .await?
            }
        };
        let key = PrivateKey::from_pem(&private_pem)
            .map_err(|e| anyhow::anyhow!("the instance actor's stored key is unusable: {e}"))?;
        let base_url = base_url.trim_end_matches('/').to_owned();
        let uri = format!("{base_url}/actor");
        Ok(Self {
            key_id: format!("{uri}#main-key"),
            uri,
            public_key_pem: public_pem,
            base_url,
            key,
        })
    }

    /// The actor document.
    pub fn document(&self) -> serde_json::Value {
        let host = self
            .base_url
            .split_once("://")
            .map_or(self.base_url.as_str(), |(_, rest)| rest);
        json!({
            "@context": chorus_domain::activitypub::context(),
            "id": self.uri,
            "type": "Application",
            "preferredUsername": host,
            "name": host,
            "inbox": format!("{}/inbox", self.base_url),
            "manuallyApprovesFollowers": true,
            "endpoints": { "sharedInbox": format!("{}/inbox", self.base_url) },
            "publicKey": {
                "id": self.key_id,
                "owner": self.uri,
                "publicKeyPem": self.public_key_pem,
            },
        })
    }
}

impl RequestSigner for InstanceActor {
    fn sign(
        &self,
        method: &str,
        url: &url::Url,
        body: Option<&[u8]>,
        content_type: Option<&str>,
    ) -> Vec<(String, String)> {
        sign_cavage_request(method, url, body, content_type, &self.key_id, &self.key)
    }
}

/// `GET /actor`.
pub async fn actor_document(State(state): State<AppState>) -> Response {
    let Some(federation) = state.federation.as_ref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match activity_json(StatusCode::OK, &federation.instance.document()) {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}
