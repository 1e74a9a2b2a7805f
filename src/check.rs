//! `check` and `setup`: can the bridge run on this database, and the SQL that makes it so.
//!
//! `check` connects with the configured URL and reports each finding as ok / warning / error
//! with the exact SQL or configuration line that fixes it; it exits 0 only when the bridge can
//! run. `setup` applies `sql/setup.sql` with the configured names (or prints it).

use std::fmt;

use tokio_postgres::Client;

use crate::config::{ApiPrivateAttributes, Config, ContentTypesConfig};
use crate::pg::{self, quote_ident, quote_literal};
use crate::strapi::catalog::load_catalog;
use crate::strapi::{Catalog, ContentTypeFilter};

/// The set-up SQL, shipped in the binary so `setup` works from any folder.
pub const SETUP_SQL: &str = include_str!("../sql/setup.sql");

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Fine.
    Ok,
    /// Works, but something is better changed.
    Warning,
    /// The bridge cannot run (or would not do its job) until this is fixed.
    Error,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How bad.
    pub level: Level,
    /// What was found.
    pub message: String,
    /// The SQL or configuration that fixes it, when there is one.
    pub fix: Option<String>,
}

impl Finding {
    fn ok(message: impl Into<String>) -> Self {
        Finding {
            level: Level::Ok,
            message: message.into(),
            fix: None,
        }
    }

    fn warning(message: impl Into<String>, fix: impl Into<Option<String>>) -> Self {
        Finding {
            level: Level::Warning,
            message: message.into(),
            fix: fix.into(),
        }
    }

    fn error(message: impl Into<String>, fix: impl Into<Option<String>>) -> Self {
        Finding {
            level: Level::Error,
            message: message.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.level {
            Level::Ok => "ok     ",
            Level::Warning => "warning",
            Level::Error => "error  ",
        };
        write!(f, "{tag}  {}", self.message)?;
        if let Some(fix) = &self.fix {
            for (i, line) in fix.lines().enumerate() {
                let lead = if i == 0 { "fix:" } else { "    " };
                write!(f, "\n         {lead} {line}")?;
            }
        }
        Ok(())
    }
}

/// The whole report.
#[derive(Debug, Default)]
pub struct Report {
    /// Findings in the order they were made.
    pub findings: Vec<Finding>,
}

impl Report {
    fn push(&mut self, f: Finding) {
        self.findings.push(f);
    }

    /// True when nothing stops the bridge from running.
    pub fn can_run(&self) -> bool {
        self.findings.iter().all(|f| f.level != Level::Error)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            writeln!(f, "{finding}")?;
        }
        let errors = self
            .findings
            .iter()
            .filter(|f| f.level == Level::Error)
            .count();
        let warnings = self
            .findings
            .iter()
            .filter(|f| f.level == Level::Warning)
            .count();
        if errors == 0 {
            write!(f, "\nthe bridge can run ({warnings} warning(s))")
        } else {
            write!(
                f,
                "\nthe bridge cannot run: {errors} error(s), {warnings} warning(s)"
            )
        }
    }
}

