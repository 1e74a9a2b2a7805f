//! Behaviour tables for the access stage, on the lab's data (`strapi-v4/permissions.txt`,
//! `jwt.md`) fed through the same row changes the stream carries (`strapi-v4/wal.md` §4).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;

use super::state::Clock;
use super::*;
use crate::config::{PermissionMode, Secret};
use crate::lsn::Lsn;
use crate::pgoutput::{OldRow, Relation, RelationId, ReplicaIdentity, RowOp, Value};
use crate::strapi::{AccessTable, ContentType, Kind};

// ---------------------------------------------------------------------------------------------
// Lab fixtures
// ---------------------------------------------------------------------------------------------

const JWT_SECRET: &str = "j9skLpTvMt6nUUQMqNMjAg==";
const API_TOKEN_SALT: &str = "7hOJwW+vNX8lRL0c0cedWA==";

/// alice (id 1, Authenticated), eddie (id 2, Editor), bob (id 3): the lab's own tokens.
const ALICE: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6MSwiaWF0IjoxNzk1NzEwNzAzLCJleHAiOjE3OTgzMDI3MDN9.LS4BEmEJPpm797tEjOVNwHHSfSF0-je_SyrpZn2dU74";
const EDDIE: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6MiwiaWF0IjoxNzk1NzEwNzc5LCJleHAiOjE3OTgzMDI3Nzl9.ak1cUXc9UcS8RO9142xtLQEHGX2iu5aQhapVu_WIPAA";
const BOB: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6MywiaWF0IjoxNzk1NzEwNzQ4LCJleHAiOjE3OTgzMDI3NDh9.4GwkA0y-kuS4kRnFFvt716jSkselqggbwsB7MgLFfaQ";
// Signed with the lab secret by Python's `hmac` (independent of the library under test).
const CAROL: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6NCwiaWF0IjoxNzk1NzEwNzAzLCJleHAiOjE3OTgzMDI3MDN9.uwJxXyw4PFa0WLuUAorSlZNhqPkVED_t48POjEhIPfc";
const USER_99: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6OTksImlhdCI6MTc5NTcxMDcwMywiZXhwIjoxNzk4MzAyNzAzfQ.3VNyYfDt7OnF9K3MqnmkgpOKhUdr96y0G3xyWo7VpEI";
const ALICE_HS384: &str = "eyJhbGciOiJIUzM4NCIsInR5cCI6IkpXVCJ9.eyJpZCI6MSwiaWF0IjoxNzk1NzEwNzAzLCJleHAiOjE3OTgzMDI3MDN9.3rfp0lC7vXk_JmwI-ITuY3hycLVtigIUvz9CjZIB5VfY_98NAy-Pzg-MMTZdodTK";
const ALICE_HS512: &str = "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJpZCI6MSwiaWF0IjoxNzk1NzEwNzAzLCJleHAiOjE3OTgzMDI3MDN9.Y_5I4LFTZNGCcZpqG0LpcZKktawFbm_PvglS-Q448IaGbi8GSiPVESlua8eHuzfspA6oVYsLco42s1oRBA_FhA";
const EXPIRED: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6MSwiaWF0IjoxNzk1MDAwMDAwLCJleHAiOjE3OTU3MDAwMDB9.OSWO3QHVPOF5gsxPGVZ4ymF3vJ6LUDLWIrAx9erG3Ls";
const ALG_NONE: &str =
    "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJpZCI6MSwiaWF0IjoxNzk1NzEwNzAzLCJleHAiOjE3OTgzMDI3MDN9.";
/// Alice's claims signed with the lab's ADMIN_JWT_SECRET: a valid admin-panel-style token.
const WRONG_SECRET: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6MSwiaWF0IjoxNzk1NzEwNzAzLCJleHAiOjE3OTgzMDI3MDN9.v-midOadCGD3bPjfP-a1ukiLhr2vrycoBdWR9GHwYoo";
/// `alg: RS256`, signed with HMAC over the secret (the key-confusion attack).
const RS256_HMAC: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6MSwiaWF0IjoxNzk1NzEwNzAzLCJleHAiOjE3OTgzMDI3MDN9.NXTOXifVN9EEONApXGTDD4-9HswzaoZeISef9qTQ-DY";
const STRING_ID: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6IjEiLCJpYXQiOjE3OTU3MTA3MDMsImV4cCI6MTc5ODMwMjcwM30.QXrybSVyZKoL_3lx2Ciy4aSLc2YEOzlIFBITZ_WqGv4";
const NO_ID: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpYXQiOjE3OTU3MTA3MDMsImV4cCI6MTc5ODMwMjcwM30.VOeffqArgouuoQJgtnTzgnkwePyGCfaIxPgLV-i4LY8";

/// The lab's read-only (`lab-ro`, id 1) and custom (`lab-custom`, id 2) API tokens in clear
/// (`rest/49-*`, `rest/50-*`), and their stored access keys.
const LAB_RO: &str = "30b14af979b15677995281242a0abe535606e30a71f6b8be72ea5d8e8d411a205bf5a23d2d422e9e79c20df74ee490eea2304280c76cd02632ec47c4a92da1f22ed3f463bdf69171f20d8e1ada5784b2e06964d6a68a7a46d873fd055fd3f8db73cf5e76513ca2a2eb1683406dea98a564baaf4900c7ffb13b9435577e4eef63";
const LAB_RO_KEY: &str = "c72ad5fba3186ce48c08a19855d4c59cf5f9d05ed3130271014a364d4fb546ee6bfcaaa0cc787580b3d4ecd45e041e382659f12994f4b0ef55812b82bab40f8b";
const LAB_CUSTOM: &str = "765e1d67685e62823d13cfcf25815c7b7927215f40de9f5a96e232d9d30c3dd49879e75640aa2f6f453c57fb05c9d9a89cf480a278b4c9cf95df644e15d8cc180bdb513ebb83122036b563810d0843bbc189f4b43d33643e5e8d466a75e169cdce8454a4bf89cac2b1683d24074b25d700f78427130a73b885095e358c932cfe";
const LAB_CUSTOM_KEY: &str = "95245648484e330ac0b79e9c64d97ba19109f1419647c240658904b2b3d99b59686670c80748289f3a7096512c41b581bf96fc9c3c209eb19db29ae14c224ee6";
/// `lab-custom`'s `expires_at` as PostgreSQL prints it, and in Unix microseconds.
const LAB_CUSTOM_EXPIRES: &str = "2026-12-03 16:33:03.259";
const LAB_CUSTOM_EXPIRES_US: i64 = 1_796_315_583_259_000;

/// 2026-11-26T16:33:10Z: after every lab token was issued, before any expired.
const LAB_NOW_US: i64 = 1_795_710_790_000_000;
/// Alice's JWT `exp`.
const ALICE_EXP_US: i64 = 1_798_302_703_000_000;

const MESSAGE: &str = "api::message.message";
const CHAT: &str = "api::chat.chat";
const HOMEPAGE: &str = "api::homepage.homepage";

/// Columns of each table, as Strapi 4.26.2 creates them (`strapi-v4/tables.md`).
fn columns(table: AccessTable) -> &'static [&'static str] {
    match table {
        AccessTable::Roles => &[
            "id",
            "name",
            "description",
            "type",
            "created_at",
            "updated_at",
            "created_by_id",
            "updated_by_id",
        ],
        AccessTable::Permissions | AccessTable::ApiTokenPermissions => &[
            "id",
            "action",
            "created_at",
            "updated_at",
            "created_by_id",
            "updated_by_id",
        ],
        AccessTable::PermissionRoleLinks => &["id", "permission_id", "role_id", "permission_order"],
        AccessTable::Users => &[
            "id",
            "username",
            "email",
            "provider",
            "password",
            "reset_password_token",
            "confirmation_token",
            "confirmed",
            "blocked",
            "created_at",
            "updated_at",
            "created_by_id",
            "updated_by_id",
        ],
        AccessTable::UserRoleLinks => &["id", "user_id", "role_id", "user_order"],
        AccessTable::ApiTokens => &[
            "id",
            "name",
            "description",
            "type",
            "access_key",
            "last_used_at",
            "expires_at",
            "lifespan",
            "created_at",
            "updated_at",
            "created_by_id",
            "updated_by_id",
        ],
        AccessTable::ApiTokenPermissionLinks => &[
            "id",
            "api_token_permission_id",
            "api_token_id",
            "api_token_permission_order",
        ],
    }
}

