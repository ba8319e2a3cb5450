-- Every change to an API key is told to every node: processes remember keys
-- between requests (`api::key_cache`) and forget one as soon as they hear
-- it changed. A trigger, so that a revocation from any process, the CLI or
-- plain SQL is heard alike. The payload is the key's prefix, or `*` when
-- the table is truncated.
CREATE FUNCTION tuma_api_key_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('tuma_api_keys', '*');
    ELSE
        PERFORM pg_notify('tuma_api_keys', OLD.prefix);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER api_key_changed AFTER UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION tuma_api_key_changed();

CREATE TRIGGER api_keys_truncated AFTER TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION tuma_api_key_changed();
