//! Column text → the JSON Strapi 4's REST API sends for it.
//!
//! Strapi reads rows with node-postgres, converts them with its field classes
//! (`@strapi/database` `fields`) and lets `JSON.stringify` print the result. The rules, per
//! attribute type, with the PostgreSQL text output pgoutput sends as input:
//!
//! | attribute | column text | JSON |
//! |---|---|---|
//! | string, text, richtext, email, uid, enumeration | as stored | string |
//! | integer | `43` | number |
//! | biginteger | `9007199254740993` | **string** (node-postgres keeps int8 as text) |
//! | float | `0.5` | number as JavaScript prints the double |
//! | decimal | `12.50` | number via `parseFloat`: `12.5` |
//! | boolean | `t` / `f` | `true` / `false` |
//! | json, blocks | `{"n": 1}` | the JSON itself (printed as stored) |
//! | date | `2024-01-01` | string, as stored |
//! | time | `12:34:56` | string, as stored (`fromDB` returns node-postgres's text) |
//! | datetime | `2024-01-01 10:00:00` | `"2024-01-01T10:00:00.000Z"` (`toISOString`) |
//! | timestamp | `2024-01-01 10:00:00` | `"1704103200000"` (date-fns `format(d, 'T')`: ms since 1970, as a string) |
//!
//! `timestamp without time zone` is read as UTC: node-postgres reads it in the Strapi process's
//! time zone, and Strapi is run in UTC (the lab did; so do Strapi's own Docker images). Text
//! with an offset (`timestamptz`) is converted to UTC. Values Strapi would turn into `null`
//! through an invalid `Date` (`infinity`, BC dates) are sent as their text instead, so nothing
//! is lost. NaN and infinite numbers become `null`, as `JSON.stringify` prints them.
//!
//! Every writer here writes one complete JSON value or nothing: on bad input the caller gets a
//! [`ValueProblem`] and writes `null` itself.

use std::fmt::{self, Write as _};

use super::catalog::AttributeType;

/// Why a column's text could not be turned into its attribute's JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ValueProblem {
    /// The text is not what the attribute's type stores (an `integer` column holding `abc`).
    #[error("{kind} value {text:?} is not valid")]
    Invalid {
        /// The attribute type expected.
        kind: &'static str,
        /// The text, cut to a readable length.
        text: String,
    },
}

impl ValueProblem {
    fn invalid(kind: &'static str, text: &[u8]) -> ValueProblem {
        let text = String::from_utf8_lossy(&text[..text.len().min(80)]).into_owned();
        ValueProblem::Invalid { kind, text }
    }
}

/// PostgreSQL type OIDs the formatter cares about.
mod oid {
    pub const BOOL: u32 = 16;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const NUMERIC: u32 = 1700;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const JSONB: u32 = 3802;
}

/// Writes the JSON for one non-null column value of an attribute of type `kind`, stored in a
/// column of type `type_oid`. On a problem nothing is written.
pub(crate) fn write_value(
    out: &mut String,
    kind: &AttributeType,
    type_oid: u32,
    text: &[u8],
) -> Result<(), ValueProblem> {
    match kind {
        AttributeType::String | AttributeType::Date | AttributeType::Time => {
            write_json_string(out, &String::from_utf8_lossy(text));
            Ok(())
        }
        AttributeType::BigInteger => {
            write_json_string(out, &String::from_utf8_lossy(text));
            Ok(())
        }
        AttributeType::Integer => write_integer(out, text),
        AttributeType::Float | AttributeType::Decimal => write_float(out, text),
        AttributeType::Boolean => write_bool(out, text),
        AttributeType::Json => write_json(out, text),
        AttributeType::DateTime => {
            write_datetime(out, text);
            Ok(())
        }
        AttributeType::Timestamp => {
            write_epoch_millis(out, text);
            Ok(())
        }
        // Never emitted (the caller filters them); written as strings if ever asked.
        AttributeType::Password | AttributeType::NotScalar => {
            write_json_string(out, &String::from_utf8_lossy(text));
            Ok(())
        }
        AttributeType::Other(_) => write_by_column_type(out, type_oid, text),
    }
}

