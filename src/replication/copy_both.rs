//! Wire framing: backend messages split off the read buffer, and the CopyBoth sub-protocol
//! (XLogData `w`, primary keepalive `k`, standby status update `r`).
//!
//! Splitting never copies: a CopyData frame becomes a `Bytes` slice of the read buffer, and an
//! XLogData payload a slice of that. Nothing here panics on input; a short or malformed frame is
//! an error naming the tag and length.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::message::backend;

use super::XLogData;
use crate::lsn::Lsn;

/// The largest backend message accepted. PostgreSQL caps a single field at 1 GB; an XLogData
/// adds a header, so anything much larger is a corrupted length.
pub(super) const MAX_FRAME_LEN: usize = (1 << 30) + 4096;

/// One backend message, as the replication client needs it.
pub(super) enum Frame {
    /// `d`: the body of a CopyData message.
    CopyData(Bytes),
    /// `W`: CopyBothResponse, START_REPLICATION succeeded.
    CopyBothResponse,
    /// Any other message, parsed by `postgres-protocol`.
    Other(backend::Message),
}

/// Splits the next complete message off `buf`. `Ok(None)` means more bytes are needed (and
/// reserves room for them).
pub(super) fn next_frame(buf: &mut BytesMut) -> Result<Option<Frame>, String> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let tag = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if !(4..=MAX_FRAME_LEN).contains(&len) {
        return Err(format!(
            "message {:?} announces an invalid length {len}",
            tag as char
        ));
    }
    let total = len + 1;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    match tag {
        b'd' => {
            let mut frame = buf.split_to(total).freeze();
            frame.advance(5);
            Ok(Some(Frame::CopyData(frame)))
        }
        b'W' => {
            buf.advance(total);
            Ok(Some(Frame::CopyBothResponse))
        }
        _ => match backend::Message::parse(buf) {
            Ok(Some(message)) => Ok(Some(Frame::Other(message))),
            // A complete frame is in the buffer, so the parser cannot ask for more.
            Ok(None) => Err(format!("message {:?} could not be parsed", tag as char)),
            Err(e) => Err(format!("message {:?} ({total} bytes): {e}", tag as char)),
        },
    }
}

/// A backend message's name, for error messages.
pub(super) fn message_name(message: &backend::Message) -> &'static str {
    use backend::Message as M;
    match message {
        M::BackendKeyData(_) => "BackendKeyData",
        M::CommandComplete(_) => "CommandComplete",
        M::CopyData(_) => "CopyData",
        M::CopyDone => "CopyDone",
        M::CopyInResponse(_) => "CopyInResponse",
        M::CopyOutResponse(_) => "CopyOutResponse",
        M::DataRow(_) => "DataRow",
        M::EmptyQueryResponse => "EmptyQueryResponse",
        M::ErrorResponse(_) => "ErrorResponse",
        M::NoticeResponse(_) => "NoticeResponse",
        M::NotificationResponse(_) => "NotificationResponse",
        M::ParameterStatus(_) => "ParameterStatus",
        M::ReadyForQuery(_) => "ReadyForQuery",
        M::RowDescription(_) => "RowDescription",
        _ => "an unexpected message",
    }
}

/// A primary keepalive (`k`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Keepalive {
    /// The server's current end of WAL (for logical decoding: how far it has read and sent).
    pub wal_end: Lsn,
    /// Server clock, µs since 2000-01-01.
    pub send_time: i64,
    /// The server wants a status update now, or it will time the connection out.
    pub reply_requested: bool,
}

/// What a CopyData from the walsender carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ReplicationMessage {
    /// `w`: one pgoutput message.
    XLogData(XLogData),
    /// `k`: a keepalive.
    Keepalive(Keepalive),
}

/// `w` + WAL start + WAL end + send time.
const XLOG_DATA_HEADER: usize = 1 + 8 + 8 + 8;
/// `k` + WAL end + send time + reply flag.
const KEEPALIVE_LEN: usize = 1 + 8 + 8 + 1;

