//! Bytes to [`LogicalMessage`]: a bounds-checked reader over one pgoutput message.
//!
//! Every read checks the remaining length first, so malformed input is a [`DecodeError`] naming
//! the message tag and the byte offset, never a panic.

use bytes::Bytes;

use super::DecodeError;
use super::message::{
    Column, LogicalEmit, LogicalMessage, OldRow, PgTimestamp, Relation, RelationId,
    ReplicaIdentity, RowOp, Tuple, Value,
};
use crate::lsn::Lsn;

/// Decodes one pgoutput message (the payload of one XLogData) of protocol version 1, the
/// version the bridge requests (no in-progress streaming, so no `xid` field inside rows).
pub fn decode(payload: &Bytes) -> Result<LogicalMessage, DecodeError> {
    let mut r = Reader::new(payload);
    let tag = r.u8()?;
    r.tag = tag;
    let msg = match tag {
        b'B' => LogicalMessage::Begin {
            final_lsn: Lsn(r.u64()?),
            commit_time: PgTimestamp(r.i64()?),
            xid: r.u32()?,
        },
        b'C' => LogicalMessage::Commit {
            flags: r.u8()?,
            commit_lsn: Lsn(r.u64()?),
            end_lsn: Lsn(r.u64()?),
            commit_time: PgTimestamp(r.i64()?),
        },
        b'O' => LogicalMessage::Origin {
            commit_lsn: Lsn(r.u64()?),
            name: r.string()?,
        },
        b'R' => LogicalMessage::Relation(relation(&mut r)?),
        b'Y' => LogicalMessage::Type {
            id: r.u32()?,
            namespace: r.string()?,
            name: r.string()?,
        },
        b'I' => {
            let relation = RelationId(r.u32()?);
            r.expect(b'N')?;
            LogicalMessage::Row {
                relation,
                op: RowOp::Insert {
                    new: tuple(&mut r)?,
                },
            }
        }
        b'U' => {
            let relation = RelationId(r.u32()?);
            let at = r.pos;
            let old = match r.u8()? {
                b'K' => {
                    let old = Some(OldRow::Key(tuple(&mut r)?));
                    r.expect(b'N')?;
                    old
                }
                b'O' => {
                    let old = Some(OldRow::Full(tuple(&mut r)?));
                    r.expect(b'N')?;
                    old
                }
                b'N' => None,
                other => {
                    return Err(r.invalid_at(at, format!("update tuple kind {:?}", other as char)));
                }
            };
            LogicalMessage::Row {
                relation,
                op: RowOp::Update {
                    old,
                    new: tuple(&mut r)?,
                },
            }
        }
        b'D' => {
            let relation = RelationId(r.u32()?);
            let at = r.pos;
            let old = match r.u8()? {
                b'K' => OldRow::Key(tuple(&mut r)?),
                b'O' => OldRow::Full(tuple(&mut r)?),
                other => {
                    return Err(r.invalid_at(at, format!("delete tuple kind {:?}", other as char)));
                }
            };
            LogicalMessage::Row {
                relation,
                op: RowOp::Delete { old },
            }
        }
        b'T' => {
            let count = r.u32()?;
            let options = r.u8()?;
            // Each OID takes 4 bytes: refuse counts the payload cannot hold before allocating.
            r.need((count as usize).saturating_mul(4))?;
            let mut relations = Vec::with_capacity(count as usize);
            for _ in 0..count {
                relations.push(RelationId(r.u32()?));
            }
            LogicalMessage::Truncate {
                cascade: options & 1 != 0,
                restart_identity: options & 2 != 0,
                relations,
            }
        }
        b'M' => {
            let flags = r.u8()?;
            let lsn = Lsn(r.u64()?);
            let prefix = r.string()?;
            let len = r.u32()? as usize;
            let content = r.bytes(len)?;
            LogicalMessage::Message(LogicalEmit {
                transactional: flags & 1 != 0,
                lsn,
                prefix,
                content,
            })
        }
        other => {
            return Err(DecodeError::UnknownTag {
                tag: other,
                len: payload.len(),
            });
        }
    };
    if r.remaining() != 0 {
        return Err(r.invalid(format!("{} trailing bytes", r.remaining())));
    }
    Ok(msg)
}