fn relation(table: AccessTable) -> Arc<Relation> {
    let columns: Vec<(&str, u32)> = columns(table).iter().map(|c| (*c, 25)).collect();
    Arc::new(Relation::described(
        RelationId(16_384),
        "public",
        table.table_name(),
        ReplicaIdentity::Default,
        &columns,
    ))
}

/// A tuple of `table` with these columns set (as text) and every other column NULL.
fn tuple(table: AccessTable, set: &[(&str, &str)]) -> Vec<Value> {
    columns(table)
        .iter()
        .map(|c| match set.iter().find(|(name, _)| name == c) {
            Some((_, v)) => Value::Text(Bytes::copy_from_slice(v.as_bytes())),
            None => Value::Null,
        })
        .collect()
}

fn insert(table: AccessTable, set: &[(&str, &str)]) -> AccessChange {
    AccessChange::Row {
        table,
        relation: relation(table),
        op: RowOp::Insert {
            new: tuple(table, set),
        },
    }
}

/// An UPDATE as the default replica identity logs it: no old row, the whole new row.
fn update(table: AccessTable, set: &[(&str, &str)]) -> AccessChange {
    AccessChange::Row {
        table,
        relation: relation(table),
        op: RowOp::Update {
            old: None,
            new: tuple(table, set),
        },
    }
}

/// A DELETE as the default replica identity logs it: the id, everything else NULL.
fn delete(table: AccessTable, id: i64) -> AccessChange {
    AccessChange::Row {
        table,
        relation: relation(table),
        op: RowOp::Delete {
            old: OldRow::Key(tuple(table, &[("id", &id.to_string())])),
        },
    }
}

/// A clock tests can move.
#[derive(Clone)]
struct TestClock(Arc<AtomicI64>);

impl TestClock {
    fn at(us: i64) -> TestClock {
        TestClock(Arc::new(AtomicI64::new(us)))
    }
    fn set(&self, us: i64) {
        self.0.store(us, Ordering::SeqCst);
    }
    fn clock(&self) -> Clock {
        let t = Arc::clone(&self.0);
        Arc::new(move || t.load(Ordering::SeqCst))
    }
}

fn config(mode: PermissionMode) -> AccessConfig {
    AccessConfig {
        public_role_name: "Public".to_owned(),
        permission_mode: mode,
        jwt_secret: Some(Secret::new(JWT_SECRET)),
        jwt_management: Default::default(),
        api_token_salt: Some(Secret::new(API_TOKEN_SALT)),
    }
}

/// Permissions of the lab after `wal/35` (`permissions.txt`): (permission id, action,
/// link id, role id).
const LAB_PERMISSIONS: &[(i64, &str, i64, i64)] = &[
    (1, "plugin::users-permissions.user.me", 1, 1),
    (2, "plugin::users-permissions.auth.changePassword", 2, 1),
    (3, "plugin::users-permissions.auth.callback", 3, 2),
    (4, "plugin::users-permissions.auth.connect", 9, 2),
    (6, "plugin::users-permissions.auth.register", 5, 2),
    (10, "api::message.message.find", 10, 2),
    (11, "api::message.message.findOne", 11, 2),
    (12, "api::homepage.homepage.find", 12, 2),
    (13, "api::message.message.find", 13, 1),
    (14, "api::message.message.findOne", 14, 1),
    (15, "api::message.message.create", 15, 1),
    (16, "api::message.message.update", 16, 1),
    (17, "api::message.message.delete", 17, 1),
    (18, "api::homepage.homepage.find", 18, 1),
    (19, "api::homepage.homepage.update", 19, 1),
    (20, "api::homepage.homepage.delete", 20, 1),
    (21, "api::chat.chat.find", 21, 1),
    (22, "api::chat.chat.create", 22, 1),
    (23, "api::chat.chat.find", 23, 3),
    (25, "api::message.message.find", 25, 4),
    (26, "api::message.message.delete", 26, 4),
];

/// The lab's access tables, inserted row by row as the stream would: four roles, their
/// permissions, alice/eddie/bob/carol before bob was blocked or moved, and both API tokens.
fn lab_changes() -> Vec<AccessChange> {
    use AccessTable::*;
    let mut changes = vec![
        insert(
            Roles,
            &[
                ("id", "1"),
                ("name", "Authenticated"),
                ("type", "authenticated"),
            ],
        ),
        insert(
            Roles,
            &[("id", "2"), ("name", "Public"), ("type", "public")],
        ),
        insert(
            Roles,
            &[("id", "3"), ("name", "Editor"), ("type", "editor")],
        ),
        insert(
            Roles,
            &[("id", "4"), ("name", "Moderator"), ("type", "moderator")],
        ),
    ];
    for (perm, action, link, role) in LAB_PERMISSIONS {
        changes.push(insert(
            Permissions,
            &[("id", &perm.to_string()), ("action", action)],
        ));
        changes.push(insert(
            PermissionRoleLinks,
            &[
                ("id", &link.to_string()),
                ("permission_id", &perm.to_string()),
                ("role_id", &role.to_string()),
                ("permission_order", "1"),
            ],
        ));
    }
    for (id, name) in [(1, "alice"), (2, "eddie"), (3, "bob"), (4, "carol")] {
        changes.push(insert(
            Users,
            &[
                ("id", &id.to_string()),
                ("username", name),
                ("password", "$2a$10$hash"),
                ("confirmed", "t"),
                ("blocked", "f"),
            ],
        ));
    }
    for (link, user, role) in [(1, 1, 1), (2, 2, 3), (3, 3, 1), (5, 4, 1)] {
        changes.push(insert(
            UserRoleLinks,
            &[
                ("id", &link.to_string()),
                ("user_id", &user.to_string()),
                ("role_id", &role.to_string()),
                ("user_order", "1"),
            ],
        ));
    }
    changes.push(insert(
        ApiTokens,
        &[
            ("id", "1"),
            ("name", "lab-ro"),
            ("type", "read-only"),
            ("access_key", LAB_RO_KEY),
        ],
    ));
    changes.push(insert(
        ApiTokens,
        &[
            ("id", "2"),
            ("name", "lab-custom"),
            ("type", "custom"),
            ("access_key", LAB_CUSTOM_KEY),
            ("expires_at", LAB_CUSTOM_EXPIRES),
            ("lifespan", "604800000"),
        ],
    ));
    for (id, action) in [(1, "api::message.message.find"), (2, "api::chat.chat.find")] {
        changes.push(insert(
            ApiTokenPermissions,
            &[("id", &id.to_string()), ("action", action)],
        ));
        changes.push(insert(
            ApiTokenPermissionLinks,
            &[
                ("id", &id.to_string()),
                ("api_token_permission_id", &id.to_string()),
                ("api_token_id", "2"),
            ],
        ));
    }
    changes
}

struct Lab {
    access: Access,
    handle: AccessHandle,
    clock: TestClock,
}

