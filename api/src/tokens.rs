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

/// What a valid token is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bearer {
    /// An account's token: it acts as the account.
    Account(TokenOwner),
    /// An analytics token: it belongs to no account and may only read the
    /// event log.
    Analytics { token_id: Uuid },
}

/// Who a valid account token acts as.
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
    insert(executor, Some((actor_id, actor_uri)), label).await
}

/// Issues an analytics token: it reads the event log and nothing else.
pub async fn create_analytics<'e>(
    executor: impl PgExecutor<'e>,
    label: Option<&str>,
) -> Result<NewToken, sqlx::Error> {
    insert(executor, None, label).await
}

/// A token of `owner`'s account, or an analytics token without one.
async fn insert<'e>(
    executor: impl PgExecutor<'e>,
    owner: Option<(Uuid, &str)>,
    label: Option<&str>,
) -> Result<NewToken, sqlx::Error> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let token_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO api_tokens (token_id, token_hash, actor_id, actor_uri, label, scope)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(token_id)
    .bind(hash(&secret))
    .bind(owner.map(|(id, _)| id))
    .bind(owner.map(|(_, uri)| uri))
    .bind(label)
    .bind(if owner.is_some() {
        "account"
    } else {
        "analytics"
    })
    .execute(executor)
    .await?;
    Ok(NewToken { token_id, secret })
}

/// What `secret` is, if it is a live token.
pub async fn authenticate<'e>(
    executor: impl PgExecutor<'e>,
    secret: &str,
) -> Result<Option<Bearer>, sqlx::Error> {
    if !secret.starts_with(PREFIX) {
        return Ok(None);
    }
    // `last_used_at` is refreshed at most once a minute: writing it on every
    // request would make each read commit (and flush) a write.
    let row: Option<(Uuid, Option<Uuid>, Option<String>)> = sqlx::query_as(
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
    // The table's constraint gives an account token both, an analytics
    // token neither.
    Ok(row.map(
        |(token_id, actor_id, actor_uri)| match (actor_id, actor_uri) {
            (Some(actor_id), Some(actor_uri)) => Bearer::Account(TokenOwner {
                token_id,
                actor_id,
                actor_uri,
            }),
            _ => Bearer::Analytics { token_id },
        },
    ))
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
