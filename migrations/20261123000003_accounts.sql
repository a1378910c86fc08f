-- Secrets and credentials of local accounts. Not read models and not in the
-- event log: private keys and tokens must never reach the log, which is a
-- public contract for analytics consumers.

-- Each local actor's RSA private key (PKCS#8 PEM).
CREATE TABLE actor_keys (
    actor_id        uuid PRIMARY KEY,
    private_key_pem text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- API tokens, stored as SHA-256 hashes; the token itself is shown once.
CREATE TABLE api_tokens (
    token_id     uuid PRIMARY KEY,
    token_hash   bytea NOT NULL UNIQUE,
    actor_id     uuid NOT NULL,
    actor_uri    text NOT NULL,
    label        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_tokens_actor ON api_tokens (actor_id);
