-- Keys the service generates for itself, shared by every replica.
CREATE TABLE service_keys (
    name       text PRIMARY KEY,
    key        bytea NOT NULL CHECK (length(key) = 32),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Idempotency-Key records, scoped to the token. The fingerprint is an HMAC of method, path and
-- body; the kept response never holds the secret (responses never do).
CREATE TABLE idempotency_keys (
    token_id     uuid NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    key          text NOT NULL,
    fingerprint  bytea NOT NULL,
    state        text NOT NULL CHECK (state IN ('in_flight', 'done')),
    locked_until timestamptz NOT NULL,
    status       integer,
    headers      jsonb,
    body         bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (token_id, key)
);

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
