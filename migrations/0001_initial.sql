-- The global Spaces configuration: at most one row (singleton), non-secret fields only.
CREATE TABLE spaces_config (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    id             uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    access_key     text NOT NULL,
    region         text NOT NULL,
    -- NULL: derived from the region ({region}.digitaloceanspaces.com)
    endpoint       text,
    buckets        text[] NOT NULL DEFAULT '{}',
    secret_backend text NOT NULL,
    secret_stored  boolean NOT NULL DEFAULT false,
    -- the backend's version marker for the secret (e.g. a Vault KV v2 version)
    secret_version integer,
    version        integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    updated_by     text NOT NULL
);

-- The db secret backend: AES-256-GCM ciphertexts, bound to their owner by associated data.
CREATE TABLE secret_ciphertexts (
    owner      text PRIMARY KEY,
    key_id     text NOT NULL,
    nonce      bytea NOT NULL CHECK (length(nonce) = 12),
    ciphertext bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- API tokens: only a SHA-256 hash of each token is kept.
CREATE TABLE api_tokens (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL,
    token_hash  bytea NOT NULL UNIQUE,
    role        text NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    scopes      text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz
);

-- A name identifies one live token; a revoked token's name may be reused.
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;