fn relation(r: &mut Reader<'_>) -> Result<Relation, DecodeError> {
    let id = RelationId(r.u32()?);
    let namespace = r.string()?;
    let name = r.string()?;
    let at = r.pos;
    let replica_identity = match r.u8()? {
        b'd' => ReplicaIdentity::Default,
        b'n' => ReplicaIdentity::Nothing,
        b'f' => ReplicaIdentity::Full,
        b'i' => ReplicaIdentity::Index,
        other => return Err(r.invalid_at(at, format!("replica identity {:?}", other as char))),
    };
    let at = r.pos;
    let ncols = r.i16()?;
    if ncols < 0 {
        return Err(r.invalid_at(at, format!("column count {ncols}")));
    }
    // A column takes at least 10 bytes (flags, empty name, type, typmod).
    if (ncols as usize).saturating_mul(10) > r.remaining() {
        let what = format!("{ncols} columns in {} bytes", r.remaining());
        return Err(r.invalid_at(at, what));
    }
    let mut columns = Vec::with_capacity(ncols as usize);
    for _ in 0..ncols {
        let flags = r.u8()?;
        columns.push(Column {
            is_key: flags & 1 != 0,
            name: r.string()?,
            type_oid: r.u32()?,
            type_modifier: r.i32()?,
        });
    }
    Ok(Relation {
        id,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

fn tuple(r: &mut Reader<'_>) -> Result<Tuple, DecodeError> {
    let at = r.pos;
    let ncols = r.i16()?;
    if ncols < 0 {
        return Err(r.invalid_at(at, format!("tuple column count {ncols}")));
    }
    // Each value takes at least its one kind byte.
    if ncols as usize > r.remaining() {
        let what = format!("{ncols} values in {} bytes", r.remaining());
        return Err(r.invalid_at(at, what));
    }
    let mut values = Vec::with_capacity(ncols as usize);
    for _ in 0..ncols {
        let at = r.pos;
        let value = match r.u8()? {
            b'n' => Value::Null,
            b'u' => Value::UnchangedToast,
            b't' => {
                let len = r.u32()? as usize;
                Value::Text(r.bytes(len)?)
            }
            b'b' => {
                let len = r.u32()? as usize;
                Value::Binary(r.bytes(len)?)
            }
            other => return Err(r.invalid_at(at, format!("value kind {:?}", other as char))),
        };
        values.push(value);
    }
    Ok(values)
}

/// A cursor over one message that never reads past its end.
struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
    tag: u8,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a Bytes) -> Self {
        Reader {
            buf,
            pos: 0,
            tag: 0,
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Fails unless `n` more bytes are left.
    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                tag: self.tag,
                offset: self.pos,
                needed: n,
                len: self.buf.len(),
            });
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        self.need(n)?;
        let buf: &'a [u8] = self.buf;
        let out = &buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn expect(&mut self, want: u8) -> Result<(), DecodeError> {
        let at = self.pos;
        let got = self.u8()?;
        if got == want {
            Ok(())
        } else {
            let what = format!("expected {:?}, found {:?}", want as char, got as char);
            Err(self.invalid_at(at, what))
        }
    }

    /// A NUL-terminated string; pgoutput sends names in the database encoding (UTF-8 for
    /// Strapi), anything else is replaced rather than refused.
    fn string(&mut self) -> Result<String, DecodeError> {
        let rest = &self.buf[self.pos..];
        let Some(end) = rest.iter().position(|&b| b == 0) else {
            return Err(self.invalid("string without its NUL terminator".to_owned()));
        };
        let s = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.pos += end + 1;
        Ok(s)
    }

    /// `n` bytes shared with the payload (no copy).
    fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let start = self.pos;
        self.take(n)?;
        Ok(self.buf.slice(start..start + n))
    }

    /// A bad field at the current position.
    fn invalid(&self, what: String) -> DecodeError {
        self.invalid_at(self.pos, what)
    }

    /// A bad field that starts at `offset`.
    fn invalid_at(&self, offset: usize, what: String) -> DecodeError {
        DecodeError::Invalid {
            tag: self.tag,
            offset,
            what,
        }
    }
}
