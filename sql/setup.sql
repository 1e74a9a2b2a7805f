-- strapi-io-bridge: database set-up for a Strapi 4 database on PostgreSQL.
--
-- What it does (idempotent: running it again changes nothing):
--   1. creates the publication the bridge streams (by table name: FOR ALL TABLES needs a
--      superuser, while the owner of Strapi's tables may publish them one by one);
--   2. adds to it every content-type table (from Strapi's own strapi_content_types_schema row,
--      admin:: types excepted), the users-permissions and API-token tables, and
--      strapi_core_store_settings (so schema and setting changes are seen live);
--   3. sets REPLICA IDENTITY FULL on the content-type tables: publish/unpublish detection and
--      delete payloads need the old row.
--
-- Run it as Strapi's database user (the owner of its tables) or a superuser:
--   strapi-io-bridge setup                       (uses the configured names)
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f sql/setup.sql
-- The two names below are the defaults; `strapi-io-bridge setup --print` prints this file
-- with the configured ones.

SET strapi_io.publication = 'strapi_io';
SET strapi_io.schema = 'public';

DO $setup$
DECLARE
    pub   text := current_setting('strapi_io.publication');
    sch   text := current_setting('strapi_io.schema');
    tbl   text;
    wanted text[];
    content text[] := '{}';
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = sch) THEN
        RAISE EXCEPTION 'schema % does not exist: is this the Strapi database?', sch;
    END IF;

    -- Content-type tables, from the schema Strapi writes on every boot.
    IF to_regclass(format('%I.strapi_core_store_settings', sch)) IS NOT NULL THEN
        EXECUTE format(
            $q$SELECT coalesce(array_agg(DISTINCT ct.def->>'collectionName'), '{}')
                 FROM %I.strapi_core_store_settings s,
                      LATERAL jsonb_each(s.value::jsonb) AS ct(uid, def)
                WHERE s.key = 'strapi_content_types_schema'
                  AND ct.uid NOT LIKE 'admin::%%'
                  AND ct.def->>'collectionName' IS NOT NULL$q$, sch)
        INTO content;
    END IF;
    IF cardinality(content) = 0 THEN
        RAISE NOTICE 'no Strapi content types found in %.strapi_core_store_settings: has Strapi booted on this database? Run this again after its first start.', sch;
    END IF;

    wanted := content || ARRAY[
        'strapi_core_store_settings',
        'up_roles', 'up_permissions', 'up_permissions_role_links',
        'up_users', 'up_users_role_links',
        'strapi_api_tokens', 'strapi_api_token_permissions',
        'strapi_api_token_permissions_token_links'];

    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = pub) THEN
        EXECUTE format('CREATE PUBLICATION %I', pub);
        RAISE NOTICE 'created publication %', pub;
    END IF;

    FOREACH tbl IN ARRAY wanted LOOP
        CONTINUE WHEN to_regclass(format('%I.%I', sch, tbl)) IS NULL;
        IF NOT EXISTS (SELECT 1 FROM pg_publication_tables
                        WHERE pubname = pub AND schemaname = sch AND tablename = tbl) THEN
            EXECUTE format('ALTER PUBLICATION %I ADD TABLE %I.%I', pub, sch, tbl);
            RAISE NOTICE 'published %.%', sch, tbl;
        END IF;
    END LOOP;

    FOREACH tbl IN ARRAY content LOOP
        CONTINUE WHEN to_regclass(format('%I.%I', sch, tbl)) IS NULL;
        IF (SELECT relreplident FROM pg_class WHERE oid = format('%I.%I', sch, tbl)::regclass) <> 'f' THEN
            EXECUTE format('ALTER TABLE %I.%I REPLICA IDENTITY FULL', sch, tbl);
            RAISE NOTICE 'replica identity full on %.%', sch, tbl;
        END IF;
    END LOOP;
END
$setup$;

RESET strapi_io.publication;
RESET strapi_io.schema;

-- A separate replication role for the bridge, for managed services (RDS, Cloud SQL, Azure,
-- Supabase, Neon) or anyone who would rather not give the bridge Strapi's own user: see the end
-- of `strapi-io-bridge setup --print` (the exact grants, with the configured names) or the README.
--
-- pg_hba.conf: a logical replication connection matches the database name like an ordinary
-- one (the "replication" keyword is for physical replication only), e.g.
--   host  strapi  strapi_io_bridge  10.0.0.0/8  scram-sha-256
