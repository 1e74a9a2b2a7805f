//! The integration tests, one binary. Each module talks to real PostgreSQL clusters started by
//! `support::pg`; nothing is mocked.

// A panic here is a failing test, not a crash on real input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Test infrastructure: TempCluster, TestDb, waiting with deadlines.
#[allow(dead_code)] // helpers serve every test module; not each one uses all of them
mod support;
// pg::connect: ordinary SQL sessions, TLS per sslmode, error messages.
mod connect;
// The replication client: decoding, ordering, login, TLS, slots, durability, reconnects.
mod replication;
// The Strapi model over the real stream: actions and REST payloads of replayed Strapi writes.
mod model;
// The whole bridge with real Socket.IO clients: handshakes, rooms, live access changes.
mod server;
// Custom events: pg_logical_emit_message through the stream, and the HTTP emit API.
mod custom;
// The binary: check, setup, config errors, and durability across kill -9.
mod cli;
// The real binary: `demo` end to end, and check/setup/run from a Strapi folder's .env.
mod first_run;
// Loading the access tables from a real PostgreSQL.
mod access;
// Access taken away at once: revoked, expiring and refreshed credentials; start-up and slot loss.
mod revocation;
// The reverse proxy to Strapi and the find/findOne events of reads through it.
mod proxy;
// Subscriptions: explicit mode, subscribe/unsubscribe acks, plugin 5.x names, revocation.
mod subscriptions;
// Strapi 5: recorded requests replayed, one event per document, REST-shaped payloads.
mod model5;
// Strapi 5 access: *_lnk tables, session JWTs, jwt_management modes.
mod access5;
// Per PostgreSQL version and service: check facts, a managed-style role, failover, standbys.
mod pgserver;
// Limits: SQL session timeouts, publication DDL off the event path, the emit API's filter,
// and that every tests/*.rs is compiled.
mod limits;
// Every client gets every event: offsets, catch-up after reconnects and restarts, slow clients.
mod delivery;
// What never leaves the bridge: private attributes, admin types, tail's secrets, forged messages.
mod privacy;
