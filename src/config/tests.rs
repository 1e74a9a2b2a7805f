//! Config parsing, validation and precedence.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::*;

fn env(pairs: &[(&str, &str)], origin: &str) -> EnvVars {
    EnvVars::new(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<HashMap<_, _>>(),
        origin,
    )
}

fn sources(toml_text: &str) -> Sources {
    Sources {
        file: RawConfig::parse(toml_text, Path::new("config.toml"))
            .unwrap_or_else(|e| panic!("sample should parse: {e}")),
        file_path: PathBuf::from("config.toml"),
        ..Sources::default()
    }
}

fn resolve(src: &Sources) -> Config {
    Config::resolve(src).unwrap_or_else(|e| panic!("should resolve: {e}"))
}

fn resolve_err(src: &Sources) -> String {
    match Config::resolve(src) {
        Ok(c) => panic!("should fail, resolved to {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_sample_config_parses_and_resolves() {
    let text = include_str!("../../config.toml");
    let cfg = resolve(&sources(text));
    assert_eq!(cfg.database.slot, "strapi_io");
    assert_eq!(cfg.database.publication, "strapi_io");
    assert_eq!(cfg.server.listen.to_string(), "0.0.0.0:1338");
    assert_eq!(cfg.io.path, "/socket.io");
    assert_eq!(cfg.auth.permission_mode, PermissionMode::Read);
    assert_eq!(cfg.auth.public_role_name, "Public");
}

#[test]
fn an_empty_file_gives_the_documented_defaults() {
    let cfg = resolve(&sources(""));
    assert_eq!(
        cfg.database.display_target(),
        "strapi@127.0.0.1:5432/strapi"
    );
    assert_eq!(cfg.database.ssl_mode, SslMode::Prefer);
    assert_eq!(cfg.io.ping_interval, Duration::from_millis(25_000));
    assert_eq!(cfg.io.ping_timeout, Duration::from_millis(20_000));
    assert_eq!(cfg.io.connect_timeout, Duration::from_millis(45_000));
    assert_eq!(cfg.io.max_payload_bytes, 1_000_000);
    assert_eq!(
        cfg.io.transports,
        vec![Transport::Polling, Transport::Websocket]
    );
    assert!(cfg.io.cors.is_none(), "no CORS unless configured");
    assert_eq!(cfg.content_types, ContentTypesConfig::Unset);
    assert_eq!(cfg.message_prefix, "strapi_io");
    assert!(cfg.admin_token.is_none());
    assert!(cfg.events.is_empty());
}

#[test]
fn unknown_keys_name_the_key_and_the_line() {
    let text = "[database]\nslot = \"s\"\nsloot = \"x\"\n";
    let err = match RawConfig::parse(text, Path::new("c.toml")) {
        Ok(_) => panic!("unknown key accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("c.toml, line 3"), "{err}");
    assert!(err.contains("sloot"), "{err}");
}

#[test]
fn wrong_types_name_the_key_and_the_line() {
    let text = "[server]\nlisten = \"0.0.0.0:1\"\n\n[io]\nping_interval_ms = \"soon\"\n";
    let err = match RawConfig::parse(text, Path::new("c.toml")) {
        Ok(_) => panic!("wrong type accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("line 5"), "{err}");
}

#[test]
fn environment_overrides_the_file_and_flags_override_the_environment() {
    let mut src = sources(
        "[database]\nurl = \"postgres://file:pw@filehost/filedb\"\n[server]\nlisten = \"127.0.0.1:1\"\n",
    );
    assert_eq!(
        resolve(&src).database.display_target(),
        "file@filehost:5432/filedb"
    );

    src.strapi_env = Some(env(
        &[("DATABASE_URL", "postgres://dotenv:pw@dotenvhost/dotenvdb")],
        "strapi/.env",
    ));
    assert_eq!(
        resolve(&src).database.display_target(),
        "dotenv@dotenvhost:5432/dotenvdb"
    );

    src.env = env(
        &[("DATABASE_URL", "postgres://env:pw@envhost:6543/envdb")],
        "the environment",
    );
    let cfg = resolve(&src);
    assert_eq!(cfg.database.display_target(), "env@envhost:6543/envdb");
    assert!(cfg.database.url_origin.contains("the environment"));

    src.cli.database_url = Some("postgres://cli:pw@clihost/clidb".to_owned());
    src.cli.listen = Some("127.0.0.1:2".to_owned());
    let cfg = resolve(&src);
    assert_eq!(cfg.database.display_target(), "cli@clihost:5432/clidb");
    assert_eq!(cfg.server.listen.to_string(), "127.0.0.1:2");
}

#[test]
fn strapi_database_variables_build_the_url() {
    let mut src = sources("");
    src.strapi_env = Some(env(
        &[
            ("DATABASE_CLIENT", "postgres"),
            ("DATABASE_HOST", "db.internal"),
            ("DATABASE_PORT", "5433"),
            ("DATABASE_NAME", "site"),
            ("DATABASE_USERNAME", "site_user"),
            ("DATABASE_PASSWORD", "p'w"),
            ("DATABASE_SSL", "false"),
            ("DATABASE_SCHEMA", "cms"),
            ("JWT_SECRET", "jwt-from-dotenv"),
            ("API_TOKEN_SALT", "salt-from-dotenv"),
        ],
        "/srv/site/.env",
    ));
    let cfg = resolve(&src);
    assert_eq!(
        cfg.database.display_target(),
        "site_user@db.internal:5433/site"
    );
    assert_eq!(cfg.database.pg.get_password(), Some(&b"p'w"[..]));
    assert_eq!(cfg.database.ssl_mode, SslMode::Disable);
    assert_eq!(cfg.database.schema, "cms");
    assert_eq!(
        cfg.auth.jwt_secret.as_ref().map(Secret::expose),
        Some("jwt-from-dotenv")
    );
    assert!(
        cfg.auth
            .jwt_secret_origin
            .as_deref()
            .is_some_and(|o| o.contains("/srv/site/.env"))
    );
    assert_eq!(
        cfg.auth.api_token_salt.as_ref().map(Secret::expose),
        Some("salt-from-dotenv")
    );

    // The process environment wins over .env, variable by variable.
    src.env = env(
        &[
            ("DATABASE_HOST", "override"),
            ("JWT_SECRET", "jwt-from-env"),
        ],
        "the environment",
    );
    let cfg = resolve(&src);
    assert_eq!(
        cfg.database.display_target(),
        "site_user@override:5433/site"
    );
    assert_eq!(
        cfg.auth.jwt_secret.as_ref().map(Secret::expose),
        Some("jwt-from-env")
    );
}

#[test]
fn database_ssl_follows_strapi_reject_unauthorized() {
    let mut src = sources("");
    src.strapi_env = Some(env(
        &[("DATABASE_HOST", "h"), ("DATABASE_SSL", "true")],
        ".env",
    ));
    assert_eq!(resolve(&src).database.ssl_mode, SslMode::VerifyFull);
    src.strapi_env = Some(env(
        &[
            ("DATABASE_HOST", "h"),
            ("DATABASE_SSL", "true"),
            ("DATABASE_SSL_REJECT_UNAUTHORIZED", "false"),
        ],
        ".env",
    ));
    assert_eq!(resolve(&src).database.ssl_mode, SslMode::Require);
}

#[test]
fn a_non_postgres_strapi_project_is_a_clear_error() {
    let mut src = sources("");
    src.strapi_env = Some(env(&[("DATABASE_CLIENT", "sqlite")], "/srv/site/.env"));
    let err = resolve_err(&src);
    assert!(err.contains("DATABASE_CLIENT from /srv/site/.env"), "{err}");
    assert!(err.contains("\"sqlite\""), "{err}");
    assert!(err.contains("PostgreSQL"), "{err}");
}

#[test]
fn sslmode_and_sslrootcert_are_read_from_the_url() {
    let src = sources(
        "[database]\nurl = \"postgres://u:p@h/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x\"\n",
    );
    let cfg = resolve(&src);
    assert_eq!(cfg.database.ssl_mode, SslMode::VerifyFull);
    assert_eq!(
        cfg.database.ssl_root_cert.as_deref(),
        Some(Path::new("/etc/ca.pem"))
    );
    assert_eq!(cfg.database.pg.get_application_name(), Some("x"));

    let bad = sources("[database]\nurl = \"postgres://u:p@h/db?sslmode=sometimes\"\n");
    let err = resolve_err(&bad);
    assert!(err.contains("sslmode"), "{err}");
    assert!(!err.contains(":p@"), "password leaked: {err}");
}

#[test]
fn secrets_never_show_in_debug_output() {
    let mut src = sources(
        "[database]\nurl = \"postgres://u:hunter2@h/db\"\n[auth]\njwt_secret = \"s3cr3t\"\n[admin]\ntoken = \"adm1n\"\n",
    );
    src.env = env(&[("API_TOKEN_SALT", "s4lt")], "the environment");
    let cfg = resolve(&src);
    let debug = format!("{cfg:?}");
    for secret in ["hunter2", "s3cr3t", "adm1n", "s4lt"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    assert_eq!(
        redact_url("postgres://u:hunter2@h/db"),
        "postgres://u:***@h/db"
    );
}

#[test]
fn content_types_accept_star_a_table_or_the_flag() {
    assert_eq!(
        resolve(&sources("content_types = \"*\"\n")).content_types,
        ContentTypesConfig::All
    );
    let cfg = resolve(&sources(
        "[content_types]\nmessage = \"*\"\nchat = [\"create\"]\n\"api::homepage.homepage\" = [\"createOrUpdate\", \"publish\"]\n",
    ));
    assert_eq!(
        cfg.content_types,
        ContentTypesConfig::Some(vec![
            (
                "api::homepage.homepage".to_owned(),
                ActionFilter::Only(vec!["createOrUpdate".to_owned(), "publish".to_owned()])
            ),
            (
                "chat".to_owned(),
                ActionFilter::Only(vec!["create".to_owned()])
            ),
            ("message".to_owned(), ActionFilter::All),
        ])
    );
    let mut src = sources("[content_types]\nmessage = [\"create\"]\n");
    src.cli.content_types = Some("message, chat".to_owned());
    assert_eq!(
        resolve(&src).content_types,
        ContentTypesConfig::Some(vec![
            ("message".to_owned(), ActionFilter::All),
            ("chat".to_owned(), ActionFilter::All),
        ])
    );
}

#[test]
fn unknown_actions_list_the_known_ones() {
    let err = resolve_err(&sources("[content_types]\nchat = [\"created\"]\n"));
    assert!(err.contains("content_types.chat"), "{err}");
    assert!(err.contains("\"created\""), "{err}");
    assert!(err.contains("createOrUpdate"), "{err}");
}

#[test]
fn event_handlers_are_checked_at_start() {
    let cfg = resolve(&sources(
        "[webhooks]\nsecret = \"0123456789abcdef0123\"\n\n[[events]]\nname = \"connection\"\nhandler = \"log\"\n\n[[events]]\nname = \"chat:typing\"\nhandler = \"relay\"\nrooms = [\"Authenticated\"]\n\n[[events]]\nname = \"order:place\"\nhandler = \"webhook\"\nurl = \"http://127.0.0.1:1337/api/orders/socket\"\n",
    ));
    assert_eq!(cfg.events.len(), 3);
    assert_eq!(
        cfg.events[2].handler,
        EventHandler::Webhook {
            url: "http://127.0.0.1:1337/api/orders/socket".to_owned(),
            timeout: Duration::from_millis(DEFAULT_WEBHOOK_TIMEOUT_MS)
        }
    );
    for (text, needle) in [
        (
            "[[events]]\nname = \"x\"\nhandler = \"shout\"\n",
            "unknown handler \"shout\"",
        ),
        (
            "[[events]]\nname = \"x\"\nhandler = \"webhook\"\n",
            "needs a url",
        ),
        ("[[events]]\nhandler = \"log\"\n", "events[0]: needs a name"),
        (
            "[[events]]\nname = \"x\"\n",
            "events[0] (x): needs a handler",
        ),
        (
            "[[events]]\nname = \"x\"\nhandler = \"log\"\nurl = \"http://a\"\n",
            "webhook handler only",
        ),
    ] {
        let err = resolve_err(&sources(text));
        assert!(err.contains(needle), "{text}: {err}");
    }
}

#[test]
fn bad_values_say_what_is_expected() {
    for (text, needle) in [
        ("[server]\nlisten = \"1338\"\n", "server.listen"),
        ("[io]\npath = \"socket.io\"\n", "must start with /"),
        (
            "[io]\ntransports = [\"carrier-pigeon\"]\n",
            "unknown transport",
        ),
        ("[io]\nping_interval_ms = 0\n", "greater than 0"),
        (
            "[auth]\npermission_mode = \"write\"\n",
            "\"read\" or \"action\"",
        ),
        ("[database]\nslot = \"Bad-Name\"\n", "database.slot"),
        ("[database]\nurl = \"mysql://x\"\n", "database.url"),
        ("content_types = \"all\"\n", "content_types"),
    ] {
        let err = resolve_err(&sources(text));
        assert!(err.contains(needle), "{text}: {err}");
    }
}

#[test]
fn cors_star_means_any_origin() {
    let cfg = resolve(&sources("[io.cors]\norigin = \"*\"\n"));
    let cors = cfg.io.cors.unwrap_or_else(|| panic!("cors configured"));
    assert_eq!(cors.origins, None);
    let cfg = resolve(&sources(
        "[io.cors]\norigin = [\"http://localhost:5000\"]\nmethods = [\"GET\"]\ncredentials = true\n",
    ));
    assert_eq!(
        cfg.io.cors,
        Some(CorsConfig {
            origins: Some(vec!["http://localhost:5000".to_owned()]),
            methods: vec!["GET".to_owned()],
            credentials: true
        })
    );
}

#[test]
fn dotenv_parsing_follows_dotenv_rules() {
    let vars = EnvVars::parse_dotenv(
        "# comment\nHOST=0.0.0.0\nexport PORT=1337\nAPP_KEYS=\"a,b\"\nJWT_SECRET='x=y'\nEMPTY=\nTRAIL=v # note\n",
        ".env",
    );
    assert_eq!(vars.get("HOST"), Some("0.0.0.0"));
    assert_eq!(vars.get("PORT"), Some("1337"));
    assert_eq!(vars.get("APP_KEYS"), Some("a,b"));
    assert_eq!(vars.get("JWT_SECRET"), Some("x=y"));
    assert_eq!(vars.get("EMPTY"), None);
    assert_eq!(vars.get("TRAIL"), Some("v"));
}

#[test]
fn the_proxy_is_off_unless_an_http_upstream_is_given() {
    assert_eq!(resolve(&sources("")).proxy, None);
    let cfg = resolve(&sources("[proxy]\nupstream = \"http://127.0.0.1:1337/\"\n"));
    assert_eq!(
        cfg.proxy,
        Some(ProxyConfig {
            upstream: "http://127.0.0.1:1337".to_owned(),
            api_prefix: "/api".to_owned(),
        })
    );
    let cases = [
        (
            "upstream = \"https://strapi.example.com\"",
            "proxy.upstream",
        ),
        ("upstream = \"127.0.0.1:1337\"", "must be an http:// URL"),
        ("upstream = \"http://\"", "must be http://host:port"),
        (
            "upstream = \"http://u:p@host:1337\"",
            "must be http://host:port",
        ),
        (
            "upstream = \"http://h:1337\"\napi_prefix = \"api\"",
            "proxy.api_prefix",
        ),
        (
            "upstream = \"http://h:1337\"\napi_prefix = \"/api/\"",
            "proxy.api_prefix",
        ),
    ];
    for (text, want) in cases {
        let err = resolve_err(&sources(&format!("[proxy]\n{text}\n")));
        assert!(err.contains(want), "{text}: {err}");
    }
}

#[test]
fn jwt_management_comes_from_config_toml_then_the_projects_plugins_js() {
    let dir = std::env::temp_dir().join(format!("jwt-mode-{}", std::process::id()));
    let _ = std::fs::create_dir_all(dir.join("config"));
    let mut src = sources("");
    assert_eq!(
        resolve(&src).auth.jwt_management,
        JwtManagement::LegacySupport
    );
    src.strapi_dir = Some(dir.clone());
    assert_eq!(
        resolve(&src).auth.jwt_management,
        JwtManagement::LegacySupport
    );
    let _ = std::fs::write(
        dir.join("config/plugins.js"),
        "module.exports = () => ({ 'users-permissions': { config: { jwtManagement: 'refresh' } } });",
    );
    let auth = resolve(&src).auth;
    assert_eq!(auth.jwt_management, JwtManagement::Refresh);
    assert!(
        auth.jwt_management_origin.contains("plugins.js"),
        "{}",
        auth.jwt_management_origin
    );
    let mut explicit = sources("[auth]\njwt_management = \"legacy-support\"\n");
    explicit.strapi_dir = Some(dir.clone());
    assert_eq!(
        resolve(&explicit).auth.jwt_management,
        JwtManagement::LegacySupport
    );
    let err = resolve_err(&sources("[auth]\njwt_management = \"session\"\n"));
    assert!(
        err.contains("auth.jwt_management") && err.contains("refresh"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cors_star_with_credentials_is_refused_naming_the_key_and_the_fix() {
    for origin in ["\"*\"", "[\"http://a.example\", \"*\"]"] {
        let err = resolve_err(&sources(&format!(
            "[io.cors]\norigin = {origin}\ncredentials = true\n"
        )));
        assert!(err.starts_with("io.cors.origin: "), "{err}");
        assert!(err.contains("credentials = false"), "{err}");
        assert!(err.contains("origin = [\"https://"), "{err}");
    }
}

#[test]
fn read_actions_and_joinable_rooms_are_accepted() {
    let cfg = resolve(&sources(
        "[io]\njoinable_rooms = [\"lobby\"]\n[content_types]\nmessage = [\"find\", \"findOne\", \"create\"]\n",
    ));
    assert_eq!(cfg.io.joinable_rooms, vec!["lobby".to_owned()]);
    assert_eq!(
        cfg.content_types,
        ContentTypesConfig::Some(vec![(
            "message".to_owned(),
            ActionFilter::Only(vec!["find".into(), "findOne".into(), "create".into()])
        )])
    );
    let err = resolve_err(&sources("[content_types]\nmessage = [\"read\"]\n"));
    assert!(err.contains("find, findOne"), "{err}");
    let err = resolve_err(&sources("[io]\njoinable_rooms = [\"sub:x\"]\n"));
    assert!(err.contains("io.joinable_rooms"), "{err}");
}

#[test]
fn limits_have_the_documented_defaults() {
    let cfg = resolve(&sources(""));
    let l = &cfg.limits;
    assert_eq!(l.ws_max_message_bytes, 1_000_000);
    assert_eq!(l.ws_max_frame_bytes, 1_000_000);
    assert_eq!(l.http_max_body_bytes, 1_000_000);
    assert_eq!(l.client_events_per_second, 10);
    assert_eq!(l.client_events_burst, 20);
    assert_eq!(l.webhook_max_in_flight, 64);
    assert_eq!(l.webhook_max_response_bytes, 1_000_000);
    assert!(l.webhook_secret.is_none());
    assert_eq!(l.metrics, MetricsAccess::Public);
    // The WebSocket limits and the emit API's body follow io.max_payload_bytes.
    let cfg = resolve(&sources("[io]\nmax_payload_bytes = 5000\n"));
    assert_eq!(cfg.limits.ws_max_message_bytes, 5000);
    assert_eq!(cfg.limits.http_max_body_bytes, 5000);
    let cfg = resolve(&sources(
        "[io]\nws_max_message_bytes = 7000\nws_max_frame_bytes = 3000\n\
         client_events_per_second = 2\nclient_events_burst = 4\n\
         [webhooks]\nmax_in_flight = 3\nmax_response_bytes = 100\n[metrics]\naccess = \"off\"\n",
    ));
    let l = &cfg.limits;
    assert_eq!((l.ws_max_message_bytes, l.ws_max_frame_bytes), (7000, 3000));
    assert_eq!((l.client_events_per_second, l.client_events_burst), (2, 4));
    assert_eq!(
        (l.webhook_max_in_flight, l.webhook_max_response_bytes),
        (3, 100)
    );
    assert_eq!(l.metrics, MetricsAccess::Off);
}

#[test]
fn webhooks_need_a_secret_and_metrics_admin_needs_the_admin_token() {
    let hook = "[[events]]\nname = \"order:place\"\nhandler = \"webhook\"\nurl = \"http://127.0.0.1:1337/api/orders/socket\"\n";
    let err = resolve_err(&sources(hook));
    assert!(err.starts_with("webhooks.secret: "), "{err}");
    assert!(err.contains("STRAPI_IO_WEBHOOK_SECRET"), "{err}");
    assert!(err.contains("\"order:place\""), "{err}");

    let err = resolve_err(&sources(&format!("[webhooks]\nsecret = \"short\"\n{hook}")));
    assert!(err.contains("at least 16"), "{err}");

    let mut src = sources(hook);
    src.env = env(
        &[("STRAPI_IO_WEBHOOK_SECRET", "0123456789abcdef0123")],
        "the environment",
    );
    let cfg = resolve(&src);
    assert_eq!(
        cfg.limits.webhook_secret.as_ref().map(Secret::expose),
        Some("0123456789abcdef0123")
    );
    assert!(!format!("{cfg:?}").contains("0123456789abcdef0123"));

    let err = resolve_err(&sources("[metrics]\naccess = \"admin\"\n"));
    assert!(err.starts_with("metrics.access: "), "{err}");
    assert!(err.contains("STRAPI_IO_ADMIN_TOKEN"), "{err}");
    let cfg = resolve(&sources(
        "[metrics]\naccess = \"admin\"\n[admin]\ntoken = \"t\"\n",
    ));
    assert_eq!(cfg.limits.metrics, MetricsAccess::Admin);
    let err = resolve_err(&sources("[metrics]\naccess = \"private\"\n"));
    assert!(err.contains("\"public\", \"admin\" or \"off\""), "{err}");
    let err = resolve_err(&sources("[io]\nclient_events_burst = 0\n"));
    assert!(err.contains("greater than 0"), "{err}");
}

#[test]
fn privacy_keys_have_safe_defaults_and_are_checked() {
    let cfg = resolve(&sources(""));
    assert_eq!(cfg.io.max_event_bytes, 1024 * 1024);
    assert!(!cfg.allow_data_actions);
    assert!(cfg.strapi.private_attributes.is_empty());
    assert_eq!(cfg.strapi.api_js, ApiPrivateAttributes::NoStrapiDir);
    let sample = resolve(&sources(include_str!("../../config.toml")));
    assert_eq!(sample.io.max_event_bytes, 1024 * 1024);
    assert!(!sample.allow_data_actions);
    let cfg = resolve(&sources(
        "[io]\nmax_event_bytes = 2000\n[messages]\nallow_data_actions = true\n\
         [strapi]\nprivate_attributes = [\"createdBy\", \"internalNote\"]\n",
    ));
    assert_eq!(cfg.io.max_event_bytes, 2000);
    assert!(cfg.allow_data_actions);
    assert_eq!(cfg.strapi.private_attributes, ["createdBy", "internalNote"]);
    for (text, key) in [
        ("[io]\nmax_event_bytes = 0\n", "io.max_event_bytes"),
        (
            "[strapi]\nprivate_attributes = [\"\"]\n",
            "strapi.private_attributes",
        ),
    ] {
        match Config::resolve(&sources(text)) {
            Ok(_) => panic!("{text} accepted"),
            Err(e) => assert!(e.to_string().starts_with(key), "{e}"),
        }
    }
}

#[test]
fn subscriptions_per_socket_are_capped_and_configurable() {
    assert_eq!(
        resolve(&sources("")).limits.max_subscriptions_per_socket,
        100
    );
    let cfg = resolve(&sources("[io]\nmax_subscriptions_per_socket = 3\n"));
    assert_eq!(cfg.limits.max_subscriptions_per_socket, 3);
    let err = resolve_err(&sources("[io]\nmax_subscriptions_per_socket = 0\n"));
    assert!(err.contains("io.max_subscriptions_per_socket"), "{err}");
    assert!(err.contains("greater than 0"), "{err}");
}
