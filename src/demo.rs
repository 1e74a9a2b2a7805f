//! `demo`: a throwaway PostgreSQL with a small Strapi-shaped database, the bridge on it, and a
//! writer that changes something every few seconds.

use std::process::ExitCode;

use crate::cli::Common;

/// Runs the demo until Ctrl-C.
#[allow(clippy::unused_async)]
pub async fn run(common: &Common, interval: f64, keep: bool) -> anyhow::Result<ExitCode> {
    let _ = (common, interval, keep);
    anyhow::bail!("demo is not available yet")
}