/// An attribute type Strapi does not define (a plugin's): printed by its column type, as
/// node-postgres would hand it over.
fn write_by_column_type(out: &mut String, type_oid: u32, text: &[u8]) -> Result<(), ValueProblem> {
    match type_oid {
        oid::BOOL => write_bool(out, text),
        oid::INT2 | oid::INT4 | oid::OID => write_integer(out, text),
        oid::FLOAT4 | oid::FLOAT8 | oid::NUMERIC => write_float(out, text),
        oid::JSON | oid::JSONB => write_json(out, text),
        oid::TIMESTAMP | oid::TIMESTAMPTZ => {
            write_datetime(out, text);
            Ok(())
        }
        oid::INT8 => {
            write_json_string(out, &String::from_utf8_lossy(text));
            Ok(())
        }
        _ => {
            write_json_string(out, &String::from_utf8_lossy(text));
            Ok(())
        }
    }
}

fn write_integer(out: &mut String, text: &[u8]) -> Result<(), ValueProblem> {
    let s = std::str::from_utf8(text).map_err(|_| ValueProblem::invalid("integer", text))?;
    // Integers beyond 2^53 are not exact in a JavaScript number.
    const MAX_SAFE: i64 = (1 << 53) - 1;
    match s.parse::<i64>() {
        Ok(v) if (-MAX_SAFE..=MAX_SAFE).contains(&v) => {
            let _ = write!(out, "{v}");
            Ok(())
        }
        _ => write_float(out, text).map_err(|_| ValueProblem::invalid("integer", text)),
    }
}

fn write_float(out: &mut String, text: &[u8]) -> Result<(), ValueProblem> {
    let s = std::str::from_utf8(text).map_err(|_| ValueProblem::invalid("number", text))?;
    let v = match s {
        "NaN" => f64::NAN,
        "Infinity" => f64::INFINITY,
        "-Infinity" => f64::NEG_INFINITY,
        _ => s
            .parse::<f64>()
            .map_err(|_| ValueProblem::invalid("number", text))?,
    };
    write_js_number(out, v);
    Ok(())
}

fn write_bool(out: &mut String, text: &[u8]) -> Result<(), ValueProblem> {
    match text {
        b"t" | b"true" => out.push_str("true"),
        b"f" | b"false" => out.push_str("false"),
        _ => return Err(ValueProblem::invalid("boolean", text)),
    }
    Ok(())
}

fn write_json(out: &mut String, text: &[u8]) -> Result<(), ValueProblem> {
    match serde_json::from_slice::<serde::de::IgnoredAny>(text) {
        // Valid JSON is UTF-8.
        Ok(_) => match std::str::from_utf8(text) {
            Ok(s) => {
                out.push_str(s.trim());
                Ok(())
            }
            Err(_) => Err(ValueProblem::invalid("json", text)),
        },
        Err(_) => Err(ValueProblem::invalid("json", text)),
    }
}

/// Writes `s` as a JSON string, escaping as `JSON.stringify` does.
pub(crate) fn write_json_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// A small stack buffer for formatting a float without a heap allocation.
struct StackBuf {
    buf: [u8; 40],
    len: usize,
}