fn lab_with(cfg: AccessConfig) -> Lab {
    let clock = TestClock::at(LAB_NOW_US);
    let mut access = Access::from_snapshot_at(cfg, AccessSnapshot::default(), clock.clock());
    for change in lab_changes() {
        access.apply(change);
    }
    let handle = access.handle();
    Lab {
        access,
        handle,
        clock,
    }
}

fn lab(mode: PermissionMode) -> Lab {
    lab_with(config(mode))
}

fn content_type(uid: &str, kind: Kind) -> Arc<ContentType> {
    let singular = uid.rsplit('.').next().unwrap_or(uid).to_owned();
    Arc::new(ContentType {
        uid: uid.to_owned(),
        table: format!("{singular}s"),
        kind,
        plural_name: format!("{singular}s"),
        singular_name: singular,
        draft_and_publish: true,
        localized: false,
        attributes: Vec::new(),
    })
}

fn event(uid: &str, action: Action) -> StrapiEvent {
    let kind = if uid == HOMEPAGE {
        Kind::Single
    } else {
        Kind::Collection
    };
    StrapiEvent {
        content_type: content_type(uid, kind),
        action,
        entry_id: Some(1),
        payload: Payload::from_json(r#"{"data":{"id":1,"attributes":{}},"meta":{}}"#.to_owned())
            .unwrap_or_else(|e| panic!("{e}")),
        commit_lsn: Lsn(1),
    }
}

fn custom(name: &str) -> Action {
    Action::Custom(Arc::from(name))
}

impl Lab {
    fn apply(&mut self, changes: impl IntoIterator<Item = AccessChange>) {
        for change in changes {
            self.access.apply(change);
        }
    }

    /// The rooms an event goes to (empty when `authorize` says no delivery).
    fn rooms(&mut self, uid: &str, action: Action) -> Vec<String> {
        match self.access.authorize(event(uid, action)) {
            Some(d) => d.rooms.to_vec(),
            None => Vec::new(),
        }
    }

    /// `authenticate` as `Ok(rooms)` or `Err(client message)`.
    fn auth(&self, token: &str) -> Outcome {
        self.handle
            .authenticate(Some(token), None)
            .map(|p| p.rooms)
            .map_err(|e| e.to_string())
    }

    fn refresh(&self, identity: Identity) -> Outcome {
        self.handle
            .refresh(&identity)
            .map(|p| p.rooms)
            .map_err(|e| e.to_string())
    }
}

/// `Ok(rooms)` or `Err(the client's connect_error message)`.
type Outcome = Result<Vec<String>, String>;

/// An assertion on a lab after a change.
type Check = dyn Fn(&mut Lab);

fn rooms(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

fn ok(names: &[&str]) -> Outcome {
    Ok(rooms(names))
}

fn err(message: &str) -> Outcome {
    Err(message.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Handshake: JWT
// ---------------------------------------------------------------------------------------------

#[test]
fn each_jwt_outcome_has_its_exact_message() {
    let lab = lab(PermissionMode::Read);
    let table: &[(&str, &str, Outcome)] = &[
        ("lab token, alice", ALICE, ok(&["Authenticated"])),
        ("lab token, eddie", EDDIE, ok(&["Editor"])),
        ("HS384", ALICE_HS384, ok(&["Authenticated"])),
        ("HS512", ALICE_HS512, ok(&["Authenticated"])),
        ("expired", EXPIRED, err("Invalid token.")),
        ("wrong signature", WRONG_SECRET, err("Invalid token.")),
        ("alg none", ALG_NONE, err("Invalid token.")),
        ("asymmetric alg", RS256_HMAC, err("Invalid token.")),
        ("id not a number", STRING_ID, err("Invalid token.")),
        ("no id", NO_ID, err("Invalid token.")),
        ("deleted user", USER_99, err("Invalid token.")),
        ("garbage, JWT-shaped", "abc.def.ghi", err("Invalid token.")),
        ("garbage", "not a token at all", err("Invalid token.")),
        (
            "Bearer prefix kept",
            &format!("Bearer {ALICE}"),
            err("Invalid token."),
        ),
    ];
    for (case, token, expected) in table {
        assert_eq!(&lab.auth(token), expected, "{case}");
    }
}

#[test]
fn a_user_principal_names_role_and_user() {
    let lab = lab(PermissionMode::Read);
    let p = lab
        .handle
        .authenticate(Some(EDDIE), Some("jwt"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        p,
        Principal {
            identity: Identity::User { id: 2 },
            rooms: rooms(&["Editor"]),
            role: "Editor".to_owned(),
            user_id: Some(2),
            role_id: Some(3),
            // Eddie's `exp`: the socket is checked again then.
            expires_at: Some(1_798_302_779_000_000),
            key_fingerprint: None,
        }
    );
}

#[test]
fn the_lab_jwt_expires_exactly_at_exp() {
    let lab = lab(PermissionMode::Read);
    lab.clock.set(ALICE_EXP_US - 1);
    assert_eq!(lab.auth(ALICE), ok(&["Authenticated"]));
    lab.clock.set(ALICE_EXP_US);
    assert_eq!(lab.auth(ALICE), err("Invalid token."));
}

#[test]
fn blocked_users_are_refused_with_invalid_credentials() {
    let mut lab = lab(PermissionMode::Read);
    // wal/55: UPDATE up_users … blocked:true (whole row).
    lab.apply([update(
        AccessTable::Users,
        &[
            ("id", "3"),
            ("username", "bob"),
            ("confirmed", "t"),
            ("blocked", "t"),
        ],
    )]);
    assert_eq!(lab.auth(BOB), err("Invalid credentials"));
    assert_eq!(
        lab.refresh(Identity::User { id: 3 }),
        err("Invalid credentials")
    );
    lab.apply([update(
        AccessTable::Users,
        &[("id", "3"), ("confirmed", "t"), ("blocked", "f")],
    )]);
    assert_eq!(lab.auth(BOB), ok(&["Authenticated"]));
}

#[test]
fn unconfirmed_users_are_refused_only_while_email_confirmation_is_on() {
    let mut lab = lab(PermissionMode::Read);
    lab.apply([update(
        AccessTable::Users,
        &[("id", "4"), ("confirmed", "f"), ("blocked", "f")],
    )]);
    assert_eq!(lab.auth(CAROL), ok(&["Authenticated"]), "confirmation off");

    lab.apply([AccessChange::AdvancedSettings(serde_json::json!({
        "unique_email": true, "email_confirmation": true, "default_role": "authenticated"
    }))]);
    assert_eq!(
        lab.auth(CAROL),
        err("Invalid credentials"),
        "confirmation on"
    );
    assert_eq!(lab.auth(ALICE), ok(&["Authenticated"]), "confirmed user");

    // The core store's JSON text works too.
    lab.apply([AccessChange::AdvancedSettings(serde_json::json!(
        r#"{"email_confirmation":false}"#
    ))]);
    assert_eq!(lab.auth(CAROL), ok(&["Authenticated"]), "off again");
}

#[test]
fn a_user_without_a_role_is_refused_with_invalid_credentials() {
    let mut lab = lab(PermissionMode::Read);
    lab.apply([delete(AccessTable::UserRoleLinks, 5)]);
    assert_eq!(lab.auth(CAROL), err("Invalid credentials"));
    // A link to a role that does not exist is no role either.
    lab.apply([insert(
        AccessTable::UserRoleLinks,
        &[("id", "6"), ("user_id", "4"), ("role_id", "77")],
    )]);
    assert_eq!(lab.auth(CAROL), err("Invalid credentials"));
}

#[test]
fn without_a_jwt_secret_every_jwt_is_an_invalid_token() {
    let lab = lab_with(AccessConfig {
        jwt_secret: None,
        ..config(PermissionMode::Read)
    });
    assert_eq!(lab.auth(ALICE), err("Invalid token."));
    assert_eq!(lab.auth(ALICE), err("Invalid token."));
    // API tokens do not need it.
    assert_eq!(lab.auth(LAB_RO), ok(&["api-token:1"]));
}

#[test]
fn no_token_is_the_public_role_and_nothing_loaded_is_not_ready() {
    let lab = lab_with(AccessConfig {
        public_role_name: "Guests".to_owned(),
        ..config(PermissionMode::Read)
    });
    for token in [None, Some("")] {
        let p = lab
            .handle
            .authenticate(token, None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p,
            Principal {
                identity: Identity::Public,
                rooms: rooms(&["Guests"]),
                role: "Guests".to_owned(),
                user_id: None,
                role_id: None,
                expires_at: None,
                key_fingerprint: None,
            }
        );
    }
    assert_eq!(lab.refresh(Identity::Public), ok(&["Guests"]));

    let empty = AccessHandle::default();
    assert!(!empty.is_loaded());
    assert!(lab.handle.is_loaded());
    assert_eq!(empty.authenticate(None, None), Err(AuthError::NotReady));
    assert_eq!(
        empty
            .authenticate(Some(ALICE), None)
            .map_err(|e| e.to_string()),
        Err("Server is starting, try again".to_owned())
    );
    assert_eq!(empty.refresh(&Identity::Public), Err(AuthError::NotReady));
}

// ---------------------------------------------------------------------------------------------
// Handshake: API tokens
// ---------------------------------------------------------------------------------------------

#[test]
fn api_tokens_authenticate_by_their_hash() {
    let lab = lab(PermissionMode::Read);
    let p = lab
        .handle
        .authenticate(Some(LAB_RO), None)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        p,
        Principal {
            identity: Identity::ApiToken { id: 1 },
            rooms: rooms(&["api-token:1"]),
            role: "lab-ro".to_owned(),
            user_id: None,
            role_id: None,
            expires_at: None,
            key_fingerprint: Some(super::state::key_fingerprint(LAB_RO_KEY)),
        }
    );
    assert_eq!(lab.auth(LAB_CUSTOM), ok(&["api-token:2"]));
    assert_eq!(
        lab.handle
            .authenticate(Some(LAB_CUSTOM), Some("apiToken"))
            .map(|p| p.rooms),
        Ok(rooms(&["api-token:2"]))
    );
    // A JWT presented as an API token is looked up as one, and is unknown.
    assert_eq!(
        lab.handle
            .authenticate(Some(ALICE), Some("apiToken"))
            .map_err(|e| e.to_string()),
        Err("Invalid token.".to_owned())
    );
    // One character off.
    let mut wrong = LAB_RO.to_owned();
    wrong.replace_range(0..1, "4");
    assert_eq!(lab.auth(&wrong), err("Invalid token."));
}

#[test]
fn an_api_token_past_expires_at_is_refused_as_expired() {
    let lab = lab(PermissionMode::Read);
    lab.clock.set(LAB_CUSTOM_EXPIRES_US);
    assert_eq!(lab.auth(LAB_CUSTOM), ok(&["api-token:2"]), "at expires_at");
    lab.clock.set(LAB_CUSTOM_EXPIRES_US + 1);
    assert_eq!(lab.auth(LAB_CUSTOM), err("Token expired"));
    assert_eq!(
        lab.refresh(Identity::ApiToken { id: 2 }),
        err("Token expired")
    );
    assert_eq!(lab.auth(LAB_RO), ok(&["api-token:1"]), "never expires");
}

#[test]
fn without_a_salt_every_api_token_is_an_invalid_token() {
    let lab = lab_with(AccessConfig {
        api_token_salt: None,
        ..config(PermissionMode::Read)
    });
    assert_eq!(lab.auth(LAB_RO), err("Invalid token."));
    assert_eq!(lab.auth(ALICE), ok(&["Authenticated"]));
}

// ---------------------------------------------------------------------------------------------
// Who receives what
// ---------------------------------------------------------------------------------------------

#[test]
fn read_mode_sends_every_action_to_roles_that_may_find() {
    let mut lab = lab(PermissionMode::Read);
    let all_message = rooms(&[
        "Authenticated",
        "Public",
        "Moderator",
        "api-token:1",
        "api-token:2",
    ]);
    for action in Action::DATA {
        assert_eq!(lab.rooms(MESSAGE, action.clone()), all_message, "{action}");
    }
    assert_eq!(lab.rooms(MESSAGE, custom("someCustomAction")), all_message);
    assert_eq!(
        lab.rooms(CHAT, Action::Create),
        rooms(&["Authenticated", "Editor", "api-token:1", "api-token:2"])
    );
    assert_eq!(
        lab.rooms(HOMEPAGE, Action::CreateOrUpdate),
        rooms(&["Authenticated", "Public", "api-token:1"])
    );
    // No role may read it; the read-only token reads everything.
    assert_eq!(
        lab.rooms("api::secret.secret", Action::Create),
        rooms(&["api-token:1"])
    );
    lab.apply([delete(AccessTable::ApiTokens, 1)]);
    assert!(
        lab.access
            .authorize(event("api::secret.secret", Action::Create))
            .is_none(),
        "nobody may read it: no delivery at all"
    );
}

#[test]
fn action_mode_follows_the_plugin_rule() {
    let mut lab = lab(PermissionMode::Action);
    let table: &[(&str, Action, &[&str])] = &[
        (MESSAGE, Action::Create, &["Authenticated"]),
        (MESSAGE, Action::Update, &["Authenticated"]),
        (MESSAGE, Action::Publish, &["Authenticated"]),
        (MESSAGE, Action::Delete, &["Authenticated", "Moderator"]),
        (MESSAGE, Action::Unpublish, &["Authenticated", "Moderator"]),
        (HOMEPAGE, Action::CreateOrUpdate, &["Authenticated"]),
        (CHAT, Action::Create, &["Authenticated"]),
        (CHAT, Action::Update, &[]),
        (MESSAGE, custom("someCustomAction"), &[]),
        // A custom action named like a read action: read-only and custom tokens qualify.
        (
            MESSAGE,
            custom("find"),
            &[
                "Authenticated",
                "Public",
                "Moderator",
                "api-token:1",
                "api-token:2",
            ],
        ),
        (HOMEPAGE, custom("findOne"), &["api-token:1"]),
    ];
    for (uid, action, expected) in table {
        assert_eq!(
            lab.rooms(uid, action.clone()),
            rooms(expected),
            "{uid} {action}"
        );
    }
    lab.apply([
        insert(
            AccessTable::Permissions,
            &[
                ("id", "30"),
                ("action", "api::message.message.someCustomAction"),
            ],
        ),
        insert(
            AccessTable::PermissionRoleLinks,
            &[("id", "30"), ("permission_id", "30"), ("role_id", "3")],
        ),
    ]);
    assert_eq!(
        lab.rooms(MESSAGE, custom("someCustomAction")),
        rooms(&["Editor"])
    );
}

#[test]
fn each_token_type_reaches_what_it_may() {
    for mode in [PermissionMode::Read, PermissionMode::Action] {
        let mut lab = lab(mode);
        lab.apply([insert(
            AccessTable::ApiTokens,
            &[
                ("id", "3"),
                ("name", "everything"),
                ("type", "full-access"),
                ("access_key", "00"),
            ],
        )]);
        let tokens = |lab: &mut Lab, uid: &str, action: Action| -> Vec<String> {
            lab.rooms(uid, action)
                .into_iter()
                .filter(|r| r.starts_with("api-token:"))
                .collect()
        };
        let read = mode == PermissionMode::Read;
        let expected: &[(&str, Action, &[&str])] = &[
            (
                MESSAGE,
                Action::Create,
                if read {
                    &["api-token:1", "api-token:2", "api-token:3"]
                } else {
                    &["api-token:3"]
                },
            ),
            (
                HOMEPAGE,
                Action::Unpublish,
                if read {
                    &["api-token:1", "api-token:3"]
                } else {
                    &["api-token:3"]
                },
            ),
            (
                CHAT,
                custom("find"),
                &["api-token:1", "api-token:2", "api-token:3"],
            ),
        ];
        for (uid, action, want) in expected {
            assert_eq!(
                tokens(&mut lab, uid, action.clone()),
                rooms(want),
                "{mode:?} {uid} {action}"
            );
        }
    }
}

#[test]
fn a_token_of_unknown_type_authenticates_and_reaches_nothing() {
    let mut lab = lab(PermissionMode::Read);
    let key = api_token::access_key(API_TOKEN_SALT, "weird-token");
    lab.apply([insert(
        AccessTable::ApiTokens,
        &[
            ("id", "9"),
            ("name", "weird"),
            ("type", "super-access"),
            ("access_key", &key),
        ],
    )]);
    assert_eq!(lab.auth("weird-token"), ok(&["api-token:9"]));
    assert!(
        !lab.rooms(MESSAGE, Action::Create)
            .contains(&"api-token:9".to_owned())
    );
}

// ---------------------------------------------------------------------------------------------
// Row changes, table by table
// ---------------------------------------------------------------------------------------------

#[test]
fn granting_and_revoking_a_permission_as_strapi_writes_it() {
    let mut lab = lab(PermissionMode::Read);
    assert_eq!(
        lab.rooms(CHAT, Action::Create),
        rooms(&["Authenticated", "Editor", "api-token:1", "api-token:2"])
    );
    // wal/33 then wal/34 for Moderator and chat.find: UPDATE up_roles; INSERT permission;
    // INSERT link; then DELETE permission + DELETE link, by id only.
    lab.apply([
        update(
            AccessTable::Roles,
            &[("id", "4"), ("name", "Moderator"), ("type", "moderator")],
        ),
        insert(
            AccessTable::Permissions,
            &[("id", "24"), ("action", "api::chat.chat.find")],
        ),
    ]);
    assert!(
        !lab.rooms(CHAT, Action::Create)
            .contains(&"Moderator".to_owned()),
        "a permission without a link has no effect"
    );
    lab.apply([insert(
        AccessTable::PermissionRoleLinks,
        &[("id", "24"), ("permission_id", "24"), ("role_id", "4")],
    )]);
    assert_eq!(
        lab.rooms(CHAT, Action::Create),
        rooms(&[
            "Authenticated",
            "Editor",
            "Moderator",
            "api-token:1",
            "api-token:2"
        ])
    );
    lab.apply([
        delete(AccessTable::Permissions, 24),
        delete(AccessTable::PermissionRoleLinks, 24),
    ]);
    assert_eq!(
        lab.rooms(CHAT, Action::Create),
        rooms(&["Authenticated", "Editor", "api-token:1", "api-token:2"])
    );
}

#[test]
fn revoking_the_last_read_permission_stops_delivery() {
    let mut lab = lab(PermissionMode::Read);
    // Deleting only the link is enough …
    lab.apply([delete(AccessTable::PermissionRoleLinks, 23)]);
    assert!(
        !lab.rooms(CHAT, Action::Create)
            .contains(&"Editor".to_owned())
    );
    // … and so is deleting only the permission row.
    lab.apply([delete(AccessTable::Permissions, 12)]);
    assert_eq!(
        lab.rooms(HOMEPAGE, Action::Update),
        rooms(&["Authenticated", "api-token:1"])
    );
    // With every reader gone, nothing is delivered.
    lab.apply([
        delete(AccessTable::Permissions, 18),
        delete(AccessTable::ApiTokens, 1),
    ]);
    assert!(
        lab.access
            .authorize(event(HOMEPAGE, Action::Update))
            .is_none()
    );
}

#[test]
fn changing_a_permission_action_moves_it() {
    let mut lab = lab(PermissionMode::Read);
    lab.apply([update(
        AccessTable::Permissions,
        &[("id", "23"), ("action", "api::message.message.findOne")],
    )]);
    assert!(
        !lab.rooms(CHAT, Action::Create)
            .contains(&"Editor".to_owned())
    );
    assert!(
        lab.rooms(MESSAGE, Action::Create)
            .contains(&"Editor".to_owned())
    );
    // Re-pointing a link to another role.
    lab.apply([update(
        AccessTable::PermissionRoleLinks,
        &[("id", "23"), ("permission_id", "23"), ("role_id", "4")],
    )]);
    assert!(
        !lab.rooms(MESSAGE, Action::Create)
            .contains(&"Editor".to_owned())
    );
}

#[test]
fn changing_a_users_role_as_strapi_writes_it_moves_its_room() {
    let mut lab = lab(PermissionMode::Read);
    assert_eq!(
        lab.refresh(Identity::User { id: 3 }),
        ok(&["Authenticated"])
    );
    // wal/57: UPDATE up_users; then DELETE link 3, UPDATE link 1 (order), INSERT link 4.
    lab.apply([
        update(
            AccessTable::Users,
            &[("id", "3"), ("confirmed", "t"), ("blocked", "f")],
        ),
        delete(AccessTable::UserRoleLinks, 3),
        update(
            AccessTable::UserRoleLinks,
            &[
                ("id", "1"),
                ("user_id", "1"),
                ("role_id", "1"),
                ("user_order", "1"),
            ],
        ),
        insert(
            AccessTable::UserRoleLinks,
            &[
                ("id", "4"),
                ("user_id", "3"),
                ("role_id", "3"),
                ("user_order", "2"),
            ],
        ),
    ]);
    assert_eq!(lab.refresh(Identity::User { id: 3 }), ok(&["Editor"]));
    assert_eq!(lab.auth(BOB), ok(&["Editor"]));
    assert_eq!(
        lab.refresh(Identity::User { id: 1 }),
        ok(&["Authenticated"])
    );
}

#[test]
fn a_deleted_user_fails_refresh_with_invalid_token() {
    let mut lab = lab(PermissionMode::Read);
    lab.apply([delete(AccessTable::Users, 2)]);
    assert_eq!(lab.refresh(Identity::User { id: 2 }), err("Invalid token."));
    assert_eq!(lab.auth(EDDIE), err("Invalid token."));
}

#[test]
fn renaming_or_deleting_a_role_moves_or_drops_its_room() {
    let mut lab = lab(PermissionMode::Read);
    lab.apply([update(
        AccessTable::Roles,
        &[("id", "3"), ("name", "Writers"), ("type", "editor")],
    )]);
    assert_eq!(lab.refresh(Identity::User { id: 2 }), ok(&["Writers"]));
    assert!(
        lab.rooms(CHAT, Action::Create)
            .contains(&"Writers".to_owned())
    );
    assert_eq!(
        lab.handle.role_names(),
        rooms(&["Authenticated", "Public", "Writers", "Moderator"])
    );

    // A role whose name became NULL has no room.
    lab.apply([update(
        AccessTable::Roles,
        &[("id", "3"), ("type", "editor")],
    )]);
    assert!(
        !lab.rooms(CHAT, Action::Create)
            .contains(&"Writers".to_owned())
    );
    assert_eq!(
        lab.refresh(Identity::User { id: 2 }),
        err("Invalid credentials")
    );

    lab.apply([delete(AccessTable::Roles, 3)]);
    assert_eq!(
        lab.refresh(Identity::User { id: 2 }),
        err("Invalid credentials")
    );
    assert_eq!(
        lab.rooms(CHAT, Action::Create),
        rooms(&["Authenticated", "api-token:1", "api-token:2"])
    );
}

#[test]
fn api_token_rows_are_followed() {
    let mut lab = lab(PermissionMode::Read);
    let key = api_token::access_key(API_TOKEN_SALT, "a-new-token");
    lab.apply([insert(
        AccessTable::ApiTokens,
        &[
            ("id", "5"),
            ("name", "new"),
            ("type", "custom"),
            ("access_key", &key.to_uppercase()),
        ],
    )]);
    assert_eq!(lab.auth("a-new-token"), ok(&["api-token:5"]));
    assert!(
        !lab.rooms(CHAT, Action::Create)
            .contains(&"api-token:5".to_owned())
    );

    // Give it chat.find through a permission and a link.
    lab.apply([
        insert(
            AccessTable::ApiTokenPermissions,
            &[("id", "7"), ("action", "api::chat.chat.find")],
        ),
        insert(
            AccessTable::ApiTokenPermissionLinks,
            &[
                ("id", "7"),
                ("api_token_permission_id", "7"),
                ("api_token_id", "5"),
            ],
        ),
    ]);
    assert!(
        lab.rooms(CHAT, Action::Create)
            .contains(&"api-token:5".to_owned())
    );
    lab.apply([delete(AccessTable::ApiTokenPermissions, 7)]);
    assert!(
        !lab.rooms(CHAT, Action::Create)
            .contains(&"api-token:5".to_owned())
    );
    lab.apply([update(
        AccessTable::ApiTokenPermissions,
        &[("id", "7"), ("action", "api::chat.chat.findOne")],
    )]);
    assert!(
        lab.rooms(CHAT, Action::Create)
            .contains(&"api-token:5".to_owned())
    );
    lab.apply([delete(AccessTable::ApiTokenPermissionLinks, 7)]);
    assert!(
        !lab.rooms(CHAT, Action::Create)
            .contains(&"api-token:5".to_owned())
    );

    // Regenerating the key (UPDATE access_key) retires the old one.
    let regenerated = api_token::access_key(API_TOKEN_SALT, "regenerated");
    lab.apply([update(
        AccessTable::ApiTokens,
        &[
            ("id", "5"),
            ("name", "new"),
            ("type", "custom"),
            ("access_key", &regenerated),
        ],
    )]);
    assert_eq!(lab.auth("a-new-token"), err("Invalid token."));
    assert_eq!(lab.auth("regenerated"), ok(&["api-token:5"]));

    // Expiring it in the past.
    lab.apply([update(
        AccessTable::ApiTokens,
        &[
            ("id", "5"),
            ("type", "custom"),
            ("access_key", &regenerated),
            ("expires_at", "2026-11-01 00:00:00"),
        ],
    )]);
    assert_eq!(
        lab.refresh(Identity::ApiToken { id: 5 }),
        err("Token expired")
    );

    lab.apply([delete(AccessTable::ApiTokens, 5)]);
    assert_eq!(
        lab.refresh(Identity::ApiToken { id: 5 }),
        err("Invalid token.")
    );
    assert_eq!(lab.auth("regenerated"), err("Invalid token."));
}

#[test]
fn truncating_a_table_empties_it() {
    let cases: &[(AccessTable, &Check)] = &[
        (AccessTable::Roles, &|lab| {
            assert_eq!(
                lab.refresh(Identity::User { id: 1 }),
                err("Invalid credentials")
            );
            assert!(lab.handle.role_names().is_empty());
        }),
        (AccessTable::Permissions, &|lab| {
            assert_eq!(
                lab.rooms(MESSAGE, Action::Create),
                rooms(&["api-token:1", "api-token:2"])
            );
        }),
        (AccessTable::PermissionRoleLinks, &|lab| {
            assert_eq!(
                lab.rooms(MESSAGE, Action::Create),
                rooms(&["api-token:1", "api-token:2"])
            );
        }),
        (AccessTable::Users, &|lab| {
            assert_eq!(lab.auth(ALICE), err("Invalid token."));
        }),
        (AccessTable::UserRoleLinks, &|lab| {
            assert_eq!(lab.auth(ALICE), err("Invalid credentials"));
        }),
        (AccessTable::ApiTokens, &|lab| {
            assert_eq!(lab.auth(LAB_RO), err("Invalid token."));
            assert_eq!(
                lab.rooms(MESSAGE, Action::Create),
                rooms(&["Authenticated", "Public", "Moderator"])
            );
        }),
        (AccessTable::ApiTokenPermissions, &|lab| {
            assert!(
                !lab.rooms(CHAT, Action::Create)
                    .contains(&"api-token:2".to_owned())
            );
        }),
        (AccessTable::ApiTokenPermissionLinks, &|lab| {
            assert!(
                !lab.rooms(CHAT, Action::Create)
                    .contains(&"api-token:2".to_owned())
            );
        }),
    ];
    for (table, check) in cases {
        let mut lab = lab(PermissionMode::Read);
        // Fill the cache first, so the truncate must clear it.
        assert!(!lab.rooms(MESSAGE, Action::Create).is_empty());
        assert!(!lab.rooms(CHAT, Action::Create).is_empty());
        lab.apply([AccessChange::Truncate(*table)]);
        check(&mut lab);
    }
}

#[test]
fn unreadable_rows_are_tolerated() {
    let mut lab = lab(PermissionMode::Read);
    let before = lab.handle.snapshot();
    let users = relation(AccessTable::Users);
    let garbage = [
        // No id at all, or an unreadable one.
        insert(AccessTable::Users, &[("blocked", "t")]),
        insert(AccessTable::Roles, &[("id", "seven"), ("name", "X")]),
        update(AccessTable::Permissions, &[("action", "api::x.x.find")]),
        AccessChange::Row {
            table: AccessTable::Users,
            relation: Arc::clone(&users),
            op: RowOp::Delete {
                old: OldRow::Key(Vec::new()),
            },
        },
        // A tuple shorter than its relation.
        AccessChange::Row {
            table: AccessTable::Users,
            relation: Arc::clone(&users),
            op: RowOp::Insert { new: Vec::new() },
        },
    ];
    for change in garbage {
        lab.access.apply(change);
    }
    assert_eq!(lab.handle.snapshot(), before);

    // Unreadable values read as unknown: a boolean that is not one is false.
    lab.apply([update(
        AccessTable::Users,
        &[("id", "1"), ("confirmed", "t"), ("blocked", "maybe")],
    )]);
    assert_eq!(lab.auth(ALICE), ok(&["Authenticated"]));
    // A link id that is not a number drops the link.
    lab.apply([update(
        AccessTable::UserRoleLinks,
        &[("id", "1"), ("user_id", "1"), ("role_id", "x")],
    )]);
    assert_eq!(lab.auth(ALICE), err("Invalid credentials"));
    // An unreadable expiry fails closed.
    lab.apply([update(
        AccessTable::ApiTokens,
        &[
            ("id", "1"),
            ("type", "read-only"),
            ("access_key", LAB_RO_KEY),
            ("expires_at", "soon"),
        ],
    )]);
    assert_eq!(lab.auth(LAB_RO), err("Token expired"));
    // Binary and non-UTF-8 values are ignored (the previous value stands).
    let mut new = tuple(AccessTable::Users, &[("id", "2"), ("confirmed", "t")]);
    let blocked = users.column_index("blocked").unwrap_or_default();
    new[blocked] = Value::Binary(Bytes::from_static(&[1]));
    lab.apply([AccessChange::Row {
        table: AccessTable::Users,
        relation: Arc::clone(&users),
        op: RowOp::Update { old: None, new },
    }]);
    assert_eq!(lab.auth(EDDIE), ok(&["Editor"]));
    let mut new = tuple(AccessTable::Roles, &[("id", "3"), ("type", "editor")]);
    let name = relation(AccessTable::Roles)
        .column_index("name")
        .unwrap_or_default();
    new[name] = Value::Text(Bytes::from_static(&[0xff, 0xfe]));
    lab.apply([AccessChange::Row {
        table: AccessTable::Roles,
        relation: relation(AccessTable::Roles),
        op: RowOp::Update { old: None, new },
    }]);
    assert_eq!(lab.auth(EDDIE), ok(&["Editor"]));
    // Settings without the flag change nothing.
    lab.apply([AccessChange::AdvancedSettings(serde_json::json!([1, 2]))]);
}

#[test]
fn unchanged_toast_values_keep_their_previous_value() {
    let mut lab = lab(PermissionMode::Read);
    let rel = relation(AccessTable::ApiTokens);
    let mut new = tuple(
        AccessTable::ApiTokens,
        &[("id", "1"), ("name", "renamed"), ("type", "read-only")],
    );
    let key = rel.column_index("access_key").unwrap_or_default();
    new[key] = Value::UnchangedToast;
    lab.apply([AccessChange::Row {
        table: AccessTable::ApiTokens,
        relation: rel,
        op: RowOp::Update { old: None, new },
    }]);
    let p = lab
        .handle
        .authenticate(Some(LAB_RO), None)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.role, "renamed");
}

#[test]
fn an_update_that_changes_the_id_moves_the_row() {
    let mut lab = lab(PermissionMode::Read);
    let rel = relation(AccessTable::UserRoleLinks);
    lab.apply([AccessChange::Row {
        table: AccessTable::UserRoleLinks,
        relation: rel,
        op: RowOp::Update {
            old: Some(OldRow::Key(tuple(
                AccessTable::UserRoleLinks,
                &[("id", "2")],
            ))),
            new: tuple(
                AccessTable::UserRoleLinks,
                &[("id", "20"), ("user_id", "2"), ("role_id", "4")],
            ),
        },
    }]);
    assert_eq!(lab.refresh(Identity::User { id: 2 }), ok(&["Moderator"]));
    lab.apply([delete(AccessTable::UserRoleLinks, 2)]);
    assert_eq!(lab.refresh(Identity::User { id: 2 }), ok(&["Moderator"]));
    lab.apply([delete(AccessTable::UserRoleLinks, 20)]);
    assert_eq!(
        lab.refresh(Identity::User { id: 2 }),
        err("Invalid credentials")
    );
}

// ---------------------------------------------------------------------------------------------
// Rooms cache
// ---------------------------------------------------------------------------------------------

#[test]
fn rooms_are_cached_until_a_change_that_can_change_them() {
    let mut lab = lab(PermissionMode::Read);
    let first = lab.handle.rooms_for(MESSAGE, &Action::Create);
    let again = lab.handle.rooms_for(MESSAGE, &Action::Create);
    assert!(
        Arc::ptr_eq(&first, &again),
        "second call is served from the cache"
    );
    let delivery = lab
        .access
        .authorize(event(MESSAGE, Action::Create))
        .unwrap_or_else(|| panic!("no delivery"));
    assert!(Arc::ptr_eq(&first, &delivery.rooms), "authorize shares it");
    assert_eq!(delivery.event, "message:create");
    assert_eq!(
        delivery.payload.as_str(),
        r#"{"data":{"id":1,"attributes":{}},"meta":{}}"#
    );

    // A user change cannot change which rooms an event goes to: the cache stays.
    lab.apply([update(
        AccessTable::Users,
        &[("id", "1"), ("confirmed", "t"), ("blocked", "t")],
    )]);
    let after_user = lab.handle.rooms_for(MESSAGE, &Action::Create);
    assert!(Arc::ptr_eq(&first, &after_user));
    // A permission change clears it.

    lab.apply([delete(AccessTable::PermissionRoleLinks, 25)]);
    assert_eq!(
        lab.handle.rooms_for(MESSAGE, &Action::Create).to_vec(),
        rooms(&["Authenticated", "Public", "api-token:1", "api-token:2"])
    );
    // The handle and the stage see the same state.
    let other = lab.access.handle();
    assert_eq!(
        other.rooms_for(MESSAGE, &Action::Create),
        lab.handle.rooms_for(MESSAGE, &Action::Create)
    );
}

#[test]
fn cached_rooms_drop_a_token_once_it_expires() {
    let mut lab = lab(PermissionMode::Read);
    lab.clock.set(LAB_CUSTOM_EXPIRES_US);
    assert!(
        lab.rooms(CHAT, Action::Create)
            .contains(&"api-token:2".to_owned())
    );
    lab.clock.set(LAB_CUSTOM_EXPIRES_US + 1);
    assert_eq!(
        lab.rooms(CHAT, Action::Create),
        rooms(&["Authenticated", "Editor", "api-token:1"])
    );
}

// ---------------------------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------------------------

fn small_snapshot() -> AccessSnapshot {
    AccessSnapshot {
        roles: vec![
            Role {
                id: 1,
                name: "Authenticated".to_owned(),
                kind: "authenticated".to_owned(),
            },
            Role {
                id: 2,
                name: "Public".to_owned(),
                kind: "public".to_owned(),
            },
        ],
        role_permissions: vec![
            (1, format!("{MESSAGE}.find")),
            (2, format!("{MESSAGE}.find")),
        ],
        users: vec![
            User {
                id: 1,
                blocked: false,
                confirmed: true,
            },
            User {
                id: 3,
                blocked: false,
                confirmed: false,
            },
        ],
        user_roles: vec![(1, 1), (3, 2)],
        api_tokens: vec![
            ApiToken {
                id: 1,
                name: "lab-ro".to_owned(),
                kind: TokenKind::ReadOnly,
                access_key: LAB_RO_KEY.to_owned(),
                expires_at_unix_micros: None,
            },
            ApiToken {
                id: 2,
                name: "lab-custom".to_owned(),
                kind: TokenKind::Custom,
                access_key: LAB_CUSTOM_KEY.to_owned(),
                expires_at_unix_micros: Some(LAB_CUSTOM_EXPIRES_US),
            },
        ],
        token_permissions: vec![(2, format!("{CHAT}.find"))],
        email_confirmation: true,
    }
}

#[test]
fn a_snapshot_builds_the_same_state_and_numbers_its_rows() {
    let snapshot = small_snapshot();
    let clock = TestClock::at(LAB_NOW_US);
    let mut access = Access::from_snapshot_at(
        config(PermissionMode::Read),
        snapshot.clone(),
        clock.clock(),
    );
    let handle = access.handle();
    assert_eq!(handle.snapshot(), snapshot);
    assert_eq!(
        handle.rooms_for(MESSAGE, &Action::Create).to_vec(),
        rooms(&["Authenticated", "Public", "api-token:1"])
    );
    assert_eq!(
        handle.authenticate(Some(ALICE), None).map(|p| p.rooms),
        Ok(rooms(&["Authenticated"]))
    );
    assert_eq!(
        handle.authenticate(Some(BOB), None),
        Err(AuthError::InvalidCredentials),
        "unconfirmed with email confirmation on"
    );
    assert_eq!(
        handle.authenticate(Some(LAB_CUSTOM), None).map(|p| p.rooms),
        Ok(rooms(&["api-token:2"]))
    );

    // Role permission 2 is up_permissions_role_links id 2; user-role link 2 is id 2; token
    // permission 1 is link id 1.
    access.apply(delete(AccessTable::PermissionRoleLinks, 2));
    access.apply(delete(AccessTable::ApiTokenPermissionLinks, 1));
    access.apply(update(
        AccessTable::UserRoleLinks,
        &[("id", "2"), ("user_id", "3"), ("role_id", "1")],
    ));
    access.apply(AccessChange::AdvancedSettings(
        serde_json::json!({"email_confirmation": false}),
    ));
    assert_eq!(
        handle.rooms_for(MESSAGE, &Action::Create).to_vec(),
        rooms(&["Authenticated", "api-token:1"])
    );
    assert!(
        !handle
            .rooms_for(CHAT, &Action::Create)
            .contains(&"api-token:2".to_owned())
    );
    assert_eq!(
        handle.authenticate(Some(BOB), None).map(|p| p.rooms),
        Ok(rooms(&["Authenticated"]))
    );
}

#[test]
fn the_public_handle_constructor_uses_the_system_clock() {
    // The read-only token never expires, so the answer does not depend on today's date.
    let handle = AccessHandle::from_snapshot(config(PermissionMode::Read), small_snapshot());
    assert!(handle.is_loaded());
    assert_eq!(
        handle.authenticate(Some(LAB_RO), None).map(|p| p.rooms),
        Ok(rooms(&["api-token:1"]))
    );
    assert_eq!(handle.public_role_name(), "Public");
}

#[test]
fn snapshots_list_loaded_rows_sorted() {
    let lab = lab(PermissionMode::Read);
    let s = lab.handle.snapshot();
    assert_eq!(
        s.roles.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["Authenticated", "Public", "Editor", "Moderator"]
    );
    assert_eq!(s.role_permissions.len(), LAB_PERMISSIONS.len());
    assert_eq!(s.user_roles, vec![(1, 1), (2, 3), (3, 1), (4, 1)]);
    assert_eq!(
        s.api_tokens
            .iter()
            .map(|t| (t.id, t.kind, t.expires_at_unix_micros))
            .collect::<Vec<_>>(),
        vec![
            (1, TokenKind::ReadOnly, None),
            (2, TokenKind::Custom, Some(LAB_CUSTOM_EXPIRES_US))
        ]
    );
    assert_eq!(
        s.token_permissions,
        vec![(2, format!("{CHAT}.find")), (2, format!("{MESSAGE}.find"))]
    );
    assert!(!s.email_confirmation);
}

// ---------------------------------------------------------------------------------------------
// Connected sockets: re-checks, expiry, regenerated keys, what a change affects
// ---------------------------------------------------------------------------------------------

/// The whole lab row of token 1 with `access_key` and `last_used_at` as given.
fn lab_ro_row(key: &str, last_used_at: &str) -> AccessChange {
    update(
        AccessTable::ApiTokens,
        &[
            ("id", "1"),
            ("name", "lab-ro"),
            ("type", "read-only"),
            ("access_key", key),
            ("last_used_at", last_used_at),
        ],
    )
}

#[test]
fn a_regenerated_api_token_refuses_sockets_of_the_old_key() {
    let mut lab = lab(PermissionMode::Read);
    let p = lab
        .handle
        .authenticate(Some(LAB_RO), None)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        lab.handle.recheck(&p).map(|p| p.rooms),
        Ok(rooms(&["api-token:1"]))
    );
    // Strapi's regenerate: same id, new access_key.
    let recheck = lab
        .access
        .apply(lab_ro_row(&"ab".repeat(64), "2026-11-26 16:40:00"));
    assert_eq!(recheck.tokens, [1].into());
    assert_eq!(lab.handle.recheck(&p), Err(AuthError::InvalidToken));
    // The plain refresh by id (which knows no key) would still say yes: the key is what counts.
    assert_eq!(
        lab.refresh(Identity::ApiToken { id: 1 }),
        ok(&["api-token:1"])
    );
}

#[test]
fn a_write_to_columns_the_bridge_does_not_read_changes_nothing() {
    let mut lab = lab(PermissionMode::Read);
    let rebuilds = lab.handle.read().rebuilds();
    // Strapi 4 writes last_used_at on every API-token request.
    for second in 0..50 {
        let recheck = lab.access.apply(lab_ro_row(
            LAB_RO_KEY,
            &format!("2026-11-26 16:40:{second:02}"),
        ));
        assert!(recheck.is_empty(), "{recheck:?}");
    }
    // An app's own column on up_users, and updated_at.
    let recheck = lab.access.apply(update(
        AccessTable::Users,
        &[
            ("id", "3"),
            ("username", "bob-renamed"),
            ("confirmed", "t"),
            ("blocked", "f"),
            ("updated_at", "2026-11-26 16:41:00"),
        ],
    ));
    assert!(recheck.is_empty(), "{recheck:?}");
    assert_eq!(lab.handle.read().rebuilds(), rebuilds, "no view rebuild");
    assert_eq!(lab.auth(LAB_RO), ok(&["api-token:1"]));
}

#[test]
fn a_change_names_only_the_sockets_it_can_affect() {
    let mut lab = lab(PermissionMode::Read);
    // A blocked user: that user.
    let r = lab.access.apply(update(
        AccessTable::Users,
        &[("id", "3"), ("confirmed", "t"), ("blocked", "t")],
    ));
    assert_eq!((r.users, r.all_users), ([3].into(), false));
    // A user moved to another role (link 2: eddie): that user.
    let r = lab.access.apply(update(
        AccessTable::UserRoleLinks,
        &[("id", "2"), ("user_id", "2"), ("role_id", "1")],
    ));
    assert_eq!(r.users, [2].into());
    // A renamed role: the sockets of users holding it.
    let r = lab.access.apply(update(
        AccessTable::Roles,
        &[("id", "3"), ("name", "Editors"), ("type", "editor")],
    ));
    assert_eq!(r.roles, [3].into());
    // A revoked permission changes which rooms events go to, not who is in a room.
    let rebuilds = lab.handle.read().rebuilds();
    let r = lab.access.apply(delete(AccessTable::Permissions, 1));
    assert!(r.is_empty(), "{r:?}");
    assert!(r.subscriptions, "subscriptions need read access: {r:?}");
    assert_eq!(lab.handle.read().rebuilds(), rebuilds + 1);
    // A deleted token: its sockets.
    let r = lab.access.apply(delete(AccessTable::ApiTokens, 2));
    assert_eq!(r.tokens, [2].into());

    let alice = lab
        .handle
        .authenticate(Some(ALICE), None)
        .unwrap_or_else(|e| panic!("{e}"));
    let only_bob = Recheck {
        users: [3].into(),
        ..Recheck::default()
    };
    assert!(!only_bob.affects(&alice));
    let role_one = Recheck {
        roles: [1].into(),
        ..Recheck::default()
    };
    assert!(role_one.affects(&alice), "alice holds role 1");
    assert!(Recheck::everything().affects(&alice));
    assert!(
        !Recheck::everything().affects(
            &lab.handle
                .authenticate(None, None)
                .unwrap_or_else(|e| panic!("{e}"))
        )
    );
}

#[test]
fn a_connected_jwt_expires_at_exp_and_a_token_at_expires_at() {
    let lab = lab(PermissionMode::Read);
    let alice = lab
        .handle
        .authenticate(Some(ALICE), None)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(alice.expires_at, Some(ALICE_EXP_US));
    lab.clock.set(ALICE_EXP_US - 1);
    assert_eq!(
        lab.handle.recheck(&alice).map(|p| p.expires_at),
        Ok(Some(ALICE_EXP_US))
    );
    lab.clock.set(ALICE_EXP_US);
    assert_eq!(lab.handle.recheck(&alice), Err(AuthError::InvalidToken));

    lab.clock.set(LAB_NOW_US);
    let custom = lab
        .handle
        .authenticate(Some(LAB_CUSTOM), None)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(custom.expires_at, Some(LAB_CUSTOM_EXPIRES_US + 1));
    lab.clock.set(LAB_CUSTOM_EXPIRES_US);
    assert!(lab.handle.recheck(&custom).is_ok(), "at expires_at");
    lab.clock.set(LAB_CUSTOM_EXPIRES_US + 1);
    assert_eq!(lab.handle.recheck(&custom), Err(AuthError::TokenExpired));
}
