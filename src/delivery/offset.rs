//! Offsets: where an event sits in the stream, the same on every run and every instance.

use std::fmt;
use std::str::FromStr;

use crate::lsn::Lsn;

/// An event's place in the stream: the commit LSN of its transaction (or, for a message sent
/// outside a transaction, the LSN of the message) and its position among the events that
/// transaction produced. PostgreSQL hands transactions on in commit order, so offsets grow in
/// stream order; they come from the WAL, so a restarted bridge, or another one reading the
/// same database, gives the same event the same offset.
///
/// Clients see it as fixed-width hexadecimal, `0000000016B374D8-00000003`, which sorts as
/// text in the same order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset {
    /// Commit LSN of the transaction (or LSN of a non-transactional message).
    pub lsn: Lsn,
    /// Position among the transaction's events, from 0.
    pub seq: u32,
}

impl Offset {
    /// The offset of the `seq`-th event of the transaction committed at `lsn`.
    pub fn new(lsn: Lsn, seq: u32) -> Offset {
        Offset { lsn, seq }
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}-{:08X}", self.lsn.0, self.seq)
    }
}

/// The text is not an offset this bridge hands out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not an offset (expected 16 and 8 hexadecimal digits, like 0000000016B374D8-00000003): {0:?}"
)]
pub struct ParseOffsetError(pub String);

impl FromStr for Offset {
    type Err = ParseOffsetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseOffsetError(s.chars().take(64).collect());
        let (lsn, seq) = s.split_once('-').ok_or_else(err)?;
        if lsn.len() != 16 || seq.len() != 8 {
            return Err(err());
        }
        let lsn = u64::from_str_radix(lsn, 16).map_err(|_| err())?;
        let seq = u32::from_str_radix(seq, 16).map_err(|_| err())?;
        Ok(Offset::new(Lsn(lsn), seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_fixed_width_and_parses_back() {
        let o = Offset::new(Lsn(0x16_B374_D848), 3);
        assert_eq!(o.to_string(), "00000016B374D848-00000003");
        assert_eq!("00000016B374D848-00000003".parse::<Offset>(), Ok(o));
    }

    #[test]
    fn text_order_is_stream_order() {
        let offsets = [
            Offset::new(Lsn(0xF), 0xFFFF),
            Offset::new(Lsn(0x10), 0),
            Offset::new(Lsn(0x10), 1),
            Offset::new(Lsn(0x1_0000_0000), 0),
        ];
        for pair in offsets.windows(2) {
            assert!(pair[0] < pair[1]);
            assert!(pair[0].to_string() < pair[1].to_string());
        }
    }

    #[test]
    fn rejects_other_text() {
        for bad in [
            "",
            "abc",
            "16/B374D848",
            "00000016B374D848-3",
            "00000016B374D84G-00000003",
        ] {
            assert!(bad.parse::<Offset>().is_err(), "{bad:?}");
        }
    }
}
