//! The JSON clients receive, serialized once per event and shared by every room.
//!
//! A data event's payload has the shape Strapi's REST API gives one entry without
//! `populate`: Strapi 4's `{"data":{"id":1,"attributes":{...}},"meta":{}}`, Strapi 5's flat
//! `{"data":{"id":4,"documentId":"…",...},"meta":{}}`. [`EntryBuilder`] writes it
//! straight into one `String`, attribute by attribute, with the value rules of
//! [`format`](mod@super::format).

use std::fmt::{self, Write as _};
use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

use super::catalog::AttributeType;
use super::format::{self, ValueProblem};

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
    fn refuses_text_that_is_not_json() {
        assert!(Payload::from_json("{".to_owned()).is_err());
        assert!(Payload::from_json("1 2".to_owned()).is_err());
    }
}
