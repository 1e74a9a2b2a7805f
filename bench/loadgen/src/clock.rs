//! One clock for every instant the benchmark records: microseconds since the process started
//! measuring, as `u32` (71 minutes), so writer and clients compare on the same monotonic clock.

use std::sync::OnceLock;
use std::time::Instant;

static BASE: OnceLock<Instant> = OnceLock::new();

/// Fixes the clock's origin (call once, early).
pub fn init() {
    let _ = BASE.get_or_init(Instant::now);
}

/// Microseconds since the origin.
pub fn now_us() -> u32 {
    let base = *BASE.get_or_init(Instant::now);
    base.elapsed().as_micros() as u32
}
