//! Custom emits: the JSON body of a `pg_logical_emit_message` (or of `POST /io/emit` and
//! `POST /io/raw`), the bridge's stand-in for the plugin's `strapi.$io.emit` and `raw`.
//!
//! ```json
//! {"emit":"api::message.message.someCustomAction","data":{"x":1}}
//! {"raw":"customEvent","data":{"x":1},"room":"Public"}
//! ```

use serde::Deserialize;

use super::{Payload, PayloadError};

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