fn be_u64(data: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&data[at..at + 8]);
    u64::from_be_bytes(bytes)
}

/// Parses the body of a CopyData received during streaming.
pub(super) fn parse_copy_data(data: Bytes) -> Result<ReplicationMessage, String> {
    match data.first() {
        Some(b'w') => {
            if data.len() < XLOG_DATA_HEADER {
                return Err(format!(
                    "XLogData of {} bytes is shorter than its {XLOG_DATA_HEADER}-byte header",
                    data.len()
                ));
            }
            Ok(ReplicationMessage::XLogData(XLogData {
                wal_start: Lsn(be_u64(&data, 1)),
                wal_end: Lsn(be_u64(&data, 9)),
                payload: data.slice(XLOG_DATA_HEADER..),
            }))
        }
        Some(b'k') => {
            if data.len() < KEEPALIVE_LEN {
                return Err(format!(
                    "keepalive of {} bytes, expected {KEEPALIVE_LEN}",
                    data.len()
                ));
            }
            Ok(ReplicationMessage::Keepalive(Keepalive {
                wal_end: Lsn(be_u64(&data, 1)),
                send_time: be_u64(&data, 9) as i64,
                reply_requested: data[17] != 0,
            }))
        }
        Some(&tag) => Err(format!(
            "unknown replication message {:?} ({} bytes)",
            tag as char,
            data.len()
        )),
        None => Err("empty CopyData".to_owned()),
    }
}

/// The positions a standby status update reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StatusUpdate {
    /// Received and written.
    pub written: Lsn,
    /// Handed on for good: becomes the slot's `confirmed_flush_lsn`.
    pub flushed: Lsn,
    /// Applied; the same as flushed for this client.
    pub applied: Lsn,
    /// Client clock, µs since 2000-01-01.
    pub now: i64,
    /// Ask the server to answer with a keepalive at once.
    pub reply_requested: bool,
}

/// Appends a CopyData holding a standby status update (`r`).
pub(super) fn put_status_update(buf: &mut BytesMut, s: &StatusUpdate) {
    const BODY: usize = 1 + 8 + 8 + 8 + 8 + 1;
    buf.reserve(5 + BODY);
    buf.put_u8(b'd');
    buf.put_u32((4 + BODY) as u32);
    buf.put_u8(b'r');
    buf.put_u64(s.written.0);
    buf.put_u64(s.flushed.0);
    buf.put_u64(s.applied.0);
    buf.put_i64(s.now);
    buf.put_u8(u8::from(s.reply_requested));
}

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800 * 1_000_000;

