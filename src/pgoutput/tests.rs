//! Decoder tests over hand-built messages.
