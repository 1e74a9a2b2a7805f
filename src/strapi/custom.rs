//! Custom emits: the JSON body of a `pg_logical_emit_message` (or of `POST /io/emit` and
//! `POST /io/raw`), the bridge's stand-in for the plugin's `strapi.$io.emit` and `raw`.
//!
//! ```json
//! {"emit":"api::message.message.someCustomAction","data":{"x":1}}
//! {"raw":"customEvent","data":{"x":1},"room":"Public"}
//! ```
//!
//! `pg_logical_emit_message` may be called by any database role unless a superuser revokes it,
//! so a message from the stream ([`CustomMessage::parse_logical`]) may not pose as a data event
//! (`create`, `update`, `delete`, `publish`, `unpublish`, `createOrUpdate`) unless
//! `[messages] allow_data_actions` says so. No custom message may name an `admin::` content
//! type: those are never emitted.

use serde::Deserialize;

use super::catalog::is_admin_uid;
use super::{Action, Payload, PayloadError};

/// A parsed custom message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomMessage {
    /// `emit`: to the roles allowed by the permission rule, as `<singularName>:<action>`.
    Emit {
        /// Content-type uid, `api::message.message`.
        uid: String,
        /// The action, `someCustomAction` (the last dot-separated segment).
        action: String,
        /// Sent unchanged.
        data: Payload,
    },
    /// `raw`: sent unchanged as `event` to `rooms` (room names or socket ids), or to everyone.
    Raw {
        /// Event name.
        event: String,
        /// Sent unchanged.
        data: Payload,
        /// Target rooms; `None` = every socket.
        rooms: Option<Vec<String>>,
    },
}

