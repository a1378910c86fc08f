//! API tokens: shown once, stored as SHA-256 hashes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgExecutor;
use uuid::Uuid;

/// Every token starts with this, so leaked ones are easy to scan for.
pub const PREFIX: &str = "chorus_";

/// A new token: its id (to revoke it) and the secret itself (shown once).
pub struct NewToken {
    pub token_id: Uuid,
    pub secret: String,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("token_id", &self.token_id)
            .finish_non_exhaustive()
    }
}

/// Who a valid token acts as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenOwner {
    pub token_id: Uuid,
    pub actor_id: Uuid,
    pub actor_uri: String,
}

fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Issues a token for an actor.
pub async fn create<'e>(
    executor: impl PgExecutor<'e>,
    actor_id: Uuid,
    actor_uri: &str,
    label: Option<&str>,
) -> Result<NewToken, sqlx::Error> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let token_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO api_tokens (token_id, token_hash, actor_id, actor_uri, label) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(token_id)
    .bind(hash(&secret))
    .bind(actor_id)
    .bind(actor_uri)
    .bind(label)
    .execute(executor)
    .await?;
    Ok(NewToken { token_id, secret })
}

/// The owner of `secret`, if it is a live token.
pub async fn authenticate<'e>(
    executor: impl PgExecutor<'e>,
    secret: &str,
) -> Result<Option<TokenOwner>, sqlx::Error> {
    if !secret.starts_with(PREFIX) {
        return Ok(None);
    }
    // `last_used_at` is refreshed at most once a minute: writing it on every
    // request would make each read commit (and flush) a write.
    let row: Option<(Uuid, Uuid, String)> = sqlx::query_as(
        "WITH token AS (
             SELECT token_id, actor_id, actor_uri, last_used_at FROM api_tokens
             WHERE token_hash = $1 AND revoked_at IS NULL
         ), touched AS (
             UPDATE api_tokens SET last_used_at = now()
             WHERE token_id = (SELECT token_id FROM token)
               AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
         )
         SELECT token_id, actor_id, actor_uri FROM token",
    )
    .bind(hash(secret))
    .fetch_optional(executor)
    .await?;
    Ok(row.map(|(token_id, actor_id, actor_uri)| TokenOwner {
        token_id,
        actor_id,
        actor_uri,
    }))
}

/// Revokes a token; false if there was no live token with that id.
pub async fn revoke<'e>(
    executor: impl PgExecutor<'e>,
    token_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE api_tokens SET revoked_at = now() WHERE token_id = $1 AND revoked_at IS NULL",
    )
    .bind(token_id)
    .execute(executor)
    .await?;
    Ok(done.rows_affected() == 1)
}