/// Runs every check. Connection failures are an error finding, not an `Err`.
pub async fn check(cfg: &Config) -> Report {
    let mut report = Report::default();
    let db = &cfg.database;
    report.push(Finding::ok(format!(
        "configuration: database {} (from {}), slot {}, publication {}",
        db.display_target(),
        db.url_origin,
        db.slot,
        db.publication
    )));
    let client = match pg::connect(db).await {
        Ok(c) => c,
        Err(e) => {
            report.push(Finding::error(
                format!("cannot connect to {}: {e}", db.display_target()),
                Some(
                    "check DATABASE_URL (or database.url / --strapi-dir) and that PostgreSQL accepts this user from this host".to_owned(),
                ),
            ));
            // The secrets are configuration alone: worth knowing before the next attempt.
            check_auth(cfg, &mut report);
            return report;
        }
    };
    if let Err(e) = check_server(&client, cfg, &mut report).await {
        report.push(Finding::error(
            format!("while checking the server: {e}"),
            None,
        ));
    }
    match check_strapi(&client, cfg, &mut report).await {
        Ok(Some(catalog)) => {
            if let Err(e) = check_publication(&client, cfg, &catalog, &mut report).await {
                report.push(Finding::error(
                    format!("while checking the publication: {e}"),
                    None,
                ));
            }
        }
        Ok(None) => {}
        Err(e) => report.push(Finding::error(
            format!("while reading Strapi's tables: {e}"),
            None,
        )),
    }
    if let Err(e) = check_slot(&client, cfg, &mut report).await {
        report.push(Finding::error(
            format!("while checking the slot: {e}"),
            None,
        ));
    }
    if let Err(e) = check_emit_message(&client, cfg, &mut report).await {
        report.push(Finding::error(
            format!("while checking who may call pg_logical_emit_message: {e}"),
            None,
        ));
    }
    check_private_attributes(cfg, &mut report);
    check_auth(cfg, &mut report);
    report
}

/// Who may call `pg_logical_emit_message`: by default every role, so every role could send
/// custom Socket.IO events.
async fn check_emit_message(
    client: &Client,
    cfg: &Config,
    report: &mut Report,
) -> Result<(), tokio_postgres::Error> {
    let rows = client
        .query(
            "WITH owner AS (
                 SELECT coalesce(
                     (SELECT c.relowner FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                       WHERE n.nspname = $1 AND c.relname = 'strapi_core_store_settings'),
                     (SELECT nspowner FROM pg_namespace WHERE nspname = $1)) AS oid)
             SELECT p.oid::regprocedure::text,
                    EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                             WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'),
                    o.oid IS NULL OR has_function_privilege(o.oid, p.oid, 'EXECUTE'),
                    coalesce(pg_get_userbyid(o.oid)::text, '')
               FROM pg_proc p, owner o
              WHERE p.proname = 'pg_logical_emit_message'
                AND p.pronamespace = 'pg_catalog'::regnamespace
              ORDER BY 1",
            &[&cfg.database.schema],
        )
        .await?;
    let mut public = Vec::new();
    let mut owner_lacks = Vec::new();
    let mut owner = String::new();
    for row in &rows {
        let signature: String = row.get(0);
        if row.get::<_, bool>(1) {
            public.push(signature.clone());
        }
        if !row.get::<_, bool>(2) {
            owner_lacks.push(signature);
        }
        owner = row.get(3);
    }
    let grant = |sig: &str| {
        format!(
            "GRANT EXECUTE ON FUNCTION pg_catalog.{sig} TO {};",
            quote_ident(&owner)
        )
    };
    if !public.is_empty() {
        let mut fix =
            vec!["strapi-io-bridge setup   (as a superuser), or as a superuser:".to_owned()];
        if !owner.is_empty() {
            fix.extend(public.iter().map(|s| grant(s)));
        }
        fix.extend(
            public
                .iter()
                .map(|s| format!("REVOKE EXECUTE ON FUNCTION pg_catalog.{s} FROM PUBLIC;")),
        );
        let forging = if cfg.allow_data_actions {
            "and, with [messages] allow_data_actions = true, forge data events such as message:create"
        } else {
            "(data actions such as message:create are refused while [messages] allow_data_actions is off)"
        };
        report.push(Finding::warning(
            format!(
                "every database role may call {}: any of them can send custom Socket.IO events to every socket {forging}",
                public.join(" and ")
            ),
            Some(fix.join("\n")),
        ));
    } else if !owner_lacks.is_empty() {
        report.push(Finding::warning(
            format!(
                "Strapi's role {owner} may not call {}: custom events sent from Strapi fail",
                owner_lacks.join(" and ")
            ),
            Some(
                owner_lacks
                    .iter()
                    .map(|s| grant(s))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
        ));
    } else if !rows.is_empty() {
        report.push(Finding::ok(format!(
            "pg_logical_emit_message: only {} and superusers may send custom events",
            if owner.is_empty() {
                "granted roles"
            } else {
                owner.as_str()
            }
        )));
    }
    Ok(())
}

