-- Environments (docs/api.md): the ones BRIDGEPORT enables the global Spaces configuration for.
CREATE TABLE environments (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9-]{1,63}$'),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Enablement of the configuration per environment (BRIDGEPORT's SpacesEnvironment). It survives a
-- PUT of the configuration (the row is updated in place) and goes with its DELETE.
CREATE TABLE spaces_environments (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    config_id      uuid NOT NULL REFERENCES spaces_config (id) ON DELETE CASCADE,
    environment_id uuid NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    enabled        boolean NOT NULL,
    UNIQUE (config_id, environment_id)
);

-- A token may be bound to one environment (required by the scope spaces:credentials). Deleting
-- the environment revokes its tokens first (in the same transaction), then unbinds them.
ALTER TABLE api_tokens ADD COLUMN environment_id uuid REFERENCES environments (id) ON DELETE SET NULL;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_credentials_need_an_environment
    CHECK (NOT ('spaces:credentials' = ANY (scopes)) OR environment_id IS NOT NULL OR revoked_at IS NOT NULL);

-- The audit trail: one entry per change and per credential delivery, written in the change's own
-- transaction. No entry holds a secret or a token.
CREATE TABLE audit_log (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    action        text NOT NULL,
    resource_type text NOT NULL,
    resource_id   text,
    actor         text NOT NULL,
    request_id    text,
    details       jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_resource_type ON audit_log (resource_type, id);
