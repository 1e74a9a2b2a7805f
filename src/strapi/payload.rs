//! The JSON clients receive, serialized once per event and shared by every room.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

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

#[cfg(test)]
mod tests {
    use super::*;

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