/// What is wrong with a custom message, said for the person who wrote it.
#[derive(Debug, thiserror::Error)]
pub enum CustomError {
    /// Not JSON, an unknown field, or a field of the wrong type.
    #[error("{0}")]
    Json(String),
    /// Neither or both of `emit` and `raw`.
    #[error("give exactly one of \"emit\" (\"<uid>.<action>\") or \"raw\" (an event name)")]
    Kind,
    /// `emit` is not `<uid>.<action>`.
    #[error(
        "\"emit\" must be a content-type uid and an action, like \"api::message.message.someCustomAction\"; got {0:?}"
    )]
    EmitName(String),
    /// An empty event or room name.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// `room` given to `emit`.
    #[error(
        "\"room\" applies to \"raw\" only; \"emit\" goes to the roles allowed to read the content type"
    )]
    RoomOnEmit,
    /// `data` could not be re-serialized.
    #[error("data: {0}")]
    Data(#[from] PayloadError),
    /// `emit` names an `admin::` content type.
    #[error("{0:?} is an admin:: content type (admin users, roles, API tokens): never emitted")]
    AdminType(String),
    /// A message from the database poses as a data event.
    #[error(
        "{0:?} is a data action, which only row changes send (set [messages] allow_data_actions = true to let messages send it)"
    )]
    DataAction(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    emit: Option<String>,
    raw: Option<String>,
    #[serde(default)]
    data: Option<Box<serde_json::value::RawValue>>,
    room: Option<RoomParam>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RoomParam {
    One(String),
    Many(Vec<String>),
}

impl CustomMessage {
    /// Parses a custom message. `data` defaults to `null` when absent.
    pub fn parse(bytes: &[u8]) -> Result<CustomMessage, CustomError> {
        let wire: Wire =
            serde_json::from_slice(bytes).map_err(|e| CustomError::Json(e.to_string()))?;
        let data = match wire.data {
            Some(raw) => Payload::from_json(raw.get().to_owned())?,
            None => Payload::from_json("null".to_owned())?,
        };
        match (wire.emit, wire.raw) {
            (Some(emit), None) => {
                if wire.room.is_some() {
                    return Err(CustomError::RoomOnEmit);
                }
                let (uid, action) = split_emit(&emit)?;
                if is_admin_uid(&uid) {
                    return Err(CustomError::AdminType(uid));
                }
                Ok(CustomMessage::Emit { uid, action, data })
            }
            (None, Some(event)) => {
                if event.is_empty() {
                    return Err(CustomError::Empty("\"raw\""));
                }
                let rooms = match wire.room {
                    None => None,
                    Some(RoomParam::One(r)) => Some(vec![r]),
                    Some(RoomParam::Many(list)) => Some(list),
                };
                if let Some(rooms) = &rooms
                    && (rooms.is_empty() || rooms.iter().any(String::is_empty))
                {
                    return Err(CustomError::Empty("\"room\""));
                }
                Ok(CustomMessage::Raw { event, data, rooms })
            }
            _ => Err(CustomError::Kind),
        }
    }
}

impl CustomMessage {
    /// Parses a message that came through `pg_logical_emit_message`. Unless
    /// `allow_data_actions`, an `emit` with a data action and a `raw` event named
    /// `<anything>:<data action>` are refused ([`CustomError::DataAction`]): any role that may
    /// call the function could otherwise forge a `message:create` for every reader.
    pub fn parse_logical(
        bytes: &[u8],
        allow_data_actions: bool,
    ) -> Result<CustomMessage, CustomError> {
        let message = CustomMessage::parse(bytes)?;
        if !allow_data_actions && let Some(name) = message.data_action_name() {
            return Err(CustomError::DataAction(name.to_owned()));
        }
        Ok(message)
    }

    /// The event name when this message would look like a data event: an `emit` whose action
    /// is a data action, or a `raw` event named `<anything>:<data action>`.
    pub fn data_action_name(&self) -> Option<&str> {
        let (name, action) = match self {
            CustomMessage::Emit { action, .. } => (action.as_str(), action.as_str()),
            CustomMessage::Raw { event, .. } => (event.as_str(), event.rsplit_once(':')?.1),
        };
        Action::DATA
            .iter()
            .any(|a| a.as_str() == action)
            .then_some(name)
    }
}

/// `api::message.message.someCustomAction` → (`api::message.message`, `someCustomAction`).
fn split_emit(name: &str) -> Result<(String, String), CustomError> {
    let bad = || CustomError::EmitName(name.to_owned());
    let (scope, rest) = name.split_once("::").ok_or_else(bad)?;
    let (model, action) = rest.rsplit_once('.').ok_or_else(bad)?;
    if scope.is_empty() || action.is_empty() || !model.contains('.') || model.starts_with('.') {
        return Err(bad());
    }
    Ok((format!("{scope}::{model}"), action.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<CustomMessage, CustomError> {
        CustomMessage::parse(s.as_bytes())
    }

    #[test]
    fn emit_splits_uid_and_action() {
        let m = parse(r#"{"emit":"api::message.message.someCustomAction","data":{"x":1}}"#);
        match m {
            Ok(CustomMessage::Emit { uid, action, data }) => {
                assert_eq!(uid, "api::message.message");
                assert_eq!(action, "someCustomAction");
                assert_eq!(data.as_str(), r#"{"x":1}"#);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn raw_takes_one_room_a_list_or_none() {
        for (text, want) in [
            (
                r#"{"raw":"e","data":1,"room":"Public"}"#,
                Some(vec!["Public"]),
            ),
            (
                r#"{"raw":"e","data":1,"room":["a","b"]}"#,
                Some(vec!["a", "b"]),
            ),
            (r#"{"raw":"e","data":1}"#, None),
        ] {
            match parse(text) {
                Ok(CustomMessage::Raw { event, rooms, data }) => {
                    assert_eq!(event, "e");
                    assert_eq!(data.as_str(), "1");
                    assert_eq!(
                        rooms,
                        want.map(|v| v.into_iter().map(String::from).collect())
                    );
                }
                other => panic!("{text}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn messages_from_the_database_cannot_pose_as_data_events_unless_allowed() {
        let forged = [
            r#"{"emit":"api::message.message.create","data":{"data":{"id":1}}}"#,
            r#"{"emit":"api::message.message.createOrUpdate"}"#,
            r#"{"raw":"message:update","data":1,"room":"Public"}"#,
            r#"{"raw":"anything:unpublish"}"#,
        ];
        for text in forged {
            match CustomMessage::parse_logical(text.as_bytes(), false) {
                Err(CustomError::DataAction(name)) => {
                    assert!(!name.is_empty(), "{text}");
                }
                other => panic!("{text}: expected a refusal, got {other:?}"),
            }
            assert!(
                CustomMessage::parse_logical(text.as_bytes(), true).is_ok(),
                "{text} is allowed when configured"
            );
        }
        for fine in [
            r#"{"emit":"api::message.message.someCustomAction"}"#,
            r#"{"emit":"api::message.message.created"}"#,
            r#"{"raw":"create"}"#,
            r#"{"raw":"message:typing"}"#,
        ] {
            assert!(
                CustomMessage::parse_logical(fine.as_bytes(), false).is_ok(),
                "{fine}"
            );
        }
    }

    #[test]
    fn admin_content_types_are_never_emitted() {
        // Strapi's admin uids have no dot after the scope, so they never split as a uid…
        for text in [
            r#"{"emit":"admin::api-token.create"}"#,
            r#"{"emit":"admin::user.someCustomAction","data":1}"#,
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
        // …and a dotted admin:: uid is refused as such.
        assert!(matches!(
            parse(r#"{"emit":"admin::api-token.api-token.someCustomAction"}"#),
            Err(CustomError::AdminType(uid)) if uid == "admin::api-token.api-token"
        ));
    }

    #[test]
    fn malformed_messages_say_what_is_wrong() {
        let cases = [
            ("{", "EOF"),
            (r#"{"raw":"e","extra":1}"#, "unknown field `extra`"),
            (r#"{"data":1}"#, "exactly one of"),
            (r#"{"emit":"a","raw":"b"}"#, "exactly one of"),
            (
                r#"{"emit":"message.create"}"#,
                "content-type uid and an action",
            ),
            (
                r#"{"emit":"api::message"}"#,
                "content-type uid and an action",
            ),
            (
                r#"{"emit":"api::message.message.x","room":"r"}"#,
                "applies to \"raw\" only",
            ),
            (r#"{"raw":""}"#, "must not be empty"),
            (r#"{"raw":"e","room":[]}"#, "must not be empty"),
            (r#"{"raw":"e","room":5}"#, "did not match"),
        ];
        for (text, needle) in cases {
            match parse(text) {
                Ok(m) => panic!("{text} parsed as {m:?}"),
                Err(e) => assert!(
                    e.to_string().contains(needle),
                    "{text}: {e} does not mention {needle:?}"
                ),
            }
        }
    }
}
