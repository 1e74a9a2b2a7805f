//! PostgreSQL text output, read back: integers, booleans and timestamps as `psql` prints
//! them, which is also what pgoutput sends and what the simple query protocol returns.
//!
//! Every parser returns `None` on anything it does not understand; callers decide what an
//! unreadable value means and log it. Nothing here panics.

/// An `integer`/`bigint` column (`23`, `-4`).
pub(crate) fn parse_i64(text: &str) -> Option<i64> {
    text.trim().parse().ok()
}

/// A `boolean` column. pgoutput and the simple query protocol send `t`/`f`; a `::text` cast
/// gives `true`/`false`; the other spellings are what PostgreSQL's own input accepts.
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Some(true),
        "f" | "false" | "n" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// A point in time, read from a `timestamp` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Instant {
    /// `-infinity`: before every other time.
    MinusInfinity,
    /// Microseconds since the Unix epoch, UTC.
    At(i64),
    /// `infinity`: after every other time.
    Infinity,
}

const MICROS_PER_SEC: i64 = 1_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// A `timestamp` (or `timestamptz`) in ISO DateStyle: `2026-11-26 16:32:00.454`, optional
/// fraction of up to 6 digits, an optional `T` instead of the space, an optional zone offset
/// (`+00`, `-05:30`, `+05:30:15`, `Z`) and an optional ` BC`. Without an offset the
/// value is taken as UTC: Strapi writes `timestamp without time zone` columns from a Node
/// process that normally runs in UTC.
pub(crate) fn parse_timestamp(text: &str) -> Option<Instant> {
    let text = text.trim();
    match text {
        "infinity" => return Some(Instant::Infinity),
        "-infinity" => return Some(Instant::MinusInfinity),
        _ => {}
    }
    let (text, bc) = match text.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (text, false),
    };
    let (date, rest) = text.split_at_checked(text.find([' ', 'T'])?)?;
    let rest = rest.get(1..)?;

    let mut date_parts = date.splitn(3, '-');
    let mut year: i64 = digits(date_parts.next()?)?;
    let month: i64 = digits(date_parts.next()?)?;
    let day: i64 = digits(date_parts.next()?)?;
    if bc {
        // 1 BC is year 0 in the proleptic Gregorian calendar.
        year = 1 - year;
    }
    if !(1..=12).contains(&month) || !(1..=days_in_month(year, month)).contains(&day) {
        return None;
    }

    // Split the time of day from the zone offset.
    let (time, offset_secs) = match rest.find(['+', '-', 'Z']) {
        Some(i) => {
            let (time, zone) = rest.split_at_checked(i)?;
            (time, parse_offset(zone)?)
        }
        None => (rest, 0),
    };
    let mut time_parts = time.splitn(3, ':');
    let hour: i64 = digits(time_parts.next()?)?;
    let minute: i64 = digits(time_parts.next()?)?;
    let sec_text = time_parts.next()?;
    let (whole, fraction) = match sec_text.split_once('.') {
        Some((_, "")) => return None,
        Some((w, f)) => (w, f),
        None => (sec_text, ""),
    };
    let second: i64 = digits(whole)?;
    if hour > 24 || minute > 59 || second > 60 || fraction.len() > 6 {
        return None;
    }
    let micros: i64 = if fraction.is_empty() {
        0
    } else {
        let f: i64 = digits(fraction)?;
        f * 10_i64.pow(6 - u32::try_from(fraction.len()).ok()?)
    };

    let days = days_from_civil(year, month, day);
    let secs = days
        .checked_mul(SECS_PER_DAY)?
        .checked_add(hour * 3600 + minute * 60 + second)?
        .checked_sub(offset_secs)?;
    Some(Instant::At(
        secs.checked_mul(MICROS_PER_SEC)?.checked_add(micros)?,
    ))
}

/// `+HH`, `-HH:MM`, `+HH:MM:SS` or `Z`, in seconds east of UTC.
fn parse_offset(zone: &str) -> Option<i64> {
    if zone == "Z" {
        return Some(0);
    }
    let (sign, body) = match zone.split_at_checked(1)? {
        ("+", body) => (1, body),
        ("-", body) => (-1, body),
        _ => return None,
    };
    let mut secs = 0;
    for (i, part) in body.split(':').enumerate() {
        let unit = match i {
            0 => 3600,
            1 => 60,
            2 => 1,
            _ => return None,
        };
        secs += digits(part)? * unit;
    }
    Some(sign * secs)
}

/// A non-empty run of ASCII digits (no sign, no spaces).
fn digits(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Option<i64> {
        match parse_timestamp(text) {
            Some(Instant::At(us)) => Some(us),
            _ => None,
        }
    }

    #[test]
    fn timestamps_read_as_utc_microseconds() {
        // Reference values: `date -u -d '2026-12-03 16:33:03.259' +%s%N`.
        assert_eq!(at("2026-12-03 16:33:03.259"), Some(1_796_315_583_259_000));
        assert_eq!(at("1970-01-01 00:00:00"), Some(0));
        assert_eq!(at("2000-01-01 00:00:00"), Some(946_684_800_000_000));
        assert_eq!(
            at("2024-02-29 23:59:59.999999"),
            Some(1_709_251_199_999_999)
        );
        assert_eq!(at("1969-12-31 23:59:59.5"), Some(-500_000));
        assert_eq!(at("2026-11-26T16:31:43"), Some(1_795_710_703_000_000));
    }

    #[test]
    fn zone_offsets_are_applied() {
        assert_eq!(at("2026-11-26 16:31:43+00"), Some(1_795_710_703_000_000));
        assert_eq!(at("2026-11-26 17:31:43+01"), Some(1_795_710_703_000_000));
        assert_eq!(at("2026-11-26 11:01:43-05:30"), Some(1_795_710_703_000_000));
        assert_eq!(at("2026-11-26 16:31:43.5Z"), Some(1_795_710_703_500_000));
    }

    #[test]
    fn infinities_and_bc_dates() {
        assert_eq!(parse_timestamp("infinity"), Some(Instant::Infinity));
        assert_eq!(parse_timestamp("-infinity"), Some(Instant::MinusInfinity));
        // 0001-01-01 BC is year 0, 366 days (leap) before 0001-01-01 AD.
        let ad = at("0001-01-01 00:00:00").unwrap_or_default();
        assert_eq!(
            at("0001-01-01 00:00:00 BC"),
            Some(ad - 366 * SECS_PER_DAY * MICROS_PER_SEC)
        );
    }

    #[test]
    fn garbage_is_refused() {
        for text in [
            "",
            "yesterday",
            "2026-11-26",
            "2026-13-01 00:00:00",
            "2026-02-29 00:00:00",
            "2026-11-26 25:00:00",
            "2026-11-26 10:00:00.1234567",
            "2026-11-26 10:00:00+xx",
            "2026-11-26 1a:00:00",
            "-2026-11-26 10:00:00",
            "2026-11-26 10:00:00.",
        ] {
            assert_eq!(at(text), None, "{text:?}");
        }
    }

    #[test]
    fn booleans_and_integers() {
        assert_eq!(parse_bool("t"), Some(true));
        assert_eq!(parse_bool("f"), Some(false));
        assert_eq!(parse_bool("true"), Some(true));
        assert_eq!(parse_bool("FALSE"), Some(false));
        assert_eq!(parse_bool("maybe"), None);
        assert_eq!(parse_i64("42"), Some(42));
        assert_eq!(parse_i64("-7"), Some(-7));
        assert_eq!(parse_i64("4.2"), None);
        assert_eq!(parse_i64("99999999999999999999"), None);
    }
}
