//! Shared test infrastructure: throwaway PostgreSQL clusters and deadline-bound waiting.

pub mod bridge;
pub mod client;
pub mod pg;
pub mod wait;

/// Sends the crate's logs to the test output when `RUST_LOG` is set (e.g.
/// `RUST_LOG=strapi_io_bridge=debug cargo test -- --nocapture name`).
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}
