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
                    current_setting('max_slot_wal_keep_size', true),
                    pg_is_in_recovery()
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
    let keep_size: Option<String> = row.get(10);
    let in_recovery: bool = row.get(11);
    let service = detect_service(client).await?;
    let version_num = u32::try_from(version_num).unwrap_or(0);

    report.push(version_finding(&version, version_num));
    if let Some(service) = service {
        report.push(Finding::ok(format!(
            "managed service: {} (settings are changed in its console, not with ALTER SYSTEM)",
            service.name()
        )));
    }
    if in_recovery {
        report.push(standby_finding(version_num));
    }

    if wal_level == "logical" {
        report.push(Finding::ok("wal_level = logical"));
    } else {
        report.push(Finding::error(
            format!("wal_level = {wal_level}; logical decoding needs wal_level = logical"),
            Some(wal_level_fix(service)),
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
                "{}\nor drop an unused slot: SELECT pg_drop_replication_slot('<name>');",
                setting_fix(
                    service,
                    "max_replication_slots",
                    &(max_slots + 2).to_string()
                )
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
            Some(setting_fix(
                service,
                "max_wal_senders",
                &(max_senders + 2).to_string(),
            )),
        ));
    }

    // RDS lets members of rds_replication stream without the REPLICATION attribute.
    let rds_replication: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_replication')
                    AND pg_has_role(current_user, 'rds_replication', 'member')",
            &[],
        )
        .await?
        .get(0);
    if replication || superuser || rds_replication {
        report.push(Finding::ok(format!(
            "role {user} may replicate ({})",
            if superuser {
                "superuser"
            } else if replication {
                "REPLICATION"
            } else {
                "member of rds_replication"
            }
        )));
    } else {
        report.push(Finding::error(
            format!("role {user} lacks the REPLICATION attribute needed to stream"),
            Some(replication_grant_fix(service, &user)),
        ));
    }

    match keep_size.as_deref() {
        Some("-1") => report.push(Finding::warning(
            "max_slot_wal_keep_size = -1: while the bridge is stopped its slot keeps all WAL, \
             without limit, until the disk is full",
            Some(format!(
                "{}   -- size it to your disk; a slot that falls further behind is invalidated \
                 and the bridge then stops with an error instead of filling the disk",
                setting_fix(service, "max_slot_wal_keep_size", "'10GB'")
            )),
        )),
        Some(size) => report.push(Finding::ok(format!("max_slot_wal_keep_size = {size}"))),
        None => report.push(Finding::warning(
            "this server has no max_slot_wal_keep_size (PostgreSQL 12 or older): a stopped \
             bridge's slot keeps all WAL without limit",
            Some("upgrade to PostgreSQL 13 or later".to_owned()),
        )),
    }
    if version_num >= PG17 && !in_recovery {
        check_failover_setup(client, report).await?;
    }
    Ok(())
}

/// The first PostgreSQL version whose pgoutput forwards logical messages (custom events).
const PG14: u32 = 140_000;
/// The first version that decodes on a physical standby.
const PG16: u32 = 160_000;
/// The first version with failover slots (`sync_replication_slots`) and `invalidation_reason`.
const PG17: u32 = 170_000;
/// The oldest and newest major versions the test matrix runs.
const TESTED: (u32, u32) = (13, 18);

