//! strapi-io-bridge: live Socket.IO events for a Strapi site, from PostgreSQL logical
//! replication, with no code inside Strapi.
//!
//! ```text
//!  PostgreSQL ──walsender──▶ replication ──XLogData──▶ pgoutput ──Change──▶ strapi
//!      ▲                                                                     │ StrapiEvent,
//!      │ confirmed LSN (only after emit)                                     ▼ AccessChange
//!      └──────────────────────────── io ◀──Delivery (rooms, payload)──── access
//! ```
//!
//! - [`replication`]: the walsender client (slot, stream, keepalives, confirmations).
//! - [`pgoutput`]: pure decoding of pgoutput messages.
//! - [`strapi`]: the catalog of content types, actions and REST-shaped payloads.
//! - [`access`]: users, roles, permissions and tokens; who receives what.
//! - [`delivery`]: offsets, the replay buffer and sockets behind the live stream.
//! - [`io`]: the Socket.IO server, handshake, emit and subscriptions.
//! - [`proxy`]: the optional reverse proxy to Strapi and the `find`/`findOne` events of REST
//!   reads through it.
//! - [`pipeline`]: wires the stages; [`startup`]: loading at one snapshot, the replay filter;
//!   [`config`], [`cli`], [`check`], [`tail`], [`demo`]
//!   around them; [`cluster`]: throwaway PostgreSQL clusters for `demo` and the tests.

pub mod access;
pub mod check;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod delivery;
pub mod demo;
pub mod health;
pub mod io;
pub mod lsn;
pub mod metrics;
pub mod pg;
pub mod pgoutput;
pub mod pipeline;
pub mod proxy;
pub mod replication;
pub mod shutdown;
pub mod startup;
pub mod strapi;
pub mod tail;
