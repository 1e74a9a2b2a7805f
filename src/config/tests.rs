//! Config parsing and precedence.