/// What this server version can and cannot do for the bridge.
fn version_finding(version: &str, version_num: u32) -> Finding {
    let major = version_num / 10_000;
    if version_num < 100_000 {
        return Finding::error(
            format!("server: PostgreSQL {version} has no pgoutput logical decoding"),
            Some(format!(
                "upgrade to PostgreSQL {}–{} (the versions the bridge is tested on)",
                TESTED.0, TESTED.1
            )),
        );
    }
    let mut can = vec!["data events"];
    let mut cannot = Vec::new();
    if version_num >= PG14 {
        can.push("custom events from pg_logical_emit_message");
    } else {
        cannot.push(
            "custom events from pg_logical_emit_message (pgoutput forwards logical messages \
             from 14; POST /io/emit works)",
        );
    }
    if version_num >= PG16 {
        can.push("decoding on a standby");
    } else {
        cannot.push("decoding on a standby (16+)");
    }
    if version_num >= PG17 {
        can.push("a failover slot that standbys with sync_replication_slots carry");
    } else {
        cannot.push(
            "keeping its slot across a failover (failover slots are 17+: after a failover the \
             bridge reports the lost slot and starts again from then)",
        );
    }
    let mut message = format!(
        "server: PostgreSQL {version}: the bridge can use {}",
        can.join(", ")
    );
    if !cannot.is_empty() {
        message.push_str(&format!("; cannot: {}", cannot.join("; ")));
    }
    if major < TESTED.0 {
        Finding::warning(
            format!(
                "{message}; PostgreSQL {major} is older than the tested {}–{}",
                TESTED.0, TESTED.1
            ),
            Some(format!("upgrade to PostgreSQL {}–{}", TESTED.0, TESTED.1)),
        )
    } else if major > TESTED.1 {
        Finding::warning(
            format!(
                "{message}; PostgreSQL {major} is newer than the tested {}–{}",
                TESTED.0, TESTED.1
            ),
            None,
        )
    } else if version_num < PG14 {
        Finding::warning(
            message,
            Some("upgrade to PostgreSQL 14 or later to emit custom events from SQL".to_owned()),
        )
    } else {
        Finding::ok(message)
    }
}

/// The bridge is pointed at a standby.
fn standby_finding(version_num: u32) -> Finding {
    if version_num >= PG16 {
        Finding::ok(
            "this server is a standby: the bridge decodes here (its slot lives on this standby; \
             the primary needs hot_standby_feedback = on from it, and custom events from SQL are \
             emitted on the primary)",
        )
    } else {
        Finding::error(
            "this server is a standby, and logical decoding on a standby needs PostgreSQL 16",
            Some("point the bridge at the primary".to_owned()),
        )
    }
}

/// On PostgreSQL 17+ primaries with standbys: whether the bridge's failover slot is safe.
async fn check_failover_setup(
    client: &Client,
    report: &mut Report,
) -> Result<(), tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT (SELECT count(*)::int FROM pg_replication_slots WHERE slot_type = 'physical'),
                    current_setting('synchronized_standby_slots', true)",
            &[],
        )
        .await?;
    let physical: i32 = row.get(0);
    let synchronized: Option<String> = row.get(1);
    if physical > 0 && synchronized.as_deref().unwrap_or("").is_empty() {
        report.push(Finding::warning(
            format!(
                "{physical} physical slot(s) (standbys) but synchronized_standby_slots is empty: \
                 the bridge may be sent changes a standby has not received, which a failover to \
                 that standby would lose"
            ),
            Some(
                "ALTER SYSTEM SET synchronized_standby_slots = '<the standby''s physical slot>'; \
                 SELECT pg_reload_conf();\non the standby: sync_replication_slots = on, \
                 hot_standby_feedback = on, dbname in primary_conninfo"
                    .to_owned(),
            ),
        ));
    }
    Ok(())
}

/// A managed PostgreSQL service, recognised by its settings or roles. Those services refuse
/// `ALTER SYSTEM`; their settings are changed in the provider's console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Amazon RDS and Aurora PostgreSQL (`rds.*` settings, `rds_replication` role).
    Rds,
    /// Google Cloud SQL (`cloudsql.*` flags, `cloudsqlsuperuser` role).
    CloudSql,
    /// Azure Database for PostgreSQL (`azure.*` settings, `azure_pg_admin` role).
    Azure,
    /// Supabase (`supabase_admin` role).
    Supabase,
    /// Neon (`neon.*` settings, `neon_superuser` role).
    Neon,
}

