//! Route classification and payload stripping of read events.

use axum::http::Method;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::reads::{Read, Routes, strip};
use crate::config::{ActionFilter, ContentTypesConfig};
use crate::strapi::catalog::{Attribute, AttributeType};
use crate::strapi::{Catalog, CatalogHandle, ContentType, Kind};

fn attr(name: &str, kind: AttributeType, private: bool) -> Attribute {
    Attribute {
        name: name.to_owned(),
        column: name.to_owned(),
        kind,
        private,
    }
}

fn message() -> ContentType {
    ContentType {
        uid: "api::message.message".to_owned(),
        table: "messages".to_owned(),
        kind: Kind::Collection,
        singular_name: "message".to_owned(),
        plural_name: "messages".to_owned(),
        draft_and_publish: true,
        localized: false,
        attributes: vec![
            attr("text", AttributeType::String, false),
            attr("secret", AttributeType::String, true),
            attr("createdAt", AttributeType::DateTime, false),
            attr("publishedAt", AttributeType::DateTime, false),
        ],
    }
}

fn homepage() -> ContentType {
    ContentType {
        uid: "api::homepage.homepage".to_owned(),
        table: "homepages".to_owned(),
        kind: Kind::Single,
        singular_name: "homepage".to_owned(),
        plural_name: "homepages".to_owned(),
        draft_and_publish: true,
        localized: false,
        attributes: vec![attr("title", AttributeType::String, false)],
    }
}

fn user() -> ContentType {
    ContentType {
        uid: "plugin::users-permissions.user".to_owned(),
        table: "up_users".to_owned(),
        kind: Kind::Collection,
        singular_name: "user".to_owned(),
        plural_name: "users".to_owned(),
        draft_and_publish: false,
        localized: false,
        attributes: vec![attr("username", AttributeType::String, false)],
    }
}

fn routes(content_types: ContentTypesConfig) -> Routes {
    let catalog = CatalogHandle::new(Catalog::new(vec![message(), homepage(), user()]));
    let (tx, _rx) = mpsc::channel(1);
    Routes::new("/api".to_owned(), content_types, catalog, tx, 1 << 20)
}

fn what(routes: &Routes, method: Method, path: &str) -> Option<String> {
    routes
        .classify(&method, path)
        .map(|c| format!("{} {:?}", c.content_type().uid, c.read()))
}

#[test]
fn list_entry_and_single_type_gets_are_reads_and_nothing_else_is() {
    let r = routes(ContentTypesConfig::All);
    let cases = [
        (
            Method::GET,
            "/api/messages",
            Some("api::message.message Find"),
        ),
        (
            Method::GET,
            "/api/messages/7",
            Some("api::message.message FindOne"),
        ),
        (
            Method::GET,
            "/api/homepage",
            Some("api::homepage.homepage Find"),
        ),
        // Not reads of a configured content type's REST route:
        (Method::POST, "/api/messages", None),
        (Method::HEAD, "/api/messages", None),
        (Method::GET, "/api/messages/7/extra", None),
        (Method::GET, "/api/messages/", None),
        (Method::GET, "/api/homepages", None),
        (Method::GET, "/api/homepage/1", None),
        (Method::GET, "/api/users", None),
        (Method::GET, "/api/users/1", None),
        (Method::GET, "/graphql", None),
        (Method::GET, "/messages", None),
        (Method::GET, "/apimessages", None),
        (Method::GET, "/uploads/a.png", None),
    ];
    for (method, path, want) in cases {
        assert_eq!(
            what(&r, method.clone(), path).as_deref(),
            want,
            "{method} {path}"
        );
    }
}

#[test]
fn only_content_types_whose_actions_include_the_read_emit() {
    let r = routes(ContentTypesConfig::Some(vec![
        (
            "message".to_owned(),
            ActionFilter::Only(vec!["findOne".to_owned(), "create".to_owned()]),
        ),
        (
            "homepage".to_owned(),
            ActionFilter::Only(vec!["update".to_owned()]),
        ),
        (
            "plugin::users-permissions.user".to_owned(),
            ActionFilter::All,
        ),
    ]));
    assert_eq!(what(&r, Method::GET, "/api/messages"), None);
    assert_eq!(
        what(&r, Method::GET, "/api/messages/1").as_deref(),
        Some("api::message.message FindOne")
    );
    assert_eq!(what(&r, Method::GET, "/api/homepage"), None);
    // Plugin routes never emit, even when the type is configured.
    assert_eq!(what(&r, Method::GET, "/api/users"), None);
    assert_eq!(
        what(
            &routes(ContentTypesConfig::Unset),
            Method::GET,
            "/api/messages"
        ),
        None
    );
}

#[test]
fn strip_keeps_public_scalar_attributes_and_meta() {
    let ct = message();
    let mut list = json!({
        "data": [{
            "id": 1,
            "attributes": {
                "text": "hi",
                "secret": "leaked by a custom controller",
                "createdAt": "2024-01-01T00:00:00.000Z",
                "publishedAt": null,
                "chat": {"data": {"id": 2, "attributes": {"name": "private chat"}}},
                "image": {"data": null},
                "seo": {"id": 3, "metaTitle": "x"},
                "localizations": {"data": []}
            }
        }],
        "meta": {"pagination": {"page": 1, "pageSize": 25, "pageCount": 1, "total": 1}},
        "extra": true
    });
    assert!(strip(&ct, Read::Find, &mut list));
    assert_eq!(
        list,
        json!({
            "data": [{
                "id": 1,
                "attributes": {
                    "text": "hi",
                    "createdAt": "2024-01-01T00:00:00.000Z",
                    "publishedAt": null
                }
            }],
            "meta": {"pagination": {"page": 1, "pageSize": 25, "pageCount": 1, "total": 1}}
        })
    );

    let mut one = json!({"data": {"id": 1, "attributes": {"text": "hi", "chat": {"data": null}}}, "meta": {}});
    assert!(strip(&ct, Read::FindOne, &mut one));
    assert_eq!(
        one,
        json!({"data": {"id": 1, "attributes": {"text": "hi"}}, "meta": {}})
    );

    let mut single = json!({"data": {"id": 1, "attributes": {"title": "Welcome"}}, "meta": {}});
    assert!(strip(&homepage(), Read::Find, &mut single));
}

#[test]
fn bodies_not_in_the_rest_shape_emit_nothing() {
    let ct = message();
    let not_rest: [(Read, Value); 7] = [
        (Read::Find, json!([1, 2])),
        (Read::Find, json!({"data": {"id": 1, "attributes": {}}})),
        (
            Read::FindOne,
            json!({"data": [{"id": 1, "attributes": {}}]}),
        ),
        (Read::FindOne, json!({"data": {"attributes": {}}})),
        (Read::FindOne, json!({"data": {"id": 1, "text": "flat"}})),
        (Read::FindOne, json!({"results": [], "pagination": {}})),
        (
            Read::FindOne,
            json!({"data": {"id": 1, "attributes": {}}, "meta": "x"}),
        ),
    ];
    for (read, mut body) in not_rest {
        let before = body.clone();
        assert!(!strip(&ct, read, &mut body), "{read:?} {before}");
    }
}

#[test]
fn is_under_matches_whole_segments() {
    assert!(super::is_under("/socket.io", "/socket.io"));
    assert!(super::is_under("/socket.io/", "/socket.io"));
    assert!(super::is_under("/io/emit", "/io"));
    assert!(!super::is_under("/socket.iox", "/socket.io"));
    assert!(!super::is_under("/iota", "/io"));
}
