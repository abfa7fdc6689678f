-- Any change of a token that decides whether it authenticates (revoked, expired, created, edited,
-- deleted), by any means (the CLI, the API, an UPDATE typed in psql), tells every process in its
-- own transaction, as the CLI's own notification does: the processes read their tokens again.
CREATE FUNCTION spacesvc_tokens_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('spacesvc_changes', 'tokens');
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_tokens_changed
    AFTER INSERT OR DELETE OR TRUNCATE
        OR UPDATE OF revoked_at, expires_at, token_hash, role, scopes, environment_id
    ON api_tokens
    FOR EACH STATEMENT EXECUTE FUNCTION spacesvc_tokens_changed();