/// Strapi's site-wide `responses.privateAttributes` lives in `config/api.js`, not in the
/// database: say what the bridge hides and where it comes from.
fn check_private_attributes(cfg: &Config, report: &mut Report) {
    let strapi = &cfg.strapi;
    let fix = |names: &[String]| {
        format!(
            "[strapi] private_attributes = [{}]   (in config.toml: the list in Strapi's config/api.js responses.privateAttributes)",
            names
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    if !strapi.configured.is_empty() {
        report.push(Finding::ok(format!(
            "private attributes hidden in every content type ([strapi] private_attributes): {}",
            strapi.private_attributes.join(", ")
        )));
    }
    match &strapi.api_js {
        ApiPrivateAttributes::NoStrapiDir if strapi.configured.is_empty() => {
            report.push(Finding::ok(
                "[strapi] private_attributes is empty: Strapi's site-wide responses.privateAttributes (config/api.js) is not in the database; if your project sets it, copy it there (or run with --strapi-dir)",
            ));
        }
        ApiPrivateAttributes::NoStrapiDir => {}
        ApiPrivateAttributes::NoFile => report.push(Finding::ok(
            "the Strapi project has no config/api.js: no site-wide private attributes",
        )),
        ApiPrivateAttributes::NotSet(_) if strapi.configured.is_empty() => {
            report.push(Finding::ok(
                "config/api.js sets no responses.privateAttributes ([strapi] private_attributes is empty too)",
            ))
        }
        ApiPrivateAttributes::NotSet(_) => {}
        ApiPrivateAttributes::Literal(files, names) => {
            let missing: Vec<&String> = names
                .iter()
                .filter(|n| !strapi.configured.contains(n))
                .collect();
            let files = files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            if strapi.configured.is_empty() || missing.is_empty() {
                report.push(Finding::ok(format!(
                    "private attributes read from {files}: {} (hidden in every content type)",
                    names.join(", ")
                )));
            } else {
                report.push(Finding::warning(
                    format!(
                        "{files} lists private attributes that [strapi] private_attributes does not: {} (the bridge hides both lists while --strapi-dir is given)",
                        missing.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                    Some(fix(&strapi.private_attributes)),
                ));
            }
        }
        ApiPrivateAttributes::Unreadable(file, why) => report.push(Finding::warning(
            format!(
                "{}: responses.privateAttributes cannot be read ({why}); the bridge does not know which attributes Strapi hides site-wide",
                file.display()
            ),
            Some(fix(&strapi.configured)),
        )),
    }
}

async fn check_server(
    client: &Client,
    cfg: &Config,
    report: &mut Report,
) -> Result<(), tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int,
                    current_setting('wal_level'),
                    current_setting('max_replication_slots')::int,
                    (SELECT count(*)::int FROM pg_replication_slots),
                    current_setting('max_wal_senders')::int,
                    (SELECT count(*)::int FROM pg_stat_replication),
                    r.rolreplication, r.rolsuper, current_user,
                    current_setting('max_slot_wal_keep_size')
               FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await?;
    let version: String = row.get(0);
    let version_num: i32 = row.get(1);
    let wal_level: String = row.get(2);
    let max_slots: i32 = row.get(3);
    let used_slots: i32 = row.get(4);
    let max_senders: i32 = row.get(5);
    let used_senders: i32 = row.get(6);
    let replication: bool = row.get(7);
    let superuser: bool = row.get(8);
    let user: String = row.get(9);
    let keep_size: String = row.get(10);

    if version_num >= 140000 {
        report.push(Finding::ok(format!("server: PostgreSQL {version}")));
    } else if version_num >= 100000 {
        report.push(Finding::warning(
            format!(
                "server: PostgreSQL {version}: custom events from pg_logical_emit_message need PostgreSQL 14 or later"
            ),
            Some("upgrade PostgreSQL to use SQL-emitted custom events; data events work".to_owned()),
        ));
    } else {
        report.push(Finding::error(
            format!("server: PostgreSQL {version} has no pgoutput logical decoding"),
            Some("upgrade to PostgreSQL 10 or later (14+ recommended)".to_owned()),
        ));
    }

    if wal_level == "logical" {
        report.push(Finding::ok("wal_level = logical"));
    } else {
        report.push(Finding::error(
            format!("wal_level = {wal_level}; logical decoding needs wal_level = logical"),
            Some(
                "ALTER SYSTEM SET wal_level = logical;   -- as a superuser\nthen restart PostgreSQL (e.g. systemctl restart postgresql)".to_owned(),
            ),
        ));
    }

    let slot_exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
            &[&cfg.database.slot],
        )
        .await?
        .get(0);
    if slot_exists || used_slots < max_slots {
        report.push(Finding::ok(format!(
            "replication slots: {used_slots} of {max_slots} in use"
        )));
    } else {
        report.push(Finding::error(
            format!("replication slots: all {max_slots} in use, none left for the bridge"),
            Some(format!(
                "ALTER SYSTEM SET max_replication_slots = {};  -- then restart PostgreSQL\nor drop an unused slot: SELECT pg_drop_replication_slot('<name>');",
                max_slots + 2
            )),
        ));
    }
    if used_senders < max_senders {
        report.push(Finding::ok(format!(
            "wal senders: {used_senders} of {max_senders} in use"
        )));
    } else {
        report.push(Finding::error(
            format!("wal senders: all {max_senders} in use"),
            Some(format!(
                "ALTER SYSTEM SET max_wal_senders = {};  -- then restart PostgreSQL",
                max_senders + 2
            )),
        ));
    }

    if replication || superuser {
        report.push(Finding::ok(format!(
            "role {user} may replicate ({})",
            if superuser {
                "superuser"
            } else {
                "REPLICATION"
            }
        )));
    } else {
        report.push(Finding::error(
            format!("role {user} lacks the REPLICATION attribute needed to stream"),
            Some(format!(
                "ALTER ROLE {} REPLICATION;   -- as a superuser",
                quote_ident(&user)
            )),
        ));
    }

    if keep_size == "-1" {
        report.push(Finding::warning(
            "max_slot_wal_keep_size = -1: while the bridge is stopped its slot keeps all WAL, without limit",
            Some(
                "ALTER SYSTEM SET max_slot_wal_keep_size = '10GB'; SELECT pg_reload_conf();   -- size it to your disk".to_owned(),
            ),
        ));
    } else {
        report.push(Finding::ok(format!("max_slot_wal_keep_size = {keep_size}")));
    }
    Ok(())
}

async fn check_strapi(
    client: &Client,
    cfg: &Config,
    report: &mut Report,
) -> anyhow::Result<Option<Catalog>> {
    let schema = &cfg.database.schema;
    match crate::strapi::layout::detect(client, schema).await? {
        Some(layout) => report.push(Finding::ok(format!("{layout} in schema {schema}"))),
        None => report.push(Finding::warning(
            format!("no Strapi tables in schema {schema}"),
            Some("point the bridge at the database Strapi uses and start Strapi once".to_owned()),
        )),
    }
    let catalog = load_catalog(client, schema).await?;
    if catalog.is_empty() {
        report.push(Finding::error(
            format!(
                "no Strapi content types in {schema}.strapi_core_store_settings (strapi_content_types_schema)"
            ),
            Some(
                "point the bridge at the database Strapi uses and start Strapi once (it writes its schema on boot)".to_owned(),
            ),
        ));
        return Ok(None);
    }
    let filter = match ContentTypeFilter::resolve(&catalog, &cfg.content_types) {
        Ok(f) => Some(f),
        Err(e) => {
            report.push(Finding::error(
                format!("content_types: {e}"),
                Some("fix the [content_types] keys in config.toml or --content-types".to_owned()),
            ));
            None
        }
    };
    let admin_keys = ContentTypeFilter::admin_keys(&catalog, &cfg.content_types);
    if !admin_keys.is_empty() {
        report.push(Finding::warning(
            format!(
                "content_types names admin:: content types, which are never emitted (admin users, roles and API tokens with their key hashes; Strapi's content API never exposes them): {}",
                admin_keys
                    .iter()
                    .map(|(key, uid)| if key == uid { key.clone() } else { format!("{key} ({uid})") })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some("remove these keys from [content_types]".to_owned()),
        ));
    }
    let mut lines = Vec::new();
    for ct in catalog.content_types() {
        if ct.uid.starts_with("admin::") {
            continue;
        }
        let actions = filter
            .as_ref()
            .map(|f| f.actions_for(ct))
            .unwrap_or_default();
        lines.push(format!(
            "{:<34} table {:<24} {:<10} {:<17} {}",
            ct.uid,
            ct.table,
            match ct.kind {
                crate::strapi::Kind::Collection => "collection",
                crate::strapi::Kind::Single => "single",
            },
            if ct.draft_and_publish {
                "draft & publish"
            } else {
                "no draft & publish"
            },
            if actions.is_empty() {
                "no events".to_owned()
            } else {
                format!("events: {}", actions.join(", "))
            }
        ));
    }
    report.push(Finding::ok(format!(
        "{} content types:\n         {}",
        lines.len(),
        lines.join("\n         ")
    )));
    if cfg.content_types == ContentTypesConfig::Unset {
        report.push(Finding::warning(
            "no content types configured: the bridge will run but emit no data events",
            Some(
                "content_types = \"*\"   in config.toml, or [content_types] message = \"*\", or --content-types '*'".to_owned(),
            ),
        ));
    }
    let public: bool = client
        .query_one(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM {}.up_roles WHERE name = $1)",
                quote_ident(schema)
            ),
            &[&cfg.auth.public_role_name],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(false);
    if public {
        report.push(Finding::ok(format!(
            "role {:?} exists (sockets without a token join it)",
            cfg.auth.public_role_name
        )));
    } else {
        report.push(Finding::warning(
            format!(
                "no users-permissions role is named {:?}: sockets without a token will receive nothing",
                cfg.auth.public_role_name
            ),
            Some("[auth] public_role_name = \"<the name of your public role>\"".to_owned()),
        ));
    }
    Ok(Some(catalog))
}

async fn check_publication(
    client: &Client,
    cfg: &Config,
    catalog: &Catalog,
    report: &mut Report,
) -> Result<(), tokio_postgres::Error> {
    let db = &cfg.database;
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)",
            &[&db.publication],
        )
        .await?
        .get(0);
    if !exists {
        report.push(Finding::error(
            format!("publication {} does not exist", db.publication),
            Some(
                "strapi-io-bridge setup   (or: psql \"$DATABASE_URL\" -f sql/setup.sql)".to_owned(),
            ),
        ));
        return Ok(());
    }
    let rows = client
        .query(
            "SELECT c.relname, c.relreplident::text,
                    EXISTS (SELECT 1 FROM pg_publication_tables p
                             WHERE p.pubname = $1 AND p.schemaname = n.nspname AND p.tablename = c.relname)
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $2 AND c.relkind IN ('r', 'p')",
            &[&db.publication, &db.schema],
        )
        .await?;
    let tables: std::collections::HashMap<String, (String, bool)> = rows
        .iter()
        .map(|r| (r.get::<_, String>(0), (r.get(1), r.get(2))))
        .collect();
    let mut wanted: Vec<(String, bool)> = catalog
        .content_types()
        .filter(|ct| !ct.uid.starts_with("admin::"))
        .map(|ct| (ct.table.clone(), true))
        .collect();
    wanted.push(("strapi_core_store_settings".to_owned(), false));
    for t in crate::strapi::AccessTable::ALL {
        wanted.push((t.table_name().to_owned(), false));
        if t.strapi5_table_name() != t.table_name() {
            wanted.push((t.strapi5_table_name().to_owned(), false));
        }
    }
    let mut missing = Vec::new();
    let mut not_full = Vec::new();
    let mut published = 0;
    for (table, content) in wanted {
        let Some((ident, in_pub)) = tables.get(&table) else {
            continue;
        };
        if *in_pub {
            published += 1;
        } else {
            missing.push(table.clone());
        }
        if content && ident != "f" {
            not_full.push(table);
        }
    }
    if missing.is_empty() {
        report.push(Finding::ok(format!(
            "publication {}: all {published} Strapi tables the bridge reads are published",
            db.publication
        )));
    } else {
        report.push(Finding::error(
            format!(
                "publication {} misses {} table(s): {}",
                db.publication,
                missing.len(),
                missing.join(", ")
            ),
            Some(format!(
                "strapi-io-bridge setup   (as the tables' owner), or:\n{}",
                missing
                    .iter()
                    .map(|t| format!(
                        "ALTER PUBLICATION {} ADD TABLE {}.{};",
                        quote_ident(&db.publication),
                        quote_ident(&db.schema),
                        quote_ident(t)
                    ))
                    .collect::<Vec<_>>()
                    .join("\n")
            )),
        ));
    }
    if not_full.is_empty() {
        report.push(Finding::ok(
            "replica identity FULL on every content-type table",
        ));
    } else {
        report.push(Finding::warning(
            format!(
                "replica identity is not FULL on {}: publish/unpublish is then told from a cache, and delete events carry only the id",
                not_full.join(", ")
            ),
            Some(
                not_full
                    .iter()
                    .map(|t| {
                        format!(
                            "ALTER TABLE {}.{} REPLICA IDENTITY FULL;",
                            quote_ident(&db.schema),
                            quote_ident(t)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
        ));
    }
    Ok(())
}

async fn check_slot(
    client: &Client,
    cfg: &Config,
    report: &mut Report,
) -> Result<(), tokio_postgres::Error> {
    let db = &cfg.database;
    let row = client
        .query_opt(
            "SELECT plugin, database, active, active_pid,
                    COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::bigint,
                    current_database()
               FROM pg_replication_slots WHERE slot_name = $1",
            &[&db.slot],
        )
        .await?;
    let Some(row) = row else {
        report.push(Finding::ok(format!(
            "slot {} does not exist yet; the bridge creates it on start",
            db.slot
        )));
        return Ok(());
    };
    let plugin: Option<String> = row.get(0);
    let database: Option<String> = row.get(1);
    let active: bool = row.get(2);
    let pid: Option<i32> = row.get(3);
    let lag: i64 = row.get(4);
    let current: String = row.get(5);
    if plugin.as_deref() != Some("pgoutput") {
        report.push(Finding::error(
            format!(
                "slot {} uses plugin {}, the bridge needs pgoutput",
                db.slot,
                plugin.as_deref().unwrap_or("(physical)")
            ),
            Some(format!(
                "choose another slot name ([database] slot = \"…\"), or drop it if unused: SELECT pg_drop_replication_slot({});",
                quote_literal(&db.slot)
            )),
        ));
        return Ok(());
    }
    if database.as_deref() != Some(current.as_str()) {
        report.push(Finding::error(
            format!(
                "slot {} belongs to database {}, not {current}",
                db.slot,
                database.as_deref().unwrap_or("?")
            ),
            Some("choose another slot name: [database] slot = \"…\"".to_owned()),
        ));
        return Ok(());
    }
    let state = if active {
        format!(
            "active (held by PID {}; another bridge instance waits for it)",
            pid.unwrap_or(0)
        )
    } else {
        "inactive".to_owned()
    };
    let lag_mb = lag as f64 / 1_048_576.0;
    let finding = format!("slot {}: pgoutput, {state}, {lag_mb:.1} MB behind", db.slot);
    if lag > 1024 * 1024 * 1024 {
        report.push(Finding::warning(
            finding,
            Some(
                "start the bridge to consume it, or drop the slot if the bridge is gone for good"
                    .to_owned(),
            ),
        ));
    } else {
        report.push(Finding::ok(finding));
    }
    Ok(())
}

fn check_auth(cfg: &Config, report: &mut Report) {
    match &cfg.auth.jwt_secret_origin {
        Some(origin) => report.push(Finding::ok(format!("JWT secret: {origin}"))),
        None => report.push(Finding::warning(
            "JWT_SECRET is not set: sockets with a users-permissions JWT will be refused",
            Some(
                "Strapi writes JWT_SECRET into its project's .env on its first development start: run with --strapi-dir <your Strapi project>, or export JWT_SECRET (the value in config/plugins.js → users-permissions.jwtSecret)".to_owned(),
            ),
        )),
    }
    report.push(Finding::ok(format!(
        "users-permissions JWTs: jwt_management = {} ({}){}",
        cfg.auth.jwt_management.as_str(),
        cfg.auth.jwt_management_origin,
        match cfg.auth.jwt_management {
            crate::config::JwtManagement::Refresh => {
                ": Strapi 5 session access tokens only"
            }
            crate::config::JwtManagement::LegacySupport => {
                ": {\"id\"} tokens and Strapi 5 session access tokens"
            }
        }
    )));
    if cfg.auth.api_token_salt.is_some() {
        report.push(Finding::ok("API_TOKEN_SALT is set"));
    } else {
        report.push(Finding::warning(
            "API_TOKEN_SALT is not set: sockets with a Strapi API token will be refused",
            Some("run with --strapi-dir <your Strapi project>, or export API_TOKEN_SALT (from the project's .env)".to_owned()),
        ));
    }
}

/// The set-up SQL with the configured publication and schema.
pub fn setup_sql(cfg: &Config) -> String {
    SETUP_SQL
        .replacen(
            "SET strapi_io.publication = 'strapi_io';",
            &format!(
                "SET strapi_io.publication = {};",
                quote_literal(&cfg.database.publication)
            ),
            1,
        )
        .replacen(
            "SET strapi_io.schema = 'public';",
            &format!(
                "SET strapi_io.schema = {};",
                quote_literal(&cfg.database.schema)
            ),
            1,
        )
}

/// Applies the set-up SQL; returns PostgreSQL's notices (what was changed).
pub async fn setup(cfg: &Config) -> anyhow::Result<Vec<String>> {
    let (client, notices) = pg::connect_with_notices(&cfg.database).await?;
    client.batch_execute(&setup_sql(cfg)).await.map_err(|e| {
        let detail = e
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_else(|| e.to_string());
        anyhow::anyhow!(
            "setup failed: {detail}\nrun it as the owner of Strapi's tables or a superuser (or print it with `setup --print` and hand it to one)"
        )
    })?;
    drop(client);
    Ok(notices.await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_print_with_their_fix_indented() {
        let f = Finding::error(
            "wal_level = replica",
            Some("ALTER SYSTEM …\nrestart".to_owned()),
        );
        assert_eq!(
            f.to_string(),
            "error    wal_level = replica\n         fix: ALTER SYSTEM …\n              restart"
        );
    }

    #[test]
    fn a_report_can_run_only_without_errors() {
        let mut r = Report::default();
        r.push(Finding::ok("a"));
        r.push(Finding::warning("b", None));
        assert!(r.can_run());
        r.push(Finding::error("c", None));
        assert!(!r.can_run());
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
