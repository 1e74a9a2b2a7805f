//! The JSON clients receive, serialized once per event and shared by every room.
//!
//! A data event's payload has the shape Strapi's REST API gives one entry without
//! `populate`: Strapi 4's `{"data":{"id":1,"attributes":{...}},"meta":{}}`, Strapi 5's flat
//! `{"data":{"id":4,"documentId":"…",...},"meta":{}}`. [`EntryBuilder`] writes it
//! straight into one `String`, attribute by attribute, with the value rules of
//! [`format`](mod@super::format).
//!
//! A data event whose payload is larger than `[io] max_event_bytes` goes out with the entry's
//! id only (and `documentId` where the payload has one) and `"truncated": true` in `meta`
//! ([`limit_event`]); clients refetch the entry. A custom message that large has no id to keep
//! and is not sent ([`limit_raw`]).

use std::fmt::{self, Write as _};
use std::sync::Arc;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::catalog::AttributeType;
use super::format::{self, ValueProblem};
use super::{RawEmit, StrapiEvent};

/// Serialized JSON, shared cheaply (`Arc`) between every room and socket an event goes to.
#[derive(Clone)]
pub struct Payload(Arc<RawValue>);

/// The text was not one JSON value.
#[derive(Debug, thiserror::Error)]
#[error("not a JSON value: {0}")]
pub struct PayloadError(#[from] serde_json::Error);

impl Payload {
    /// Wraps JSON text, checking that it is one JSON value.
    pub fn from_json(text: String) -> Result<Payload, PayloadError> {
        Ok(Payload(Arc::from(RawValue::from_string(text)?)))
    }

    /// Serializes a value.
    pub fn from_value<T: Serialize + ?Sized>(value: &T) -> Result<Payload, PayloadError> {
        Ok(Payload(Arc::from(serde_json::value::to_raw_value(value)?)))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// Size of the JSON text in bytes.
    pub fn len(&self) -> usize {
        self.0.get().len()
    }

    /// Never true: the smallest JSON value has one byte.
    pub fn is_empty(&self) -> bool {
        self.0.get().is_empty()
    }

    /// The entry with its id only (and `documentId` where this payload has one), `meta`
    /// saying `"truncated": true`; the Strapi 4 shape keeps an empty `attributes`. `id` is
    /// used when the payload has none.
    pub fn truncated(&self, id: i64) -> Result<Payload, PayloadError> {
        #[derive(Deserialize)]
        struct Head<'a> {
            #[serde(borrow)]
            data: Option<Entry<'a>>,
        }
        #[derive(Deserialize)]
        struct Entry<'a> {
            #[serde(borrow)]
            id: Option<&'a RawValue>,
            #[serde(borrow, rename = "documentId")]
            document_id: Option<&'a RawValue>,
            attributes: Option<IgnoredAny>,
        }
        let head = serde_json::from_str::<Head<'_>>(self.as_str())
            .ok()
            .and_then(|h| h.data);
        let mut out = String::with_capacity(96);
        match head.as_ref().and_then(|e| e.id) {
            Some(raw) => {
                let _ = write!(out, "{{\"data\":{{\"id\":{}", raw.get());
            }
            None => {
                let _ = write!(out, "{{\"data\":{{\"id\":{id}");
            }
        }
        if let Some(doc) = head.as_ref().and_then(|e| e.document_id) {
            let _ = write!(out, ",\"documentId\":{}", doc.get());
        }
        if head.as_ref().is_none_or(|e| e.attributes.is_some()) {
            out.push_str(",\"attributes\":{}");
        }
        out.push_str("},\"meta\":{\"truncated\":true}}");
        Payload::from_json(out)
    }

    /// Parsed back into a value (tests, handlers).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(self.0.get()).unwrap_or(serde_json::Value::Null)
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Payload {}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.get())
    }
}

/// Writes one entry's REST-shaped JSON into a single buffer.
#[derive(Debug)]
pub(crate) struct EntryBuilder {
    buf: String,
    first: bool,
    /// Strapi 4's `attributes` object is open and must be closed too.
    nested: bool,
}

impl EntryBuilder {
    /// Starts the entry `id`; `capacity` is a guess of the final size.
    pub(crate) fn new(id: i64, capacity: usize) -> EntryBuilder {
        let mut buf = String::with_capacity(capacity.max(64));
        let _ = write!(buf, "{{\"data\":{{\"id\":{id},\"attributes\":{{");
        EntryBuilder {
            buf,
            first: true,
            nested: true,
        }
    }

    /// Starts a Strapi 5 entry: `{"data":{"id":…,"documentId":…,<attributes>},"meta":{}}`,
    /// the attributes beside the ids.
    pub(crate) fn flat(id: i64, document_id: Option<&str>, capacity: usize) -> EntryBuilder {
        let mut buf = String::with_capacity(capacity.max(96));
        let _ = write!(buf, "{{\"data\":{{\"id\":{id},\"documentId\":");
        match document_id {
            Some(d) => format::write_json_string(&mut buf, d),
            None => buf.push_str("null"),
        }
        EntryBuilder {
            buf,
            first: false,
            nested: false,
        }
    }

