-- What mints keys of their own for environments (docs/keys.md): at most one issuer (singleton).
-- Its secret (apiToken or secretKey) is in the secret backend, like the configuration's.
CREATE TABLE key_issuer (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    id             uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    type           text NOT NULL CHECK (type IN ('digitalocean', 'aws-iam')),
    -- aws-iam only: the identity's access key id and the region requests are signed for
    access_key     text,
    region         text,
    secret_backend text NOT NULL,
    secret_version integer,
    version        integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    updated_by     text NOT NULL,
    -- deleted through the API; kept (with its secret) until the keys it minted are deleted
    deleted        boolean NOT NULL DEFAULT false
);

-- Grants per environment: NULL buckets means all of the configuration's.
ALTER TABLE spaces_environments ADD COLUMN buckets text[];
ALTER TABLE spaces_environments ADD COLUMN permission text NOT NULL DEFAULT 'readwrite'
    CHECK (permission IN ('read', 'readwrite'));

-- The counter in every minted key's name (unique across environments and time).
CREATE SEQUENCE environment_key_counter;

-- Every key spacesvc minted or is minting. A row is written ('minting', with the key's name)
-- before the issuer is called, so a crash after the issuer answered leaves a name reconciliation
-- recognises. 'active' is delivered; 'retiring' still works until retire_after (a rotation's
-- overlap); 'deleting' is deleted at the issuer by the background task, retried until done.
CREATE TABLE environment_keys (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    environment_id   uuid REFERENCES environments (id) ON DELETE SET NULL,
    environment_name text NOT NULL,
    name             text NOT NULL UNIQUE,
    state            text NOT NULL CHECK (state IN ('minting', 'active', 'retiring', 'deleting')),
    access_key       text UNIQUE,
    buckets          text[] NOT NULL,
    permission       text NOT NULL CHECK (permission IN ('read', 'readwrite')),
    secret_backend   text,
    secret_version   integer,
    created_at       timestamptz NOT NULL DEFAULT now(),
    retire_after     timestamptz,
    -- the configuration's version at which the key became the one delivered
    version          integer,
    attempts         integer NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX environment_keys_one_active ON environment_keys (environment_id) WHERE state = 'active';
CREATE INDEX environment_keys_state ON environment_keys (state);

-- Disabling an environment, deleting it or deleting the configuration (whose enablement goes
-- with it), by any means, sends the environment's keys to deletion in the same transaction.
CREATE FUNCTION spacesvc_keys_revoked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE environment_keys SET state = 'deleting'
    WHERE environment_id = OLD.environment_id AND state <> 'deleting';
    RETURN NULL;
END;
$$;

CREATE TRIGGER spaces_environments_removed
    AFTER DELETE ON spaces_environments
    FOR EACH ROW EXECUTE FUNCTION spacesvc_keys_revoked();

CREATE TRIGGER spaces_environments_disabled
    AFTER UPDATE OF enabled ON spaces_environments
    FOR EACH ROW WHEN (OLD.enabled AND NOT NEW.enabled) EXECUTE FUNCTION spacesvc_keys_revoked();