impl Service {
    /// The service's name.
    pub fn name(self) -> &'static str {
        match self {
            Service::Rds => "Amazon RDS / Aurora",
            Service::CloudSql => "Google Cloud SQL",
            Service::Azure => "Azure Database for PostgreSQL",
            Service::Supabase => "Supabase",
            Service::Neon => "Neon",
        }
    }

    /// Which service, if any, from the settings present (name, value) and the roles that exist.
    pub fn recognise(settings: &[(&str, Option<&str>)], roles: &[&str]) -> Option<Service> {
        let setting = |name: &str| settings.iter().any(|(n, v)| *n == name && v.is_some());
        let role = |name: &str| roles.contains(&name);
        if setting("rds.logical_replication") || role("rds_replication") || role("rds_superuser") {
            Some(Service::Rds)
        } else if setting("cloudsql.logical_decoding") || role("cloudsqlsuperuser") {
            Some(Service::CloudSql)
        } else if setting("azure.replication_support") || role("azure_pg_admin") {
            Some(Service::Azure)
        } else if setting("neon.timeline_id") || role("neon_superuser") {
            Some(Service::Neon)
        } else if role("supabase_admin") {
            Some(Service::Supabase)
        } else {
            None
        }
    }
}

/// Settings and roles by which [`Service::recognise`] knows a service.
const SERVICE_SETTINGS: [&str; 4] = [
    "rds.logical_replication",
    "cloudsql.logical_decoding",
    "azure.replication_support",
    "neon.timeline_id",
];
const SERVICE_ROLES: [&str; 6] = [
    "rds_replication",
    "rds_superuser",
    "cloudsqlsuperuser",
    "azure_pg_admin",
    "neon_superuser",
    "supabase_admin",
];