    /// Adds attribute `name`; `value` is the column's text, `None` for SQL NULL. A value that
    /// does not fit the attribute's type is written as `null` and the problem returned, so the
    /// caller can log it.
    pub(crate) fn attribute(
        &mut self,
        name: &str,
        kind: &AttributeType,
        type_oid: u32,
        value: Option<&[u8]>,
    ) -> Result<(), ValueProblem> {
        if !self.first {
            self.buf.push(',');
        }
        self.first = false;
        format::write_json_string(&mut self.buf, name);
        self.buf.push(':');
        match value {
            None => {
                self.buf.push_str("null");
                Ok(())
            }
            Some(text) => {
                let mark = self.buf.len();
                let result = format::write_value(&mut self.buf, kind, type_oid, text);
                if result.is_err() {
                    self.buf.truncate(mark);
                    self.buf.push_str("null");
                }
                result
            }
        }
    }

    /// Closes the entry.
    pub(crate) fn finish(mut self) -> Result<Payload, PayloadError> {
        if self.nested {
            self.buf.push('}');
        }
        self.buf.push_str("},\"meta\":{}}");
        Payload::from_json(self.buf)
    }
}

/// `{"data":{"id":<id>,"attributes":{}},"meta":{}}`: an entry of which only the id is known (a
/// delete logged with the key only).
pub(crate) fn id_only(id: i64) -> Result<Payload, PayloadError> {
    EntryBuilder::new(id, 64).finish()
}

/// `event` as it may go out under `max_bytes`: whole when it fits, a data event with its id
/// only when it does not, and `None` (not sent, logged) for a custom emit that does not.
pub fn limit_event(mut event: StrapiEvent, max_bytes: usize) -> Option<StrapiEvent> {
    let size = event.payload.len();
    if size <= max_bytes {
        return Some(event);
    }
    let Some(id) = event.entry_id else {
        tracing::warn!(
            uid = %event.content_type.uid,
            action = %event.action,
            bytes = size,
            max_event_bytes = max_bytes,
            "custom emit larger than io.max_event_bytes not sent"
        );
        return None;
    };
    match event.payload.truncated(id) {
        Ok(payload) => {
            tracing::warn!(
                uid = %event.content_type.uid,
                entry = id,
                bytes = size,
                max_event_bytes = max_bytes,
                "event payload larger than io.max_event_bytes: sent with the id only"
            );
            event.payload = payload;
            Some(event)
        }
        // Cannot happen (the text above is valid JSON); never send the large payload.
        Err(e) => {
            tracing::error!(uid = %event.content_type.uid, entry = id, "truncated payload not built: {e}");
            None
        }
    }
}

/// Whether a `raw` message fits in `max_bytes`; one that does not is logged and not sent.
pub fn limit_raw(raw: &RawEmit, max_bytes: usize) -> bool {
    let size = raw.data.len();
    if size > max_bytes {
        tracing::warn!(
            event = %raw.event,
            bytes = size,
            max_event_bytes = max_bytes,
            "raw message larger than io.max_event_bytes not sent"
        );
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_rest_shape_and_nulls_bad_values() {
        let mut b = EntryBuilder::new(7, 0);
        assert!(
            b.attribute("text", &AttributeType::String, 1043, Some(b"hi"))
                .is_ok()
        );
        assert!(
            b.attribute("likes", &AttributeType::Integer, 23, None)
                .is_ok()
        );
        assert!(
            b.attribute("flag", &AttributeType::Boolean, 16, Some(b"maybe"))
                .is_err()
        );
        assert!(
            b.attribute("meta", &AttributeType::Json, 3802, Some(b"{\"a\": [1]}"))
                .is_ok()
        );
        let p = b.finish().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p.as_str(),
            r#"{"data":{"id":7,"attributes":{"text":"hi","likes":null,"flag":null,"meta":{"a": [1]}}},"meta":{}}"#
        );
        assert_eq!(
            id_only(3).map(|p| p.to_value()).ok(),
            Some(serde_json::json!({"data":{"id":3,"attributes":{}},"meta":{}}))
        );
    }

    #[test]
    fn serializes_verbatim_inside_other_json() {
        let p = Payload::from_json(r#"{"data":{"id":1,"attributes":{}},"meta":{}}"#.to_owned())
            .unwrap_or_else(|e| panic!("{e}"));
        let wrapped = serde_json::to_string(&("message:create", &p)).unwrap_or_default();
        assert_eq!(
            wrapped,
            r#"["message:create",{"data":{"id":1,"attributes":{}},"meta":{}}]"#
        );
    }

    #[test]
    fn a_truncated_payload_keeps_the_id_and_document_id() {
        let v4 = Payload::from_json(
            r#"{"data":{"id":7,"attributes":{"body":"xxxxxxxx"}},"meta":{}}"#.to_owned(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            v4.truncated(7)
                .map(|p| p.as_str().to_owned())
                .ok()
                .as_deref(),
            Some(r#"{"data":{"id":7,"attributes":{}},"meta":{"truncated":true}}"#)
        );
        let v5 = Payload::from_json(
            r#"{"data":{"id":7,"documentId":"abc123","body":"xxxxxxxx"},"meta":{}}"#.to_owned(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            v5.truncated(7)
                .map(|p| p.as_str().to_owned())
                .ok()
                .as_deref(),
            Some(r#"{"data":{"id":7,"documentId":"abc123"},"meta":{"truncated":true}}"#)
        );
        let odd = Payload::from_json("[1,2]".to_owned()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            odd.truncated(9)
                .map(|p| p.as_str().to_owned())
                .ok()
                .as_deref(),
            Some(r#"{"data":{"id":9,"attributes":{}},"meta":{"truncated":true}}"#)
        );
    }

    #[test]
    fn refuses_text_that_is_not_json() {
        assert!(Payload::from_json("{".to_owned()).is_err());
        assert!(Payload::from_json("1 2".to_owned()).is_err());
    }
}
