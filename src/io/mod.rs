//! The Socket.IO server: handshake, role rooms, emit.
