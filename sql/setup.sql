-- strapi-io-bridge: database set-up for a Strapi 4 or 5 database on PostgreSQL.
--
-- What it does (idempotent: running it again changes nothing):
--   1. creates the publication the bridge streams (by table name: FOR ALL TABLES needs a
--      superuser, while the owner of Strapi's tables may publish them one by one);
--   2. adds to it every content-type table (from Strapi's own strapi_content_types_schema row,
--      admin:: types excepted), the users-permissions and API-token tables, and
--      strapi_core_store_settings (so schema and setting changes are seen live);
--   3. sets REPLICA IDENTITY FULL on the content-type tables: publish/unpublish detection and
--      delete payloads need the old row;
--   4. pg_logical_emit_message (custom events) may be called by every database role unless a
--      superuser revokes it: run as a superuser, this revokes EXECUTE from PUBLIC and grants it
--      to the owner of Strapi's tables (Strapi's own role), for every overload (text and bytea
--      content); run as another role, it prints those statements for a superuser to run.
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
        'strapi_api_token_permissions_token_links',
        -- Strapi 5 names its link tables *_lnk.
        'up_permissions_role_lnk', 'up_users_role_lnk',
        'strapi_api_token_permissions_token_lnk'];

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

DO $emit$
DECLARE
    sch     text := current_setting('strapi_io.schema');
    owner   oid;
    fn      record;
    grants  text[] := '{}';
    revokes text[] := '{}';
    stmt    text;
BEGIN
    -- Strapi's role: the owner of its tables (of the schema before Strapi's first boot).
    SELECT c.relowner INTO owner FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = sch AND c.relname = 'strapi_core_store_settings';
    IF owner IS NULL THEN
        SELECT nspowner INTO owner FROM pg_namespace WHERE nspname = sch;
    END IF;
    FOR fn IN
        SELECT p.oid::regprocedure::text AS sig,
               coalesce(p.proacl, acldefault('f', p.proowner)) AS acl
          FROM pg_proc p
         WHERE p.proname = 'pg_logical_emit_message'
           AND p.pronamespace = 'pg_catalog'::regnamespace
         ORDER BY 1
    LOOP
        IF NOT (SELECT rolsuper FROM pg_roles WHERE oid = owner)
           AND NOT EXISTS (SELECT 1 FROM aclexplode(fn.acl) a
                            WHERE a.grantee = owner AND a.privilege_type = 'EXECUTE') THEN
            grants := grants || format('GRANT EXECUTE ON FUNCTION pg_catalog.%s TO %I',
                                       fn.sig, pg_get_userbyid(owner));
        END IF;
        IF EXISTS (SELECT 1 FROM aclexplode(fn.acl) a
                    WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE') THEN
            revokes := revokes || format('REVOKE EXECUTE ON FUNCTION pg_catalog.%s FROM PUBLIC',
                                         fn.sig);
        END IF;
    END LOOP;
    IF cardinality(revokes) = 0 AND cardinality(grants) = 0 THEN
        RETURN;
    END IF;
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        -- Grant first, so Strapi's role never loses the function on the way.
        FOREACH stmt IN ARRAY grants || revokes LOOP
            EXECUTE stmt;
            RAISE NOTICE 'custom events: %', stmt;
        END LOOP;
    ELSIF cardinality(revokes) > 0 THEN
        RAISE NOTICE 'custom events: every database role may call pg_logical_emit_message, so any of them can send Socket.IO events; as a superuser run: %;',
            array_to_string(grants || revokes, '; ');
    ELSE
        RAISE NOTICE 'custom events: Strapi''s role % may not call pg_logical_emit_message; as a superuser run: %;',
            pg_get_userbyid(owner), array_to_string(grants, '; ');
    END IF;
END
$emit$;

RESET strapi_io.publication;
RESET strapi_io.schema;

-- A separate replication role for the bridge, for managed services (RDS, Cloud SQL, Azure,
-- Supabase, Neon) or anyone who would rather not give the bridge Strapi's own user: see the end
-- of `strapi-io-bridge setup --print` (the exact grants, with the configured names) or the README.
--
-- pg_hba.conf: a logical replication connection matches the database name like an ordinary
-- one (the "replication" keyword is for physical replication only), e.g.
--   host  strapi  strapi_io_bridge  10.0.0.0/8  scram-sha-256