/// The current time as PostgreSQL counts it: µs since 2000-01-01 UTC.
pub(super) fn pg_now() -> i64 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    unix.saturating_sub(PG_EPOCH_OFFSET_MICROS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_data(body: &[u8]) -> Vec<u8> {
        let mut v = vec![b'd'];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn status_update_has_the_documented_34_byte_layout() {
        let mut buf = BytesMut::new();
        put_status_update(
            &mut buf,
            &StatusUpdate {
                written: Lsn(0x0102_0304_0506_0708),
                flushed: Lsn(0x16_B374_D848),
                applied: Lsn(0x16_B374_D848),
                now: 0x0A0B_0C0D,
                reply_requested: true,
            },
        );
        let mut want = vec![b'd', 0, 0, 0, 38, b'r'];
        want.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        want.extend_from_slice(&[0, 0, 0, 0x16, 0xB3, 0x74, 0xD8, 0x48]);
        want.extend_from_slice(&[0, 0, 0, 0x16, 0xB3, 0x74, 0xD8, 0x48]);
        want.extend_from_slice(&[0, 0, 0, 0, 0x0A, 0x0B, 0x0C, 0x0D]);
        want.push(1);
        assert_eq!(&buf[..], &want[..]);
        assert_eq!(buf.len() - 5, 34);
    }

    #[test]
    fn keepalive_is_parsed() {
        let mut body = vec![b'k'];
        body.extend_from_slice(&0x16_B374_D848u64.to_be_bytes());
        body.extend_from_slice(&77i64.to_be_bytes());
        body.push(1);
        let msg = parse_copy_data(Bytes::from(body)).unwrap();
        assert_eq!(
            msg,
            ReplicationMessage::Keepalive(Keepalive {
                wal_end: Lsn(0x16_B374_D848),
                send_time: 77,
                reply_requested: true,
            })
        );
    }

    #[test]
    fn xlog_data_header_is_parsed_and_payload_is_a_slice() {
        let mut body = vec![b'w'];
        body.extend_from_slice(&10u64.to_be_bytes());
        body.extend_from_slice(&20u64.to_be_bytes());
        body.extend_from_slice(&30i64.to_be_bytes());
        body.extend_from_slice(b"B...");
        let data = Bytes::from(body);
        let base = data.as_ptr();
        let ReplicationMessage::XLogData(x) = parse_copy_data(data).unwrap() else {
            panic!("not XLogData");
        };
        assert_eq!((x.wal_start, x.wal_end), (Lsn(10), Lsn(20)));
        assert_eq!(&x.payload[..], b"B...");
        assert_eq!(
            x.payload.as_ptr(),
            base.wrapping_add(25),
            "payload was copied"
        );
    }

    #[test]
    fn short_and_unknown_messages_are_errors() {
        assert!(parse_copy_data(Bytes::from_static(b"w\0\0")).is_err());
        assert!(parse_copy_data(Bytes::from_static(b"k\0\0\0\0\0\0\0\0")).is_err());
        assert!(parse_copy_data(Bytes::from_static(b"h")).is_err());
        assert!(parse_copy_data(Bytes::new()).is_err());
    }

    #[test]
    fn frames_split_without_copying_and_wait_for_partial_ones() {
        let mut wire = copy_data(b"k-first");
        wire.extend_from_slice(&copy_data(b"w-second"));
        let partial = copy_data(b"third");
        wire.extend_from_slice(&partial[..6]);
        let mut buf = BytesMut::from(&wire[..]);
        let base = buf.as_ptr();
        let Some(Frame::CopyData(a)) = next_frame(&mut buf).unwrap() else {
            panic!("first frame");
        };
        assert_eq!(&a[..], b"k-first");
        assert_eq!(a.as_ptr(), base.wrapping_add(5));
        let Some(Frame::CopyData(b)) = next_frame(&mut buf).unwrap() else {
            panic!("second frame");
        };
        assert_eq!(&b[..], b"w-second");
        assert!(next_frame(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&partial[6..]);
        let Some(Frame::CopyData(c)) = next_frame(&mut buf).unwrap() else {
            panic!("third frame");
        };
        assert_eq!(&c[..], b"third");
        assert!(buf.is_empty());
    }

    #[test]
    fn copy_both_response_and_other_messages_are_recognised() {
        // CopyBothResponse: format 0, no columns.
        let mut buf = BytesMut::from(&[b'W', 0, 0, 0, 7, 0, 0, 0][..]);
        // ReadyForQuery, idle.
        buf.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']);
        assert!(matches!(
            next_frame(&mut buf).unwrap(),
            Some(Frame::CopyBothResponse)
        ));
        assert!(matches!(
            next_frame(&mut buf).unwrap(),
            Some(Frame::Other(backend::Message::ReadyForQuery(_)))
        ));
    }

    #[test]
    fn invalid_lengths_and_tags_are_errors() {
        let mut short = BytesMut::from(&[b'd', 0, 0, 0, 3][..]);
        assert!(next_frame(&mut short).is_err());
        let mut huge = BytesMut::from(&[b'd', 0x7F, 0xFF, 0xFF, 0xFF][..]);
        assert!(next_frame(&mut huge).is_err());
        let mut unknown = BytesMut::from(&[b'@', 0, 0, 0, 4][..]);
        assert!(next_frame(&mut unknown).is_err());
    }
}