async fn detect_service(client: &Client) -> Result<Option<Service>, tokio_postgres::Error> {
    let mut settings = Vec::new();
    for name in SERVICE_SETTINGS {
        // `missing_ok`: NULL when the server has no such setting (nor a placeholder for it).
        let value: Option<String> = client
            .query_one("SELECT current_setting($1, true)", &[&name])
            .await?
            .get(0);
        settings.push((name, value));
    }
    let roles: Vec<String> = client
        .query(
            "SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1)",
            &[&&SERVICE_ROLES[..]],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let settings: Vec<(&str, Option<&str>)> =
        settings.iter().map(|(n, v)| (*n, v.as_deref())).collect();
    let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
    Ok(Service::recognise(&settings, &roles))
}

/// How to turn on logical decoding: the service's console setting, else `ALTER SYSTEM`.
pub fn wal_level_fix(service: Option<Service>) -> String {
    match service {
        Some(Service::Rds) => "in the DB parameter group (cluster parameter group on Aurora) set \
             rds.logical_replication = 1, then reboot the instance"
            .to_owned(),
        Some(Service::CloudSql) => {
            "set the database flag cloudsql.logical_decoding = on (console: \
             Edit → Flags, or gcloud sql instances patch <instance> \
             --database-flags=cloudsql.logical_decoding=on); the instance restarts"
                .to_owned()
        }
        Some(Service::Azure) => "in the Azure portal, Server parameters: set wal_level = logical \
             (flexible server; azure.replication_support = logical on single server), save, then \
             restart the server"
            .to_owned(),
        Some(Service::Supabase) => "Supabase runs with wal_level = logical: connect with the \
             direct connection string (db.<project>.supabase.co:5432), not the pooler"
            .to_owned(),
        Some(Service::Neon) => "in the Neon console: Project settings → Logical Replication → \
             Enable; then connect with the direct (non -pooler) connection string"
            .to_owned(),
        None => "ALTER SYSTEM SET wal_level = logical;   -- as a superuser\nthen restart \
                 PostgreSQL (e.g. systemctl restart postgresql)"
            .to_owned(),
    }
}

/// How to change a server setting: the service's console, else `ALTER SYSTEM`.
fn setting_fix(service: Option<Service>, name: &str, value: &str) -> String {
    match service {
        Some(s) => format!(
            "set {name} = {value} in the {} console (server parameters, parameter group or \
             flags)",
            s.name()
        ),
        None => format!(
            "ALTER SYSTEM SET {name} = {value};  -- as a superuser, then SELECT pg_reload_conf(); \
             (max_replication_slots and max_wal_senders need a restart)"
        ),
    }
}

/// How to let `user` stream: the service's replication role or the `REPLICATION` attribute.
pub fn replication_grant_fix(service: Option<Service>, user: &str) -> String {
    let role = quote_ident(user);
    match service {
        Some(Service::Rds) => {
            format!("GRANT rds_replication TO {role};   -- as the master user (rds_superuser)")
        }
        Some(Service::CloudSql) => format!(
            "ALTER ROLE {role} WITH REPLICATION;   -- as a cloudsqlsuperuser (the postgres user)"
        ),
        Some(Service::Azure) => {
            format!("ALTER ROLE {role} WITH REPLICATION;   -- as the server admin (azure_pg_admin)")
        }
        Some(Service::Supabase) => {
            format!("ALTER ROLE {role} WITH REPLICATION;   -- as the postgres user (SQL editor)")
        }
        Some(Service::Neon) => format!(
            "ALTER ROLE {role} WITH REPLICATION;   -- as a neon_superuser (the project owner role)"
        ),
        None => format!("ALTER ROLE {role} REPLICATION;   -- as a superuser"),
    }
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
                    COALESCE(pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery()
                                                  THEN pg_last_wal_replay_lsn()
                                                  ELSE pg_current_wal_lsn() END,
                                             confirmed_flush_lsn), 0)::bigint,
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
    if let Some(finding) = slot_health(client, &db.slot).await? {
        let fatal = finding.level == Level::Error;
        report.push(finding);
        if fatal {
            return Ok(());
        }
    }
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

/// The slot's WAL state (13+), invalidation (`wal_status = 'lost'`; the reason on 17+) and
/// failover flag (17+): `None` when all is well.
async fn slot_health(
    client: &Client,
    slot: &str,
) -> Result<Option<Finding>, tokio_postgres::Error> {
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await?
        .get(0);
    let version = u32::try_from(version).unwrap_or(0);
    if version < 130_000 {
        return Ok(None);
    }
    let sql = if version >= PG17 {
        "SELECT wal_status, invalidation_reason, failover, pg_is_in_recovery()
           FROM pg_replication_slots WHERE slot_name = $1"
    } else {
        "SELECT wal_status, NULL::text, NULL::bool, pg_is_in_recovery()
           FROM pg_replication_slots WHERE slot_name = $1"
    };
    let Some(row) = client.query_opt(sql, &[&slot]).await? else {
        return Ok(None);
    };
    let wal_status: Option<String> = row.get(0);
    let reason: Option<String> = row.get(1);
    let failover: Option<bool> = row.get(2);
    let in_recovery: bool = row.get(3);
    Ok(slot_state_finding(
        slot,
        wal_status.as_deref(),
        reason.as_deref(),
        failover,
        in_recovery,
    ))
}

/// What to say about a slot's state; `None` when there is nothing to say.
fn slot_state_finding(
    slot: &str,
    wal_status: Option<&str>,
    invalidation_reason: Option<&str>,
    failover: Option<bool>,
    in_recovery: bool,
) -> Option<Finding> {
    if wal_status == Some("lost") || invalidation_reason.is_some() {
        return Some(Finding::error(
            format!(
                "slot {slot} is invalidated ({}): PostgreSQL no longer has the changes it                  needs, and the bridge will not start from it",
                match invalidation_reason {
                    Some("wal_removed") | None => {
                        "the WAL it needed was removed: it fell more than max_slot_wal_keep_size                          behind"
                            .to_owned()
                    }
                    Some(other) => format!("invalidation_reason = {other}"),
                }
            ),
            Some(format!(
                "SELECT pg_drop_replication_slot({});   -- then start the bridge: it creates the                  slot again and streams from then on; changes in between are not sent (clients                  should reload)",
                quote_literal(slot)
            )),
        ));
    }
    if wal_status == Some("unreserved") {
        return Some(Finding::warning(
            format!(
                "slot {slot}: wal_status = unreserved: it is beyond max_slot_wal_keep_size and                  will be invalidated at the next checkpoint"
            ),
            Some(
                "start the bridge now so it catches up, or raise max_slot_wal_keep_size".to_owned(),
            ),
        ));
    }
    if failover == Some(false) && !in_recovery {
        return Some(Finding::warning(
            format!(
                "slot {slot} was created without failover: standbys do not carry it, so a                  failover loses it"
            ),
            Some(
                "the bridge turns failover on when it next starts (ALTER_REPLICATION_SLOT …                  (FAILOVER true))"
                    .to_owned(),
            ),
        ));
    }
    None
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

/// The role name suggested for a separate replication role.
pub const REPLICATION_ROLE: &str = "strapi_io_bridge";

/// The grants that let a separate role run the bridge without being a superuser or owning
/// Strapi's tables (as on managed services): `(as an administrator, as the tables' owner)`.
/// The publication is the owner's, made by the set-up SQL; this role only streams and reads.
pub fn replication_role_sql(role: &str, database: &str, schema: &str) -> (String, String) {
    let role = quote_ident(role);
    let database = quote_ident(database);
    let schema = quote_ident(schema);
    let admin = format!(
        "CREATE ROLE {role} LOGIN PASSWORD 'change-me';\n\
         ALTER ROLE {role} WITH REPLICATION;\n\
         GRANT CONNECT ON DATABASE {database} TO {role};\n"
    );
    let owner = format!(
        "GRANT USAGE ON SCHEMA {schema} TO {role};\n\
         GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role};\n\
         ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {role};\n"
    );
    (admin, owner)
}

/// [`replication_role_sql`] for the configured database and schema, as SQL comments (so the
/// printed set-up SQL stays safe to pipe into psql).
fn replication_role_comment(cfg: &Config) -> String {
    let database = cfg.database.pg.get_dbname().unwrap_or("strapi");
    let (admin, owner) = replication_role_sql(REPLICATION_ROLE, database, &cfg.database.schema);
    let comment = |sql: &str| {
        sql.lines()
            .map(|l| format!("--   {l}\n"))
            .collect::<String>()
    };
    format!(
        "\n-- A separate replication role (not a superuser, owns nothing): run as an administrator\n\
         -- (a superuser; RDS: rds_superuser; Cloud SQL: cloudsqlsuperuser; Azure: azure_pg_admin):\n\
         {}\
         -- (Amazon RDS / Aurora: instead of ALTER ROLE … WITH REPLICATION,\n\
         --    GRANT rds_replication TO {role};)\n\
         -- then as Strapi's database user (the tables' owner, who made the publication above):\n\
         {}\
         -- and point the bridge at it: DATABASE_URL=postgres://{role}:…@<host>/{database}\n",
        comment(&admin),
        comment(&owner),
        role = REPLICATION_ROLE,
    )
}

/// The set-up SQL with the configured publication and schema, followed (as comments) by the
/// grants for a separate replication role.
pub fn setup_sql(cfg: &Config) -> String {
    let mut sql = setup_sql_only(cfg);
    sql.push_str(&replication_role_comment(cfg));
    sql
}

fn setup_sql_only(cfg: &Config) -> String {
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
    fn each_version_says_what_it_can_and_cannot_do() {
        let v13 = version_finding("13.23", 130_023);
        assert_eq!(v13.level, Level::Warning);
        assert!(
            v13.message.contains("cannot: custom events"),
            "{}",
            v13.message
        );
        assert!(v13.message.contains("failover"), "{}", v13.message);
        let v16 = version_finding("16.14", 160_014);
        assert_eq!(v16.level, Level::Ok);
        assert!(v16.message.contains("can use data events, custom events"));
        assert!(v16.message.contains("decoding on a standby"));
        assert!(
            v16.message
                .contains("cannot: keeping its slot across a failover")
        );
        let v17 = version_finding("17.10", 170_010);
        assert_eq!(v17.level, Level::Ok);
        assert!(!v17.message.contains("cannot"), "{}", v17.message);
        assert!(v17.message.contains("failover slot"));
        assert_eq!(version_finding("12.20", 120_020).level, Level::Warning);
        assert_eq!(version_finding("19.0", 190_000).level, Level::Warning);
        assert_eq!(version_finding("9.6", 90_600).level, Level::Error);
        assert_eq!(standby_finding(150_000).level, Level::Error);
        assert_eq!(standby_finding(160_000).level, Level::Ok);
    }

    #[test]
    fn managed_services_are_recognised_by_their_settings_and_roles() {
        assert_eq!(
            Service::recognise(&[("rds.logical_replication", Some("off"))], &[]),
            Some(Service::Rds)
        );
        assert_eq!(
            Service::recognise(&[("rds.logical_replication", None)], &[]),
            None,
            "an absent setting says nothing"
        );
        assert_eq!(
            Service::recognise(&[], &["rds_replication"]),
            Some(Service::Rds)
        );
        assert_eq!(
            Service::recognise(&[("cloudsql.logical_decoding", Some("off"))], &[]),
            Some(Service::CloudSql)
        );
        assert_eq!(
            Service::recognise(&[("azure.replication_support", Some("REPLICA"))], &[]),
            Some(Service::Azure)
        );
        assert_eq!(
            Service::recognise(&[("neon.timeline_id", Some("abc"))], &[]),
            Some(Service::Neon)
        );
        assert_eq!(
            Service::recognise(&[], &["supabase_admin"]),
            Some(Service::Supabase)
        );
        assert_eq!(Service::recognise(&[], &[]), None);
    }

    #[test]
    fn managed_services_get_their_console_setting_instead_of_alter_system() {
        assert!(wal_level_fix(None).starts_with("ALTER SYSTEM SET wal_level = logical"));
        for (service, needle) in [
            (Service::Rds, "rds.logical_replication = 1"),
            (Service::CloudSql, "cloudsql.logical_decoding=on"),
            (Service::Azure, "Server parameters"),
            (Service::Supabase, "direct connection string"),
            (Service::Neon, "Logical Replication"),
        ] {
            let fix = wal_level_fix(Some(service));
            assert!(fix.contains(needle), "{service:?}: {fix}");
            assert!(!fix.contains("ALTER SYSTEM"), "{service:?}: {fix}");
            assert!(
                !setting_fix(Some(service), "max_wal_senders", "12").starts_with("ALTER SYSTEM"),
                "{service:?}"
            );
        }
        assert_eq!(
            replication_grant_fix(Some(Service::Rds), "bridge"),
            "GRANT rds_replication TO \"bridge\";   -- as the master user (rds_superuser)"
        );
        assert!(replication_grant_fix(None, "b").starts_with("ALTER ROLE \"b\" REPLICATION"));
    }

    #[test]
    fn an_invalidated_slot_is_an_error_that_says_what_to_do() {
        let lost = slot_state_finding("s", Some("lost"), None, None, false).unwrap();
        assert_eq!(lost.level, Level::Error);
        assert!(
            lost.message.contains("max_slot_wal_keep_size"),
            "{}",
            lost.message
        );
        assert!(lost.fix.unwrap().contains("pg_drop_replication_slot('s')"));
        let idle =
            slot_state_finding("s", Some("lost"), Some("idle_timeout"), Some(true), false).unwrap();
        assert!(idle.message.contains("idle_timeout"), "{}", idle.message);
        assert_eq!(
            slot_state_finding("s", Some("unreserved"), None, None, false)
                .unwrap()
                .level,
            Level::Warning
        );
        assert_eq!(
            slot_state_finding("s", Some("reserved"), None, Some(false), false)
                .unwrap()
                .level,
            Level::Warning
        );
        assert!(slot_state_finding("s", Some("reserved"), None, Some(true), false).is_none());
        assert!(slot_state_finding("s", Some("extended"), None, None, false).is_none());
    }

    #[test]
    fn the_replication_role_gets_exactly_stream_and_read() {
        let (admin, owner) = replication_role_sql("bridge", "strapi", "public");
        assert_eq!(
            admin,
            "CREATE ROLE \"bridge\" LOGIN PASSWORD 'change-me';\n\
             ALTER ROLE \"bridge\" WITH REPLICATION;\n\
             GRANT CONNECT ON DATABASE \"strapi\" TO \"bridge\";\n"
        );
        assert!(owner.contains("GRANT SELECT ON ALL TABLES IN SCHEMA \"public\" TO \"bridge\";"));
        assert!(!owner.contains("INSERT") && !owner.contains("CREATE"));
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