impl fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Writes `v` as JavaScript's `Number.prototype.toString` prints it (shortest digits that
/// round-trip; plain notation from 1e-6 up to 1e21, exponent notation outside), which is what
/// `JSON.stringify` writes. NaN and infinities are `null`, as in `JSON.stringify`.
pub(crate) fn write_js_number(out: &mut String, v: f64) {
    if !v.is_finite() {
        out.push_str("null");
        return;
    }
    if v == 0.0 {
        out.push('0');
        return;
    }
    // Rust's `{:e}` without precision prints the shortest round-trip digits: `1.2345e-7`.
    let mut sb = StackBuf {
        buf: [0; 40],
        len: 0,
    };
    if write!(sb, "{:e}", v.abs()).is_err() {
        // Cannot happen: an f64 in exponent form is at most 24 bytes.
        out.push_str("null");
        return;
    }
    let text = std::str::from_utf8(&sb.buf[..sb.len]).unwrap_or("0e0");
    let (mantissa, exp) = text.split_once('e').unwrap_or((text, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (int_digit, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    // digits = int_digit ++ frac, k digits, value = 0.digits × 10^n
    let k = 1 + frac.len() as i32;
    let n = exp + 1;
    if v < 0.0 {
        out.push('-');
    }
    let digit_at = |i: i32| -> char {
        if i == 0 {
            int_digit.chars().next().unwrap_or('0')
        } else {
            frac.as_bytes()
                .get((i - 1) as usize)
                .map(|b| *b as char)
                .unwrap_or('0')
        }
    };
    if k <= n && n <= 21 {
        for i in 0..k {
            out.push(digit_at(i));
        }
        for _ in 0..(n - k) {
            out.push('0');
        }
    } else if 0 < n && n <= 21 {
        for i in 0..n {
            out.push(digit_at(i));
        }
        out.push('.');
        for i in n..k {
            out.push(digit_at(i));
        }
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        for _ in 0..(-n) {
            out.push('0');
        }
        for i in 0..k {
            out.push(digit_at(i));
        }
    } else {
        out.push(digit_at(0));
        if k > 1 {
            out.push('.');
            for i in 1..k {
                out.push(digit_at(i));
            }
        }
        let e = n - 1;
        let _ = write!(out, "e{}{}", if e < 0 { '-' } else { '+' }, e.abs());
    }
}

/// A point in time parsed from PostgreSQL's ISO text output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Instant {
    /// Days since 1970-01-01 (UTC).
    days: i64,
    /// Milliseconds into the day (UTC), microseconds truncated.
    millis: i64,
}

impl Instant {
    fn epoch_millis(self) -> i64 {
        self.days * 86_400_000 + self.millis
    }
}

/// Writes a datetime as `Date.prototype.toISOString` does: `2026-11-26T16:32:00.454Z`.
/// Text that is not an AD date and time (`infinity`, BC dates, anything unexpected) is written
/// as a JSON string of the text itself.
pub(crate) fn write_datetime(out: &mut String, text: &[u8]) {
    match parse_timestamp(text) {
        Some(instant) => write_iso(out, instant),
        None => write_json_string(out, &String::from_utf8_lossy(text)),
    }
}

/// Writes a `timestamp` attribute: milliseconds since 1970 as a JSON string.
fn write_epoch_millis(out: &mut String, text: &[u8]) {
    match parse_timestamp(text) {
        Some(instant) => {
            let _ = write!(out, "\"{}\"", instant.epoch_millis());
        }
        None => write_json_string(out, &String::from_utf8_lossy(text)),
    }
}

fn write_iso(out: &mut String, t: Instant) {
    let (year, month, day) = civil_from_days(t.days);
    let ms = t.millis;
    let (h, m, s, f) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    if (0..=9999).contains(&year) {
        let _ = write!(out, "\"{year:04}");
    } else {
        // toISOString's expanded years: six digits with a sign.
        let sign = if year < 0 { '-' } else { '+' };
        let _ = write!(out, "\"{sign}{:06}", year.abs());
    }
    let _ = write!(out, "-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{f:03}Z\"");
}

/// Parses PostgreSQL's ISO output of `timestamp` / `timestamptz`:
/// `YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM[:SS]]]`. `None` for anything else (including
/// `infinity` and ` BC` dates).
fn parse_timestamp(text: &[u8]) -> Option<Instant> {
    let s = std::str::from_utf8(text).ok()?;
    let (date, rest) = s.split_once(' ')?;
    let (y, md) = date.split_once('-')?;
    let (mo, d) = md.split_once('-')?;
    let year: i64 = digits(y, 4, 7)?;
    let month: i64 = digits(mo, 2, 2)?;
    let day: i64 = digits(d, 2, 2)?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Time, then an optional offset starting with + or -.
    let offset_at = rest.find(['+', '-']);
    let (time, offset) = match offset_at {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    let (hms, frac) = match time.split_once('.') {
        Some((hms, frac)) => (hms, frac),
        None => (time, ""),
    };
    let mut parts = hms.split(':');
    let h: i64 = digits(parts.next()?, 2, 2)?;
    let mi: i64 = digits(parts.next()?, 2, 2)?;
    let sec: i64 = digits(parts.next()?, 2, 2)?;
    if parts.next().is_some() || h > 24 || mi > 59 || sec > 60 {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    // Milliseconds: the first three fraction digits (microseconds are truncated, as a
    // JavaScript Date holds milliseconds).
    let mut ms = 0;
    for (i, b) in frac.bytes().take(3).enumerate() {
        ms += i64::from(b - b'0') * [100, 10, 1][i];
    }
    let offset_secs = match offset {
        None => 0,
        Some(o) => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let mut parts = o[1..].split(':');
            let oh: i64 = digits(parts.next()?, 2, 2)?;
            let om: i64 = parts.next().map_or(Some(0), |p| digits(p, 2, 2))?;
            let os: i64 = parts.next().map_or(Some(0), |p| digits(p, 2, 2))?;
            if parts.next().is_some() {
                return None;
            }
            sign * (oh * 3600 + om * 60 + os)
        }
    };
    let local_ms = ((h * 60 + mi) * 60 + sec) * 1000 + ms;
    let total = days_from_civil(year, month, day) * 86_400_000 + local_ms - offset_secs * 1000;
    Some(Instant {
        days: total.div_euclid(86_400_000),
        millis: total.rem_euclid(86_400_000),
    })
}

/// All ASCII digits, between `min` and `max` of them.
fn digits(s: &str, min: usize, max: usize) -> Option<i64> {
    if s.len() < min || s.len() > max || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(kind: AttributeType, oid: u32, text: &str) -> Result<String, ValueProblem> {
        let mut out = String::new();
        write_value(&mut out, &kind, oid, text.as_bytes()).map(|()| out)
    }

    fn ok(kind: AttributeType, oid: u32, text: &str) -> String {
        value(kind, oid, text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[test]
    fn datetimes_are_iso_utc_with_milliseconds() {
        let cases = [
            ("2026-11-26 16:32:00.454", "\"2026-11-26T16:32:00.454Z\""),
            ("2026-11-26 16:32:21.19", "\"2026-11-26T16:32:21.190Z\""),
            ("2026-11-26 16:33:00", "\"2026-11-26T16:33:00.000Z\""),
            ("2024-01-01 10:00:00", "\"2024-01-01T10:00:00.000Z\""),
            ("2024-01-01 10:00:00.123999", "\"2024-01-01T10:00:00.123Z\""),
            ("2024-02-29 23:59:59.9", "\"2024-02-29T23:59:59.900Z\""),
            // timestamptz text, converted to UTC
            ("2026-11-26 16:32:00.454+00", "\"2026-11-26T16:32:00.454Z\""),
            ("2026-11-26 18:32:00+02", "\"2026-11-26T16:32:00.000Z\""),
            ("2026-01-01 01:00:00+05:30", "\"2025-12-31T19:30:00.000Z\""),
            ("2026-12-31 22:00:00-03", "\"2027-01-01T01:00:00.000Z\""),
            (
                "1890-01-01 00:00:00+00:53:28",
                "\"1889-12-31T23:06:32.000Z\"",
            ),
            ("1969-12-31 23:59:59.999", "\"1969-12-31T23:59:59.999Z\""),
            ("0001-01-01 00:00:00", "\"0001-01-01T00:00:00.000Z\""),
            ("12345-06-07 08:09:10", "\"+012345-06-07T08:09:10.000Z\""),
            // not representable: the text itself
            ("infinity", "\"infinity\""),
            ("-infinity", "\"-infinity\""),
            ("0044-03-15 12:00:00 BC", "\"0044-03-15 12:00:00 BC\""),
            ("garbage", "\"garbage\""),
        ];
        for (text, want) in cases {
            assert_eq!(ok(AttributeType::DateTime, 1114, text), want, "{text}");
        }
    }

    #[test]
    fn timestamp_attributes_are_epoch_millis_strings() {
        assert_eq!(
            ok(AttributeType::Timestamp, 1114, "2024-01-01 10:00:00"),
            "\"1704103200000\""
        );
        assert_eq!(
            ok(AttributeType::Timestamp, 1114, "1969-12-31 23:59:59.999"),
            "\"-1\""
        );
        assert_eq!(
            ok(AttributeType::Timestamp, 1114, "infinity"),
            "\"infinity\""
        );
    }

    #[test]
    fn numbers_print_as_javascript_prints_the_parsed_double() {
        let cases = [
            ("12.35", "12.35"),
            ("12.50", "12.5"),
            ("12.00", "12"),
            ("0.50", "0.5"),
            ("-0.50", "-0.5"),
            ("0", "0"),
            ("-0", "0"),
            ("0.00", "0"),
            ("100", "100"),
            ("1e21", "1e+21"),
            ("1e20", "100000000000000000000"),
            ("123456789012345678901234", "1.2345678901234569e+23"),
            ("12345678901234567890.12", "12345678901234567000"),
            ("0.000001", "0.000001"),
            ("0.0000001", "1e-7"),
            ("0.00000123", "0.00000123"),
            ("1.5e-10", "1.5e-10"),
            ("0.1", "0.1"),
            ("0.30000000000000004", "0.30000000000000004"),
            ("1.7976931348623157e+308", "1.7976931348623157e+308"),
            ("5e-324", "5e-324"),
            ("NaN", "null"),
            ("Infinity", "null"),
            ("-Infinity", "null"),
        ];
        for (text, want) in cases {
            assert_eq!(
                ok(AttributeType::Decimal, 1700, text),
                want,
                "decimal {text}"
            );
            assert_eq!(ok(AttributeType::Float, 701, text), want, "float {text}");
        }
        assert!(value(AttributeType::Float, 701, "twelve").is_err());
    }

    #[test]
    fn integers_are_numbers_and_bigintegers_strings() {
        assert_eq!(ok(AttributeType::Integer, 23, "43"), "43");
        assert_eq!(ok(AttributeType::Integer, 23, "-2147483648"), "-2147483648");
        // beyond 2^53 a JavaScript number is rounded
        assert_eq!(
            ok(AttributeType::Integer, 20, "9007199254740993"),
            "9007199254740992"
        );
        assert!(value(AttributeType::Integer, 23, "4x").is_err());
        assert_eq!(
            ok(AttributeType::BigInteger, 20, "9007199254740993"),
            "\"9007199254740993\""
        );
        assert_eq!(ok(AttributeType::BigInteger, 20, "-1"), "\"-1\"");
    }

    #[test]
    fn booleans_json_dates_times_and_strings() {
        assert_eq!(ok(AttributeType::Boolean, 16, "t"), "true");
        assert_eq!(ok(AttributeType::Boolean, 16, "f"), "false");
        assert!(value(AttributeType::Boolean, 16, "yes").is_err());
        assert_eq!(
            ok(AttributeType::Json, 3802, r#"{"n": 1, "tags": ["a", "b"]}"#),
            r#"{"n": 1, "tags": ["a", "b"]}"#
        );
        assert_eq!(ok(AttributeType::Json, 3802, "[]"), "[]");
        assert_eq!(ok(AttributeType::Json, 3802, "\"x\""), "\"x\"");
        assert!(value(AttributeType::Json, 114, "{nope").is_err());
        assert!(value(AttributeType::Json, 114, "1 2").is_err());
        assert_eq!(
            ok(AttributeType::Date, 1082, "2024-01-01"),
            "\"2024-01-01\""
        );
        assert_eq!(ok(AttributeType::Time, 1083, "12:34:56"), "\"12:34:56\"");
        assert_eq!(
            ok(AttributeType::Time, 1083, "12:34:56.789"),
            "\"12:34:56.789\""
        );
        assert_eq!(
            ok(
                AttributeType::String,
                25,
                "# Title\n\n**bold** \"q\" \\ \t\u{1}é"
            ),
            r##""# Title\n\n**bold** \"q\" \\ \t\u0001é""##
        );
    }

    #[test]
    fn non_utf8_text_is_replaced_not_refused() {
        let mut out = String::new();
        write_value(&mut out, &AttributeType::String, 25, b"caf\xe9").unwrap_or_default();
        assert_eq!(out, "\"caf\u{fffd}\"");
    }

    #[test]
    fn unknown_attribute_types_follow_the_column_type() {
        let other = || AttributeType::Other("plugin::color".into());
        assert_eq!(ok(other(), 16, "t"), "true");
        assert_eq!(ok(other(), 23, "7"), "7");
        assert_eq!(ok(other(), 20, "7"), "\"7\"");
        assert_eq!(ok(other(), 701, "1.50"), "1.5");
        assert_eq!(ok(other(), 3802, "{\"a\": 1}"), "{\"a\": 1}");
        assert_eq!(
            ok(other(), 1184, "2024-01-01 10:00:00+00"),
            "\"2024-01-01T10:00:00.000Z\""
        );
        assert_eq!(ok(other(), 1043, "#ff0000"), "\"#ff0000\"");
    }

    #[test]
    fn day_numbers_round_trip() {
        for days in [-719_468, -1, 0, 1, 10_957, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }
}
